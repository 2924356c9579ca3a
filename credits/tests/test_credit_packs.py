"""Credit packs: bought through the API with the offline provider and through Stripe Checkout on the
emulator (signed webhooks, objects of the pinned API version), granted once however often the
purchase or its events arrive, and taken back, as far as is left, when the payment is refunded."""

import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient

from audit.models import AdminAuditLog
from billing_project.models import Notification, OutboundEvent
from billing_project.service_tokens import service_token_issue
from conftest import bearer, run_concurrently
from credits.models import CreditAllocation, CreditDeductionLedger, CreditPack, UserCreditBalance, UserCreditSource
from credits.services import hold_reserve, pricing_catalog_seed
from credits.tests.conftest import usage_event
from payments.models import OperationKind, OperationState, Payment, PaymentEvent, PaymentOperation
from payments.tests import stripe_objects
from payments.tests.conftest import client_for, ledger_is_consistent
from payments.tests.stripe_emulator import event_payload, form_nested, signature_header
from payments.tests.webhook_flows import WEBHOOK_URL, charge_of, disputed, post_event, refunded

pytestmark = [pytest.mark.django_db]

PACKS = "/api/v1/credits/packs/"
PURCHASE = "/api/v1/credits/purchase/"


@pytest.fixture
def stripe(stripe_http):
    """The emulator, watching that no connection of ours sits inside a transaction while Stripe answers."""
    stripe_http.watch_transactions(connection.settings_dict["NAME"])
    yield stripe_http
    assert stripe_http.state.transaction_violations == [], "a Stripe call was made inside a transaction"


@pytest.fixture
def pack(db) -> CreditPack:
    return CreditPack.objects.create(name="Starter", credits=5_000, price=Decimal("5.00"), credit_expiry_days=30)


def balance_of(user) -> int:
    return UserCreditBalance.objects.get(user=user).amount


def purchase_grants(user) -> list[CreditAllocation]:
    return list(CreditAllocation.objects.filter(user=user, source="purchase"))


def spend(user, output_tokens: int) -> int:
    """Usage recorded by the gateway; returns the credits it cost."""
    pricing_catalog_seed()
    gateway = APIClient()
    gateway.credentials(**bearer(service_token_issue(service="gateway", scopes=["usage:write"]).token))
    response = gateway.post("/api/v1/usage/record/", usage_event(user, output_tokens=output_tokens), format="json")
    assert response.status_code == 201, response.content
    return response.json()["credits_deducted"]


def bought_on_stripe(stripe, client, user, pack) -> Payment:
    """The pack bought through Stripe Checkout: paid on the hosted page, its signed
    checkout.session.completed posted to the webhook endpoint."""
    started = client_for(user).post(PURCHASE, {"pack": str(pack.pk)}, format="json")
    assert started.status_code == 201, started.content
    operation = PaymentOperation.objects.get(pk=started.json()["operation_id"])
    session = stripe.checkout_complete(operation.stripe_checkout_session_id)
    assert post_event(client, "checkout.session.completed", session)["status"] == "processed"
    return Payment.objects.get(operation=operation)


def refund_of(payment: Payment, amount: int) -> dict:
    return stripe_objects.refund(
        charge=charge_of(payment), payment_intent=payment.stripe_payment_intent_id, amount=amount, currency="usd"
    )


def charge_with(payment: Payment, *refunds: dict) -> dict:
    """The payment's charge listing these refunds (Stripe's total is theirs)."""
    return stripe_objects.charge(
        charge_id=charge_of(payment),
        payment_intent=payment.stripe_payment_intent_id,
        amount=payment.amount,
        currency="usd",
        refunds=refunds,
    )


# The packs on sale


def test_packs_lists_the_active_packs_with_their_price_as_a_string(user_client, pack):
    CreditPack.objects.create(name="Retired", credits=100, price=Decimal("1.00"), is_active=False)
    never = CreditPack.objects.create(name="Big", credits=50_000, price=Decimal("40.00"))

    response = user_client.get(PACKS)

    assert response.status_code == 200
    assert response.json()["results"] == [
        {
            "id": str(pack.pk),
            "name": "Starter",
            "credits": 5000,
            "price": "5.00",
            "currency": "usd",
            "credit_expiry_days": 30,
        },
        {
            "id": str(never.pk),
            "name": "Big",
            "credits": 50000,
            "price": "40.00",
            "currency": "usd",
            "credit_expiry_days": None,
        },
    ]


def test_packs_needs_a_signed_in_user(api_client, pack):
    response = api_client.get(PACKS)

    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/problem+json")


# Buying with the offline provider (development)


def test_a_purchase_with_the_offline_provider_grants_the_pack_at_once(
    user_client, user, pack, django_capture_on_commit_callbacks, mailoutbox
):
    with django_capture_on_commit_callbacks(execute=True):
        response = user_client.post(PURCHASE, {"pack": str(pack.pk)}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    operation = PaymentOperation.objects.get(pk=body["operation_id"])
    assert body == {
        "operation_id": str(operation.pk),
        "status": "succeeded",
        "completed": True,
        "checkout_url": None,
        "amount": "5.00",
        "currency": "usd",
        "pack": {"id": str(pack.pk), "name": "Starter", "credits": 5000, "credit_expiry_days": 30},
    }
    assert (operation.kind, operation.provider, operation.amount) == ("credit_pack_checkout", "offline", 500)
    [allocation] = purchase_grants(user)
    assert (allocation.amount, allocation.payment_operation_id) == (5000, operation.pk)
    assert 29 <= (allocation.expires_at - operation.created_at).days <= 30
    assert "Starter" in allocation.reason
    assert balance_of(user) == 5000
    payment = Payment.objects.get(operation=operation)
    assert (payment.kind, payment.object_id, payment.amount) == ("credit_pack_checkout", str(allocation.pk), 500)
    notification = Notification.objects.get(user=user, kind="credits.purchase_succeeded")
    assert notification.context["credits"] == 5000
    assert OutboundEvent.objects.filter(type="credits.purchase_succeeded", user=user).count() == 1
    [mail] = mailoutbox
    assert mail.subject == "5000 credits added to your account"
    assert "Starter" in mail.body and "5.00 USD" in mail.body
    assert ledger_is_consistent()


def test_me_credits_shows_a_bought_grant_as_a_purchase(user_client, user, pack):
    user_client.post(PURCHASE, {"pack": str(pack.pk)}, format="json")

    grants = user_client.get("/api/v1/me/credits/").json()["grants"]

    assert [(grant["source"], grant["remaining"]) for grant in grants] == [("purchase", 5000)]


def test_a_purchase_replayed_with_the_same_idempotency_key_grants_once(user_client, user, pack):
    first = user_client.post(PURCHASE, {"pack": str(pack.pk)}, format="json", HTTP_IDEMPOTENCY_KEY="buy-1")
    again = user_client.post(PURCHASE, {"pack": str(pack.pk)}, format="json", HTTP_IDEMPOTENCY_KEY="buy-1")

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert len(purchase_grants(user)) == 1
    assert balance_of(user) == 5000
    assert PaymentOperation.objects.filter(kind=OperationKind.CREDIT_PACK_CHECKOUT).count() == 1


def test_two_purchases_of_a_pack_grant_it_twice(user_client, user, pack):
    for _ in range(2):
        assert user_client.post(PURCHASE, {"pack": str(pack.pk)}, format="json").status_code == 201

    assert len(purchase_grants(user)) == 2
    assert balance_of(user) == 10_000
    assert Notification.objects.filter(user=user, kind="credits.purchase_succeeded").count() == 2


@pytest.mark.parametrize("which", ["retired", "unknown"])
def test_buying_a_pack_not_on_sale_is_a_404_problem_and_changes_nothing(user_client, user, pack, which):
    if which == "retired":
        CreditPack.objects.filter(pk=pack.pk).update(is_active=False)
    pack_id = str(pack.pk) if which == "retired" else str(uuid.uuid4())

    response = user_client.post(PURCHASE, {"pack": pack_id}, format="json")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/problem+json")
    assert (response.json()["code"], response.json()["status"]) == ("unknown_pack", 404)
    assert not PaymentOperation.objects.exists()
    assert not purchase_grants(user)


@pytest.mark.parametrize("body", [{}, {"pack": "not-a-uuid"}, {"pack": None}])
def test_a_purchase_without_a_valid_pack_id_is_a_400_problem(user_client, body):
    response = user_client.post(PURCHASE, body, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert "pack" in response.json()["errors"]
    assert not PaymentOperation.objects.exists()


def test_a_purchase_needs_a_signed_in_user(api_client, pack):
    assert api_client.post(PURCHASE, {"pack": str(pack.pk)}, format="json").status_code == 401


# Buying through Stripe Checkout


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_purchase_through_stripe_grants_the_pack_once_when_the_checkout_is_paid(stripe, api_client, user, pack):
    started = client_for(user).post(PURCHASE, {"pack": str(pack.pk)}, format="json")

    assert started.status_code == 201, started.content
    body = started.json()
    operation = PaymentOperation.objects.get(pk=body["operation_id"])
    assert (body["status"], body["completed"]) == ("submitted", False)
    assert body["checkout_url"] == stripe.object(operation.stripe_checkout_session_id)["url"]
    [created] = [
        form_nested(request["form"])
        for request in stripe.requests
        if (request["method"], request["path"]) == ("POST", "checkout/sessions")
    ]
    assert created["mode"] == "payment"
    assert created["metadata"] == {
        "pack_id": str(pack.pk),
        "pack_name": "Starter",
        "credits": "5000",
        "credit_expiry_days": "30",
        "kind": "credit_pack",
        "operation_id": str(operation.pk),
    }
    assert created["line_items"][0]["price_data"]["unit_amount"] == "500"
    assert not purchase_grants(user)

    session = stripe.checkout_complete(operation.stripe_checkout_session_id)
    first = post_event(api_client, "checkout.session.completed", session)
    second = post_event(api_client, "checkout.session.completed", session)  # Stripe sends an event again

    assert (first["status"], second["status"]) == ("processed", "processed")
    [allocation] = purchase_grants(user)
    assert (allocation.amount, allocation.payment_operation_id) == (5000, operation.pk)
    assert balance_of(user) == 5000
    operation.refresh_from_db()
    assert operation.state == OperationState.SUCCEEDED
    assert Payment.objects.get(operation=operation).stripe_payment_intent_id == session["payment_intent"]
    assert Notification.objects.filter(user=user, kind="credits.purchase_succeeded").count() == 1
    assert ledger_is_consistent()


def test_the_same_signed_webhook_delivered_twice_grants_once(stripe_http, api_client, user, pack):
    started = client_for(user).post(PURCHASE, {"pack": str(pack.pk)}, format="json")
    operation = PaymentOperation.objects.get(pk=started.json()["operation_id"])
    session = stripe_http.checkout_complete(operation.stripe_checkout_session_id)
    payload = event_payload("checkout.session.completed", session, event_id="evt_pack_paid")

    answers = [
        api_client.post(
            WEBHOOK_URL, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature_header(payload)
        )
        for _ in range(2)
    ]

    assert [answer.status_code for answer in answers] == [200, 200]
    assert [answer.json()["replayed"] for answer in answers] == [False, True]
    assert len(purchase_grants(user)) == 1
    assert balance_of(user) == 5000


def test_a_purchase_started_again_while_unpaid_returns_the_same_checkout(stripe_http, user, pack):
    client = client_for(user)

    first = client.post(PURCHASE, {"pack": str(pack.pk)}, format="json").json()
    second = client.post(PURCHASE, {"pack": str(pack.pk)}, format="json").json()

    assert second == first
    assert len(stripe_http.calls("POST", "checkout/sessions")) == 1


def test_a_pack_changed_after_the_checkout_opened_grants_what_was_sold(stripe_http, api_client, user, pack):
    started = client_for(user).post(PURCHASE, {"pack": str(pack.pk)}, format="json")
    operation = PaymentOperation.objects.get(pk=started.json()["operation_id"])
    CreditPack.objects.filter(pk=pack.pk).update(credits=9_000, credit_expiry_days=None, is_active=False)

    session = stripe_http.checkout_complete(operation.stripe_checkout_session_id)
    post_event(api_client, "checkout.session.completed", session)

    [allocation] = purchase_grants(user)
    assert allocation.amount == 5000
    assert allocation.expires_at is not None


def test_an_expired_checkout_grants_nothing_and_tells_the_buyer_once(stripe_http, api_client, user, pack):
    started = client_for(user).post(PURCHASE, {"pack": str(pack.pk)}, format="json")
    operation = PaymentOperation.objects.get(pk=started.json()["operation_id"])
    session = stripe_http.object(operation.stripe_checkout_session_id)
    session.update(status="expired")

    for _ in range(2):
        assert post_event(api_client, "checkout.session.expired", session)["status"] == "processed"

    operation.refresh_from_db()
    assert operation.effect == "failed"
    assert not purchase_grants(user)
    assert not UserCreditBalance.objects.filter(user=user, amount__gt=0).exists()
    assert Notification.objects.filter(user=user, kind="credits.purchase_failed").count() == 1
    assert not Notification.objects.filter(kind="credits.purchase_succeeded").exists()


# Refunds and disputes of a pack's payment


def test_a_full_refund_takes_back_what_is_left_and_spent_credits_stay_spent(stripe_http, api_client, user, pack):
    payment = bought_on_stripe(stripe_http, api_client, user, pack)
    spent = spend(user, output_tokens=2000)

    result = post_event(api_client, "charge.refunded", refunded(payment, 500))

    assert result["result"]["effect"]["clawed_back"] == 0  # the refund's share was taken first
    assert balance_of(user) == 0
    [clawback] = CreditDeductionLedger.objects.filter(user=user, reason="admin_adjustment")
    assert (clawback.amount, clawback.balance_after) == (5000 - spent, 0)
    grant = UserCreditSource.objects.get(user=user, source="purchase")
    assert grant.remaining == 0
    assert ledger_is_consistent()


def test_a_refund_leaves_credits_held_for_a_request_in_flight(stripe_http, api_client, user, pack):
    payment = bought_on_stripe(stripe_http, api_client, user, pack)
    hold_reserve(user_id=user.pk, estimated_credits=300)

    post_event(api_client, "charge.refunded", refunded(payment, 500))

    assert balance_of(user) == 300
    assert UserCreditSource.objects.get(user=user, source="purchase").remaining == 300
    assert ledger_is_consistent()


def test_a_partial_refund_takes_back_the_refunded_share_once_per_refunded_amount(stripe_http, api_client, user):
    odd = CreditPack.objects.create(name="Odd", credits=5_000, price=Decimal("3.00"))
    payment = bought_on_stripe(stripe_http, api_client, user, odd)
    spent = spend(user, output_tokens=2000)

    first_refund = refund_of(payment, 100)
    post_event(api_client, "charge.refunded", charge_with(payment, first_refund))
    after_first = balance_of(user)
    post_event(api_client, "charge.refunded", charge_with(payment, first_refund))  # told again: the same total
    after_replay = balance_of(user)
    second_refund = refund_of(payment, 50)
    post_event(api_client, "charge.refunded", charge_with(payment, first_refund, second_refund))

    # ceil(5000 * 100 / 300) = 1667 (rounded up), then 5000 * 150 / 300 = 2500 in all
    assert after_first == after_replay == 5000 - spent - 1667
    assert balance_of(user) == 5000 - spent - 2500
    clawbacks = CreditDeductionLedger.objects.filter(user=user, reason="admin_adjustment").order_by("created_at")
    assert [row.amount for row in clawbacks] == [1667, 833]
    payment.refresh_from_db()
    assert (payment.status, payment.amount_refunded) == ("partially_refunded", 150)

    rest = refund_of(payment, 150)
    post_event(api_client, "charge.refunded", charge_with(payment, first_refund, second_refund, rest))

    assert balance_of(user) == 0
    assert sum(row.amount for row in clawbacks.all()) == 5000 - spent
    assert ledger_is_consistent()


def test_a_partial_refund_never_takes_more_than_is_left(stripe_http, api_client, user, pack):
    payment = bought_on_stripe(stripe_http, api_client, user, pack)
    spend(user, output_tokens=140_000)  # most of it
    left = balance_of(user)

    post_event(api_client, "charge.refunded", refunded(payment, 450))

    assert balance_of(user) == 0
    assert CreditDeductionLedger.objects.get(user=user, reason="admin_adjustment").amount == left
    assert ledger_is_consistent()


def test_an_open_dispute_takes_nothing_and_a_lost_one_takes_what_is_left(stripe_http, api_client, user, pack):
    payment = bought_on_stripe(stripe_http, api_client, user, pack)

    opened = post_event(api_client, "charge.dispute.created", disputed(payment, "needs_response"))

    assert opened["result"]["effect"]["held"] is False
    assert balance_of(user) == 5000

    lost = post_event(api_client, "charge.dispute.closed", disputed(payment, "lost"))

    assert lost["result"]["effect"]["clawed_back"] == 5000
    assert balance_of(user) == 0
    assert ledger_is_consistent()


def test_a_won_dispute_leaves_the_credits(stripe_http, api_client, user, pack):
    payment = bought_on_stripe(stripe_http, api_client, user, pack)
    post_event(api_client, "charge.dispute.created", disputed(payment, "needs_response"))

    post_event(api_client, "charge.dispute.closed", disputed(payment, "won"))

    assert balance_of(user) == 5000
    assert not CreditDeductionLedger.objects.filter(user=user, reason="admin_adjustment").exists()


# Concurrency


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_events_about_one_paid_checkout_grant_its_credits_once(stripe_http, user, pack):
    started = client_for(user).post(PURCHASE, {"pack": str(pack.pk)}, format="json")
    operation = PaymentOperation.objects.get(pk=started.json()["operation_id"])
    session = stripe_http.checkout_complete(operation.stripe_checkout_session_id)

    # Each a different event (completed, then async_payment_succeeded, retried...): the inbox cannot
    # deduplicate them by id; the operation's lock and the grant's uniqueness do.
    answers = run_concurrently(lambda _: post_event(APIClient(), "checkout.session.completed", session), range(6))

    assert all(isinstance(answer, dict) and answer["status"] == "processed" for answer in answers), answers
    assert len(purchase_grants(user)) == 1
    assert balance_of(user) == 5000
    assert Notification.objects.filter(user=user, kind="credits.purchase_succeeded").count() == 1
    assert ledger_is_consistent()


# Refunds staff issue


def staff_refund(staff_client, payment: Payment, amount: str | None, **headers):
    body = {"reason": "Goodwill", **({"amount_usd": amount} if amount else {})}
    return staff_client.post(f"/api/v1/admin/payments/{payment.pk}/refund/", body, format="json", **headers)


def test_staff_refund_an_offline_pack_purchase_in_full_and_what_is_left_is_taken_back(
    roles_synced, staff_client, user_client, user, pack
):
    user_client.post(PURCHASE, {"pack": str(pack.pk)}, format="json")
    payment = Payment.objects.get(kind="credit_pack_checkout")
    spent = spend(user, output_tokens=2000)

    response = staff_refund(staff_client, payment, None)

    assert response.status_code == 200, response.content
    assert response.json()["state"] == "succeeded"
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.status) == (500, "refunded")
    assert balance_of(user) == 0
    [clawback] = CreditDeductionLedger.objects.filter(user=user, reason="admin_adjustment")
    assert clawback.amount == 5000 - spent
    operation = PaymentOperation.objects.get(kind=OperationKind.REFUND)
    assert (operation.subject_type, operation.subject_id) == ("payments.payment", str(payment.pk))
    assert AdminAuditLog.objects.filter(resource_id=str(operation.pk), action="create").count() == 1
    assert PaymentEvent.objects.filter(event_type="refund_issued").count() == 1
    assert ledger_is_consistent()
    again = staff_refund(staff_client, payment, None)
    assert (again.status_code, again.json()["code"]) == (409, "payment_not_refundable")


@pytest.mark.django_db(transaction=True)
def test_staff_refund_part_of_a_stripe_pack_purchase_once_through_a_failure_at_stripe(
    roles_synced, stripe, api_client, staff_client, user, pack
):
    payment = bought_on_stripe(stripe, api_client, user, pack)
    stripe.inject("POST", "refunds", "unavailable")
    key = {"HTTP_IDEMPOTENCY_KEY": "pack-refund-1"}

    first = staff_refund(staff_client, payment, "2.00", **key)
    again = staff_refund(staff_client, payment, "2.00", **key)

    assert first.status_code == 503, first.content
    assert (again.status_code, again.json()["state"]) == (200, "succeeded")
    (refund,) = stripe.objects_of("refund")
    assert (refund["amount"], refund["payment_intent"]) == (200, payment.stripe_payment_intent_id)
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.status) == (200, "partially_refunded")
    assert balance_of(user) == 5000 - 2000  # ceil(5,000 credits x 2.00 / 5.00)
    # Stripe's own event about the same refund moves nothing again.
    post_event(api_client, "charge.refunded", charge_with(payment, refund))
    assert balance_of(user) == 3000
    assert ledger_is_consistent()


def console_refund(admin_client, payment: Payment, **fields):
    """The console's "Refund the selected payments" on the payments page, applied to one payment."""
    return admin_client.post(
        reverse("admin:payments_payment_changelist"),
        {
            "action": "refund_payments",
            "_selected_action": [str(payment.pk)],
            "apply": "1",
            "reason": "Goodwill",
            **fields,
        },
        follow=True,
    )


def test_staff_refund_part_of_a_pack_purchase_from_the_consoles_payments_page(
    admin_client, admin_user, user_client, user, pack
):
    user_client.post(PURCHASE, {"pack": str(pack.pk)}, format="json")
    payment = Payment.objects.get(kind="credit_pack_checkout")

    response = console_refund(admin_client, payment, amount_usd="2.00")

    assert response.status_code == 200
    assert [str(message) for message in response.context["messages"]] == [f"{payment}: refund succeeded"]
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.status) == (200, "partially_refunded")
    assert balance_of(user) == 5000 - 2000
    operation = PaymentOperation.objects.get(kind=OperationKind.REFUND)
    assert AdminAuditLog.objects.filter(resource_id=str(operation.pk), action="create", actor=admin_user).count() == 1
    assert ledger_is_consistent()


def _paid_offline(user, *, kind, amount, paid_at) -> Payment:
    """A payment of another kind than a credit pack, paid in dollars on the offline provider."""
    return Payment.objects.create(
        kind=kind, user=user, provider="offline", amount=amount, currency="usd", paid_at=paid_at
    )


def test_the_consoles_payments_page_sends_an_invoices_payment_to_its_payment_transaction(admin_client, user, pack):
    renewal = _paid_offline(user, kind=OperationKind.RENEWAL_CHARGE, amount=1900, paid_at=pack.created_at)

    response = console_refund(admin_client, renewal)

    assert [str(message) for message in response.context["messages"]] == [
        f"Refused: {renewal}: An invoice's payment is refunded from its payment transaction."
    ]
    assert not PaymentOperation.objects.filter(kind=OperationKind.REFUND).exists()


def test_a_refund_of_someone_elses_kind_of_payment_is_a_404(roles_synced, staff_client, user, pack):
    other = _paid_offline(user, kind=OperationKind.LICENSE_CHECKOUT, amount=1000, paid_at=pack.created_at)

    response = staff_refund(staff_client, other, None)

    assert (response.status_code, response.json()["code"]) == (404, "payment_not_found")
    assert not PaymentOperation.objects.filter(kind=OperationKind.REFUND).exists()
