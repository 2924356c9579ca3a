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
