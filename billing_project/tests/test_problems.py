import pytest

pytestmark = pytest.mark.django_db

PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "code"}


def assert_problem(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body.keys() >= PROBLEM_FIELDS
    assert body["status"] == status
    assert body["instance"] == response.wsgi_request.path
    if code is not None:
        assert body["code"] == code
    return body


def test_validation_error_is_400_with_errors_per_field(api_client):
    response = api_client.post("/api/v1/auth/register/", {"email": "not-an-email"}, format="json")

    body = assert_problem(response, 400, "validation_error")
    assert set(body["errors"]) == {"email", "password"}


def test_malformed_json_is_400(api_client):
    response = api_client.post("/api/v1/auth/token/", "{not json", content_type="application/json")

    assert_problem(response, 400, "parse_error")


def test_no_credentials_is_401(api_client):
    assert_problem(api_client.get("/api/v1/me/"), 401, "not_authenticated")


def test_not_staff_is_403(user_client):
    assert_problem(user_client.get("/api/v1/admin/audit-logs/"), 403, "permission_denied")


def test_unknown_api_path_is_404(api_client):
    assert_problem(api_client.get("/api/v1/no-such-thing/"), 404, "not_found")


def test_unknown_object_is_404(staff_client):
    assert_problem(staff_client.get("/api/v1/admin/users/999999/"), 404, "user_not_found")


def test_wrong_method_is_405(user_client):
    assert_problem(user_client.delete("/api/v1/me/"), 405, "method_not_allowed")


def test_business_rule_is_422_and_writes_nothing(api_client, django_user_model):
    # given no catalog: the free tier a new account starts on does not exist
    response = api_client.post(
        "/api/v1/auth/register/", {"email": "new@example.com", "password": "a long enough passphrase"}, format="json"
    )

    assert_problem(response, 422, "tier_not_available")
    assert not django_user_model.objects.exists()


@pytest.mark.urls("billing_project.tests.urls")
def test_unexpected_exception_is_a_500_problem_without_internals(user_client, caplog):
    response = user_client.get("/api/v1/probe/crash/")

    body = assert_problem(response, 500, "internal_error")
    assert "secret internals" not in response.content.decode()
    assert body["detail"] == "An unexpected error occurred."
    assert "secret internals" in caplog.text  # logged for the operators
