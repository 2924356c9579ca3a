"""How the OpenAPI schema describes our two bearer-token kinds and our problem+json errors."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

from billing_project.errors import PROBLEM_CONTENT_TYPE


class _BearerTokenScheme(OpenApiAuthenticationExtension):
    description = ""

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": self.description}


class UserTokenScheme(_BearerTokenScheme):
    target_class = "billing_project.auth.UserTokenAuthentication"
    name = "userToken"
    description = "Access token from POST /api/v1/auth/token/."


class ServiceTokenScheme(_BearerTokenScheme):
    target_class = "billing_project.auth.ServiceTokenAuthentication"
    name = "serviceToken"
    description = "Service token from `manage.py issue_service_token`."


class ActiveUserTokenScheme(OpenApiAuthenticationExtension):
    """ActiveUserTokenAuthentication takes the same token as UserTokenAuthentication (it only skips a
    user query): it refers to the userToken scheme and defines none of its own."""

    target_class = "billing_project.auth.ActiveUserTokenAuthentication"
    name = []

    def get_security_requirement(self, auto_schema):
        return {UserTokenScheme.name: []}

    def get_security_definition(self, auto_schema):
        return []


class ProblemSerializer(serializers.Serializer):
    """RFC 7807 problem details, as billing_project.errors.problem_exception_handler writes them."""

    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    instance = serializers.CharField()
    code = serializers.CharField(help_text="Stable error code; for a 422 coupon refusal, the reason code.")
    errors = serializers.DictField(required=False, help_text="Per-field messages of a validation error.")
    retry_after = serializers.IntegerField(required=False, help_text="Seconds to wait after a 429.")


class ProblemAutoSchema(AutoSchema):
    """Documents, for every operation, the problem+json errors the shared machinery can answer, so a
    view declares only its successes (and errors peculiar to it):

    - 400 when there is a body or query to validate;
    - 401 and 403 when the operation needs credentials;
    - 404 when the path has a parameter, for a page past the last or an invalid cursor (DRF's
      paginators), and on writes (a body refers to users, holds, coupons ... by id);
    - 409 and 422 on writes (business rules; an `Idempotency-Key` reused with another body is a 422);
    - 429 when the view is throttled.
    """

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction=direction)
        if direction != "response":
            return responses
        codes = []
        writes = self.method in ("POST", "PUT", "PATCH", "DELETE")
        query = {parameter["name"] for parameter in self._get_parameters() if parameter.get("in") == "query"}
        if writes or query:
            codes.append(400)
        if any(requirement for requirement in self.get_auth()):
            codes += [401, 403]
        if "{" in self.path or writes or query & {"page", "cursor"}:
            codes.append(404)
        if writes:
            codes += [409, 422]
        if self.view.get_throttles():
            codes.append(429)
        for code in codes:
            responses.setdefault(
                str(code), self._get_response_for_code(ProblemSerializer, str(code), media_types=[PROBLEM_CONTENT_TYPE])
            )
        return responses


def problem_responses(*codes: int) -> dict:
    """`extend_schema(responses=...)` entries for errors peculiar to one view, e.g. `**problem_responses(402)`."""
    return {(code, PROBLEM_CONTENT_TYPE): ProblemSerializer for code in codes}


def _by_id(*operations: str, parameter: str = "id", value: str = "$response.body#/id") -> dict:
    """Links to `operations`, their path `parameter` taken from the response."""
    return {
        operation: {"operationId": operation, "parameters": {f"path.{parameter}": value}} for operation in operations
    }


def _with_body(*operations: str, **fields: str) -> dict:
    """Links to `operations`, the body `fields` taken from the response."""
    return {operation: {"operationId": operation, "requestBody": fields} for operation in operations}


# What a client can do next with what an operation answered: OpenAPI links, for readers of the
# contract and for the fuzzer's stateful runs (billing_project/tests/test_fuzz.py), which follow them
# to call operations on objects that exist. (source operation, status) -> {target operation: link}.
OPERATION_LINKS = {
    ("v1_auth_token_create", "200"): _with_body("v1_auth_token_refresh_create", refresh="$response.body#/refresh"),
    ("v1_auth_token_refresh_create", "200"): _with_body(
        "v1_auth_token_refresh_create", refresh="$response.body#/refresh"
    ),
    ("v1_auth_register_create", "201"): _by_id(
        "v1_admin_users_retrieve", "v1_admin_users_destroy", parameter="user_id"
    ),
    ("v1_subscriptions_create", "201"): _by_id(
        "v1_subscriptions_change_tier_preview_create",
        "v1_subscriptions_change_tier_create",
        "v1_subscriptions_cancel_create",
        parameter="subscription_id",
        value="$response.body#/subscription/id",
    ),
    ("v1_licenses_purchase_create", "201"): {
        **_with_body(
            "v1_licenses_activate_create",
            "v1_licenses_validate_create",
            "v1_licenses_deactivate_create",
            "v1_licenses_upgrade_create",
            license_key="$response.body#/license/license_key",
        ),
        **_by_id(
            "v1_licenses_eligibility_retrieve",
            parameter="license_key",
            value="$response.body#/license/license_key",
        ),
    },
    ("v1_usage_reserve_create", "201"): _with_body(
        "v1_usage_release_create", "v1_usage_record_create", hold_id="$response.body#/hold_id"
    ),
    ("v1_admin_coupons_create", "201"): {
        **_by_id(
            "v1_admin_coupons_retrieve",
            "v1_admin_coupons_partial_update",
            "v1_admin_coupons_destroy",
            "v1_admin_coupons_activate_create",
            "v1_admin_coupons_deactivate_create",
            "v1_admin_coupons_redemptions_list",
        ),
        **_with_body("v1_coupons_validate_create", "v1_coupons_redeem_create", code="$response.body#/code"),
    },
    ("v1_admin_campaigns_create", "201"): _by_id(
        "v1_admin_campaigns_retrieve",
        "v1_admin_campaigns_partial_update",
        "v1_admin_campaigns_destroy",
        "v1_admin_campaigns_coupons_list",
        "v1_admin_campaigns_coupons_create",
        "v1_admin_campaigns_generate_coupons_create",
    ),
    ("v1_admin_licenses_create", "201"): _by_id(
        "v1_admin_licenses_retrieve",
        "v1_admin_licenses_suspend_create",
        "v1_admin_licenses_reactivate_create",
        "v1_admin_licenses_revoke_create",
    ),
    ("v1_admin_providers_create", "201"): _by_id("v1_admin_providers_retrieve", "v1_admin_providers_partial_update"),
    ("v1_admin_model_pricing_create", "201"): _by_id("v1_admin_model_pricing_retrieve"),
    ("v1_admin_pricing_configs_create", "201"): _by_id(
        "v1_admin_pricing_configs_retrieve",
        "v1_admin_pricing_configs_approve_create",
        "v1_admin_pricing_configs_reject_create",
        "v1_admin_pricing_configs_simulate_create",
    ),
}


def add_operation_links(result, generator, request, public):
    """drf-spectacular postprocessing hook: OPERATION_LINKS into the responses they start from."""
    operations = {
        operation["operationId"]: operation for path in result["paths"].values() for operation in path.values()
    }
    for (source, status), links in OPERATION_LINKS.items():
        operations[source]["responses"][status]["links"] = {
            "".join(word.capitalize() for word in target.removeprefix("v1_").split("_")): link
            for target, link in links.items()
        }
    return result
