"""The customer portal: a Stripe billing-portal session for the caller's one customer (the emulator
over HTTP, PostgreSQL with real commits so a Stripe call inside a transaction would be seen)."""

import pytest
from rest_framework.test import APIClient

from payments.models import StripeCustomer
from payments.tests.conftest import client_for, customer

PORTAL_URL = "/api/v1/billing/portal/"
RETURN_URL = "https://app.example.com/account"

pytestmark = pytest.mark.usefixtures("catalog")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_portal_opens_stripes_session_for_the_users_one_customer_created_once(stripe, settings):
    settings.BILLING_PORTAL_RETURN_URL = RETURN_URL
    user = customer("portal@example.com")
    client = client_for(user)

    first = client.post(PORTAL_URL)
    second = client.post(PORTAL_URL)

    assert first.status_code == 200, first.content
    assert second.status_code == 200, second.content
    sessions = stripe.objects_of("billing_portal.session")
    assert [first.json(), second.json()] == [{"url": session["url"], "provider": "stripe"} for session in sessions]
    (stripe_customer,) = StripeCustomer.objects.filter(user=user)
    assert [session["customer"] for session in sessions] == [stripe_customer.stripe_customer_id] * 2
    assert [session["return_url"] for session in sessions] == [RETURN_URL] * 2
    assert stripe.calls("POST") == [
        ("POST", "customers"),
        ("POST", "billing_portal/sessions"),
        ("POST", "billing_portal/sessions"),
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_portal_uses_the_customer_the_user_already_has(stripe):
    user = customer("returning@example.com")
    client = client_for(user)
    assert client.post(PORTAL_URL).status_code == 200
    stripe.state.requests.clear()

    response = client.post(PORTAL_URL)

    assert response.status_code == 200
    assert stripe.calls() == [("POST", "billing_portal/sessions")]
    (stripe_customer,) = StripeCustomer.objects.all()
    assert stripe.objects_of("billing_portal.session")[-1]["customer"] == stripe_customer.stripe_customer_id


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_portal_answers_503_and_writes_nothing_when_stripe_is_down(stripe):
    user = customer("down@example.com")
    stripe.inject("POST", "customers", "unavailable")

    response = client_for(user).post(PORTAL_URL)

    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "payment_provider_unavailable"
    assert response["Retry-After"]
    assert StripeCustomer.objects.count() == 0
    assert stripe.objects_of("customer") == []
    assert stripe.objects_of("billing_portal.session") == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_portal_answers_503_when_stripe_fails_the_session_keeping_only_the_customer_stripe_made(stripe):
    user = customer("halfway@example.com")
    stripe.inject("POST", "billing_portal/sessions", "unavailable")

    response = client_for(user).post(PORTAL_URL)

    assert response.status_code == 503
    assert response.json()["code"] == "payment_provider_unavailable"
    (made,) = stripe.objects_of("customer")
    assert list(StripeCustomer.objects.values_list("user_id", "stripe_customer_id")) == [(user.pk, made["id"])]
    retried = client_for(user).post(PORTAL_URL)
    assert retried.status_code == 200
    assert stripe.calls("POST", "customers") == [("POST", "customers")]


@pytest.mark.django_db
def test_the_portal_needs_a_signed_in_user():
    response = APIClient().post(PORTAL_URL)

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.django_db
def test_the_offline_provider_answers_a_local_page_saying_there_is_no_portal(settings):
    settings.STRIPE_SECRET_KEY = ""
    settings.PAYMENTS_PROVIDER = ""
    user = customer("offline@example.com")

    response = client_for(user).post(PORTAL_URL)

    assert response.status_code == 200
    body = response.json()
    assert body == {"url": "http://testserver/api/v1/billing/portal/offline/", "provider": "offline"}
    page = APIClient().get(body["url"])
    assert page.status_code == 200
    assert "no customer portal" in page.json()["detail"]
    assert StripeCustomer.objects.count() == 0
