"""How the OpenAPI schema describes our two bearer-token kinds."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


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
