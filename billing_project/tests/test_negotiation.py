"""Content negotiation: the usual Accept headers are answered straight away, every other one as DRF
answers it."""

import pytest

pytestmark = pytest.mark.django_db

ME_CREDITS = "/api/v1/me/credits/"


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_the_usual_accept_headers_get_json(user_client, accept):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}

    response = user_client.get(ME_CREDITS, **headers)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "balance" in response.json()


def test_json_with_parameters_is_negotiated_as_drf_does(user_client):
    response = user_client.get(ME_CREDITS, HTTP_ACCEPT="application/json; indent=4")

    assert response.status_code == 200
    assert response.content.startswith(b"{\n    ")  # DRF's JSONRenderer reads the indent


def test_an_accept_header_the_api_cannot_answer_is_a_406_problem(user_client):
    response = user_client.get(ME_CREDITS, HTTP_ACCEPT="text/html")

    assert response.status_code == 406
    assert response.json()["code"] == "not_acceptable"


@pytest.mark.parametrize(("query", "status"), [("format=json", 200), ("format=xml", 404)])
def test_a_format_override_is_negotiated_as_drf_does(user_client, query, status):
    assert user_client.get(f"{ME_CREDITS}?{query}", HTTP_ACCEPT="*/*").status_code == status
