"""How the OpenAPI schema describes our bearer-token kinds, our operations and our problem+json errors."""

import inspect
import re
from http import HTTPStatus

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken

from billing_project import api_docs, errors
from billing_project.errors import PROBLEM_CONTENT_TYPE, problem_body
from billing_project.problem_codes import Problem, problems_of_any_request, problems_reached


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
    """An error, as RFC 7807 problem details: match on `code`; `detail` is for people."""

    # As billing_project.errors.problem_exception_handler writes them.

    type = serializers.CharField(help_text="`urn:problem:<code>`.")
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField(help_text="What went wrong, in words for people; do not parse it.")
    instance = serializers.CharField(help_text="The request's path.")
    code = serializers.CharField(
        help_text="Stable error code to match on: one of `ErrorCode` (the list of every code this API answers)."
    )
    errors = serializers.DictField(required=False, help_text="Per-field messages of a validation error.")
    retry_after = serializers.IntegerField(required=False, help_text="Seconds to wait before retrying.")

    class Meta:
        ref_name = "Problem"


class ProblemAutoSchema(AutoSchema):
    """Every operation's words, tag, `Idempotency-Key` header, success examples and problem responses.

    The words, tags and examples come from billing_project.api_docs (never from docstrings, which are
    written for the code's readers). The problems come from the code (billing_project.problem_codes):
    those the operation's view reaches, and those the shared machinery answers for an operation of
    its kind (validation, credentials, idempotency keys, throttles, the database)."""

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        docs = api_docs.OPERATIONS.get(operation["operationId"])
        operation.pop("summary", None)
        operation.pop("description", None)
        if docs:
            operation["summary"] = docs.summary
            operation["description"] = docs.description
        tag = api_docs.tag_of(path)
        if tag:
            operation["tags"] = [tag]
        else:
            operation.pop("tags", None)
        public = not any(requirement for requirement in operation.get("security", [{}]))
        if self.method == "POST":
            operation.setdefault("parameters", []).append(self._idempotency_header(public))
        for status_code, example in api_docs.SUCCESS_EXAMPLES.get(operation["operationId"], {}).items():
            content = operation["responses"][str(status_code)]["content"]["application/json"]
            content["examples"] = {"success": {"summary": "Success", "value": example}}
        for status_code, example in api_docs.REQUEST_EXAMPLES.get(operation["operationId"], {}).items():
            content = operation["requestBody"]["content"]["application/json"]
            content.setdefault("examples", {})[status_code] = {"summary": status_code, "value": example}
        for status_code, problems in sorted(self._problems(operation, public).items()):
            operation["responses"][str(status_code)] = self._problem_response(operation, status_code, problems)
        return operation

    def _idempotency_header(self, public: bool) -> dict:
        if getattr(self.view, "calls_payment_provider", False):
            how = api_docs.IDEMPOTENCY_PAYMENT
        elif public:
            how = api_docs.IDEMPOTENCY_PUBLIC
        else:
            how = api_docs.IDEMPOTENCY_HONOURED
        return {
            "in": "header",
            "name": "Idempotency-Key",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            "description": how,
        }

    def _problems(self, operation: dict, public: bool) -> dict[int, list[Problem]]:
        from billing_project import idempotency

        writes = self.method in ("POST", "PUT", "PATCH", "DELETE")
        query = {parameter["name"] for parameter in operation.get("parameters", []) if parameter["in"] == "query"}
        machinery = {
            problem.code: problem
            for problem in problems_reached(idempotency.IdempotencyMiddleware, errors.problem_exception_handler)
        }
        # A view that judges the items of a list one by one answers their problems in its 200 body.
        found = set() if getattr(self.view, "items_judged_by_view", None) else set(self._problems_of_view())
        wanted = ["database_unavailable"]
        if "requestBody" in operation or query:
            found.add(GENERIC["validation_error"])
            wanted.append("invalid_value")
        if "requestBody" in operation:
            found.add(GENERIC["parse_error"])
        if self.method == "POST":
            # A public POST honours the key too when the request carries a valid token (its caller).
            wanted += ["idempotency_key_invalid", "idempotency_key_reused"]
            if getattr(self.view, "calls_payment_provider", False):
                wanted.append("idempotency_key_in_use")
        if not public:
            found |= {GENERIC["not_authenticated"], GENERIC["permission_denied"]}
            if any(issubclass(cls, JWTAuthentication) for cls in self.view.authentication_classes):
                found.add(GENERIC[InvalidToken.default_code])
        if "{" in self.path or query & {"page", "cursor"}:
            found.add(GENERIC["not_found"])
        if writes:
            wanted.append("transaction_conflict")
        if self.view.get_throttles():
            found.add(GENERIC["throttled"])
        found |= {machinery[code] for code in wanted}
        by_status: dict[int, list[Problem]] = {}
        for problem in sorted(found, key=lambda problem: problem.code):
            if problem.code != "internal_error":  # an unexpected error is no answer to document
                by_status.setdefault(problem.status, []).append(problem)
        return by_status

    def _problems_of_view(self) -> set[Problem]:
        view_class = type(self.view)
        name = getattr(self.view, "action", None) or self.method.lower()
        handler = getattr(view_class, name, None)
        if name == "partial_update" and "partial_update" not in vars(view_class):
            handler = getattr(view_class, "update", handler)
        handlers = HANDLER_NAMES | {
            attribute for attribute, value in vars(view_class).items() if hasattr(value, "mapping")
        }
        helpers = [
            value
            for klass in view_class.__mro__
            for attribute, value in vars(klass).items()
            if attribute not in handlers and inspect.isfunction(value)
        ]
        collaborators = [
            *self.view.authentication_classes,
            *self.view.permission_classes,
            getattr(self.view, "serializer_class", None),
        ]
        return problems_reached(handler, *helpers, *[c for c in collaborators if c], owner=view_class)

    def _problem_response(self, operation: dict, status_code: int, problems: list[Problem]) -> dict:
        response = self._get_response_for_code(ProblemSerializer, str(status_code), media_types=[PROBLEM_CONTENT_TYPE])
        instance = re.sub(r"{[^}]+}", "1", self.path)
        lines = []
        examples = {}
        for problem in problems:
            more = f" (with {', '.join(f'`{member}`' for member in problem.members)})" if problem.members else ""
            lines.append(f"- `{problem.code}`{more}: {problem.detail}")
            value = problem_body(
                status_code=status_code,
                code=problem.code,
                title=problem.title or errors.DRF_TITLES.get(status_code, "Error"),
                detail=problem.detail,
                instance=instance,
                **dict(problem.extra),
            )
            value.update(
                api_docs.PROBLEM_EXAMPLES.get((operation["operationId"], problem.code))
                or api_docs.PROBLEM_EXAMPLES.get(problem.code)
                or {}
            )
            examples[problem.code] = {"summary": problem.code, "value": value}
        response["description"] = f"{HTTPStatus(status_code).phrase}. `code` is one of:\n\n" + "\n".join(lines)
        response["content"][PROBLEM_CONTENT_TYPE]["examples"] = examples
        return response


HANDLER_NAMES = {
    "get",
    "post",
    "put",
    "patch",
    "delete",
    "list",
    "create",
    "retrieve",
    "update",
    "partial_update",
    "destroy",
}

# What the shared machinery answers, in DRF's words.
GENERIC = {
    problem.code: problem
    for problem in (
        Problem(400, "validation_error", "Bad request", "The request has invalid fields.", ("errors",)),
        Problem(400, "parse_error", "Bad request", "JSON parse error - Expecting value: line 1 column 1 (char 0)"),
        Problem(401, "not_authenticated", "Authentication required", "Authentication credentials were not provided."),
        Problem(403, "permission_denied", "Forbidden", "You do not have permission to perform this action."),
        Problem(404, "not_found", "Not found", "Not found."),
        Problem(401, InvalidToken.default_code, "Authentication required", "Token is invalid or expired"),
        Problem(429, "throttled", "Too many requests", "Request was throttled.", ("retry_after",)),
    )
}


def add_error_codes(result, generator, request, public):
    """drf-spectacular postprocessing hook: the `ErrorCode` component, every code of the API with its
    statuses and meaning: those of every operation's problem responses (derived from the code), and
    those any request may get."""
    statuses: dict[str, set[int]] = {}
    details: dict[str, str] = {}
    for methods in result["paths"].values():
        for operation in methods.values():
            for status_code, response in operation["responses"].items():
                examples = response.get("content", {}).get(PROBLEM_CONTENT_TYPE, {}).get("examples", {})
                for code, example in examples.items():
                    statuses.setdefault(code, set()).add(int(status_code))
                    details.setdefault(code, example["value"]["detail"])
    for problem in problems_of_any_request():
        statuses.setdefault(problem.code, set()).add(problem.status)
        details.setdefault(problem.code, problem.detail)
    lines = [
        f"- `{code}` ({', '.join(str(status) for status in sorted(statuses[code]))}): {details[code]}"
        for code in sorted(statuses)
    ]
    result["components"]["schemas"]["ErrorCode"] = {
        "type": "string",
        "enum": sorted(statuses),
        "description": "Every `code` a problem of this API can carry, with its statuses:\n\n" + "\n".join(lines),
    }
    result["tags"] = [{"name": name, "description": description} for name, description in api_docs.TAGS.items()]
    return result


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
