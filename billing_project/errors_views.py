"""Django-level 400/404/500 handlers: problem+json under /api/, Django's pages elsewhere."""

from django.views import defaults

from billing_project.codes import ErrorCode
from billing_project.errors import problem_response


def bad_request(request, exception):
    """A request Django refused before any view (SuspiciousOperation: a disallowed host, too many fields)."""
    if request.path.startswith("/api/"):
        return problem_response(
            request, status_code=400, code=ErrorCode.BAD_REQUEST, title="Bad request", detail="The request was refused."
        )
    return defaults.bad_request(request, exception)


def api_not_found(request, exception):
    if request.path.startswith("/api/"):
        return problem_response(
            request, status_code=404, code=ErrorCode.NOT_FOUND, title="Not found", detail="No such resource."
        )
    return defaults.page_not_found(request, exception)


def server_error(request):
    if request.path.startswith("/api/"):
        return problem_response(
            request,
            status_code=500,
            code=ErrorCode.INTERNAL_ERROR,
            title="Internal server error",
            detail="An unexpected error occurred.",
        )
    return defaults.server_error(request)
