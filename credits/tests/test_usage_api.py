"""usage/record, record-batch and check, through the API, as the gateway calls them."""

import uuid
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from billing_project.enums import SubscriptionTier
from billing_project.tests.protocol import queries_sent
from credits.api.events import usage_event_parse
from credits.models import (
    CreditConsumption,
    CreditDeductionLedger,
    TokenUsageLedger,
    UserCreditBalance,
    UserCreditSource,
)
from credits.selectors import pricing_book
from credits.services import account_tier_set, usage_record
from credits.tests.conftest import fund, usage_event
from credits.usage_objects import FLAT_FIELDS, UsageObjectError, breakdown_from_flat, fee_units_parse
from licensing.tests.factories import PerpetualLicenseFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("price_catalog")]

RECORD = "/api/v1/usage/record/"
BATCH = "/api/v1/usage/record-batch/"


def counts():
    return (
        TokenUsageLedger.objects.count(),
        CreditDeductionLedger.objects.count(),
        CreditConsumption.objects.count(),
    )


def balance_of(user) -> int:
    return UserCreditBalance.objects.get(user=user).amount


def test_record_charges_the_seed_example_at_the_free_tier_margin(service_client, user):
    # given a user on no plan (free tier: margin 2.0) with 1,000 credits
    fund(user, 1000)

    # when 1000 in + 2000 out on gpt-4o is recorded
    event = usage_event(user)
    response = service_client.post(RECORD, event, format="json")

    # then 0.035 USD x 2.0 = 0.07 USD = 70 credits
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body == {
        "request_id": event["request_id"],
        "status": "success",
        "credits_deducted": 70,
        "balance_after": 930,
        "vendor_cost": "0.0350000000",
        "credit_value_usd": "0.0700000000",
        "margin_multiplier": "2.0000",
        "byok": False,
        "hold_id": None,
        "deduction_id": str(CreditDeductionLedger.objects.get(request_id=event["request_id"]).pk),
    }
    assert balance_of(user) == 930
    deduction = CreditDeductionLedger.objects.get(request_id=event["request_id"])
    assert (deduction.balance_before, deduction.balance_after, deduction.reason) == (1000, 930, "inference")
    usage = TokenUsageLedger.objects.get(request_id=event["request_id"])
    assert usage.deduction == deduction
    assert usage.user_tier_at_request == "free"


def test_repeated_request_id_answers_the_first_body_and_changes_nothing(service_client, user):
    fund(user, 1000)
    event = usage_event(user)
    first = service_client.post(RECORD, event, format="json")

    again = service_client.post(RECORD, event, format="json")

    assert again.status_code == 200
    assert again.json() == first.json()
    assert balance_of(user) == 930
    assert counts() == (1, 1, 1)


def test_record_beyond_the_balance_is_refused_with_402_and_nothing_written(service_client, user):
    fund(user, 69)

    response = service_client.post(RECORD, usage_event(user), format="json")

    assert response.status_code == 402
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "insufficient_credits"
    assert (problem["required"], problem["available"], problem["balance"]) == (70, 69, 69)
    assert balance_of(user) == 69
    assert counts() == (0, 0, 0)


@pytest.mark.parametrize(
    ("overrides", "code"),
    [({"model": "gpt-9"}, "unknown_model"), ({"provider": "acme"}, "unknown_provider")],
)
def test_unknown_model_or_provider_is_a_422_problem(service_client, user, overrides, code):
    fund(user, 1000)

    response = service_client.post(RECORD, usage_event(user, **overrides), format="json")

    assert response.status_code == 422
    assert response.json()["code"] == code
    assert counts() == (0, 0, 0)


def test_unknown_user_is_a_422_problem(service_client, user):
    response = service_client.post(RECORD, usage_event(user, user_id=user.pk + 1000), format="json")

    assert response.status_code == 422
    assert response.json()["code"] == "unknown_user"


def test_malformed_event_is_a_400_with_per_field_errors(service_client, user):
    event = usage_event(user, request_id="not-a-uuid", input_tokens=-1, request_type="poem")
    del event["model"]

    response = service_client.post(RECORD, event, format="json")

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"request_id", "input_tokens", "request_type", "model"}


def test_completion_before_start_is_refused(service_client, user):
    started = timezone.now()
    event = usage_event(
        user,
        request_started_at=started.isoformat(),
        request_completed_at=(started - timedelta(seconds=1)).isoformat(),
    )

    response = service_client.post(RECORD, event, format="json")

    assert response.status_code == 400
    assert "request_completed_at" in response.json()["errors"]


def test_byok_user_is_recorded_at_zero_credits(service_client, user):
    fund(user, 10)
    PerpetualLicenseFactory(user=user, byok_enabled=True, status="active")

    response = service_client.post(RECORD, usage_event(user), format="json")

    assert response.status_code == 201
    body = response.json()
    assert (body["credits_deducted"], body["byok"], body["vendor_cost"], body["balance_after"]) == (
        0,
        True,
        "0.0000000000",
        10,
    )
    usage = TokenUsageLedger.objects.get()
    assert usage.is_byok and usage.deduction is None
    assert balance_of(user) == 10


def test_record_prices_at_the_tier_on_the_balance_and_names_its_subscription(service_client, user):
    # given the tier and live subscription subscriptions pushed: pro_max (margin 1.4)
    subscription_id = uuid.uuid4()
    account_tier_set(user_id=user.pk, tier=SubscriptionTier.PRO_MAX, subscription_id=subscription_id)
    fund(user, 1000)

    response = service_client.post(RECORD, usage_event(user), format="json")

    # then 0.035 USD x 1.4 = 0.049 USD = 49 credits, at that tier, naming that subscription
    assert response.status_code == 201, response.json()
    assert (response.json()["credits_deducted"], response.json()["margin_multiplier"]) == (49, "1.4000")
    usage = TokenUsageLedger.objects.get()
    assert (usage.user_tier_at_request, usage.subscription_id, usage.deduction.subscription_id) == (
        SubscriptionTier.PRO_MAX,
        subscription_id,
        subscription_id,
    )


def test_record_without_a_live_subscription_names_none(service_client, user):
    account_tier_set(user_id=user.pk, tier=SubscriptionTier.PRO, subscription_id=None)
    fund(user, 1000)

    response = service_client.post(RECORD, usage_event(user), format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["margin_multiplier"] == "1.5000"
    usage = TokenUsageLedger.objects.get()
    assert (usage.user_tier_at_request, usage.subscription_id) == (SubscriptionTier.PRO, None)


def test_a_perpetual_license_holder_without_byok_is_priced_at_the_perpetual_margin(service_client, user):
    # given a user on the free tier who bought a perpetual license and turned BYOK off
    account_tier_set(user_id=user.pk, tier=SubscriptionTier.FREE, subscription_id=uuid.uuid4())
    PerpetualLicenseFactory(user=user, byok_enabled=False, status="active")
    fund(user, 1000)

    response = service_client.post(RECORD, usage_event(user), format="json")

    # then the perpetual margin (1.5): 0.035 x 1.5 = 0.0525 USD = 53 credits, not the free tier's 70
    assert response.status_code == 201, response.json()
    assert (response.json()["credits_deducted"], response.json()["margin_multiplier"]) == (53, "1.5000")
    assert TokenUsageLedger.objects.get().user_tier_at_request == SubscriptionTier.PERPETUAL


@pytest.mark.parametrize("license_status", ["active", "revoked"])
def test_a_paid_tier_outranks_a_perpetual_license(service_client, user, license_status):
    account_tier_set(user_id=user.pk, tier=SubscriptionTier.PRO_MAX, subscription_id=uuid.uuid4())
    PerpetualLicenseFactory(user=user, byok_enabled=False, status=license_status)
    fund(user, 1000)

    response = service_client.post(RECORD, usage_event(user), format="json")

    assert (response.json()["credits_deducted"], response.json()["margin_multiplier"]) == (49, "1.4000")
    assert TokenUsageLedger.objects.get().user_tier_at_request == SubscriptionTier.PRO_MAX


def test_a_license_that_is_not_active_leaves_a_free_user_on_the_free_margin(service_client, user):
    PerpetualLicenseFactory(user=user, byok_enabled=False, status="suspended")
    fund(user, 1000)

    response = service_client.post(RECORD, usage_event(user), format="json")

    assert response.json()["credits_deducted"] == 70


def test_byok_license_of_another_user_or_not_active_is_not_byok(service_client, user, other_user):
    fund(user, 1000)
    PerpetualLicenseFactory(user=other_user, byok_enabled=True, status="active")
    PerpetualLicenseFactory(user=user, byok_enabled=True, status="revoked")

    response = service_client.post(RECORD, usage_event(user), format="json")

    assert (response.json()["byok"], response.json()["credits_deducted"]) == (False, 70)


@pytest.mark.postgres
def test_recording_reads_under_the_lock_in_one_round_trip(user, django_assert_num_queries):
    # given a user whose balance row exists, and this process's pricing book loaded
    fund(user, 1000)
    pricing_book()
    event, _ = usage_event_parse(usage_event(user))

    # then: the transaction, the reads under the lock (balance with the tier, grants, holds, request
    # ids, licenses), the writes, the end of the transaction
    with django_assert_num_queries(4):
        usage_record(event=event)


@pytest.mark.postgres
def test_a_usage_records_statements_are_all_prepared_on_the_connection(user):
    # given a user whose balance row exists, and a first record that prepared the statements
    fund(user, 1000)
    usage_record(event=usage_event_parse(usage_event(user))[0])
    event, _ = usage_event_parse(usage_event(user))

    sent = queries_sent(lambda: usage_record(event=event))

    # then the reads under the lock (balance, grants, holds, request ids, licenses) and the writes
    # (usage, deduction, lineage, the grant and the balance, one statement) go by name
    # (in the test's transaction, a savepoint stands for BEGIN and COMMIT)
    statements = [part for round_trip in sent for part in round_trip.strip('"').split("; ")]
    assert [part.split()[0] for part in statements] == ["SAVEPOINT", *["EXECUTE"] * 6, "RELEASE"]
    assert len(sent) == 4
    assert balance_of(user) == 1000 - 2 * 70


def test_embedding_deducts_with_reason_embedding(service_client, user):
    fund(user, 1000)

    service_client.post(RECORD, usage_event(user, request_type="embedding"), format="json")

    assert CreditDeductionLedger.objects.get().reason == "embedding"


def test_grants_are_spent_soonest_expiring_first_and_never_expiring_last(service_client, user):
    never = fund(user, 100).allocation.grants.get()
    later = fund(user, 50, expires_at=timezone.now() + timedelta(days=20)).allocation.grants.get()
    sooner = fund(user, 30, expires_at=timezone.now() + timedelta(days=2)).allocation.grants.get()

    response = service_client.post(RECORD, usage_event(user), format="json")  # 70 credits

    assert response.status_code == 201
    deduction = CreditDeductionLedger.objects.get()
    paid = {row.source_id: row.amount for row in deduction.consumptions.all()}
    assert paid == {sooner.pk: 30, later.pk: 40}
    assert [grant.remaining for grant in (sooner, later, never) if grant.refresh_from_db() is None] == [0, 10, 100]
    assert sum(UserCreditSource.objects.filter(user=user).values_list("remaining", flat=True)) == balance_of(user)


def test_usage_endpoints_refuse_user_tokens(user_client, user):
    response = user_client.post(RECORD, usage_event(user), format="json")

    assert response.status_code == 403


def test_usage_endpoints_refuse_a_service_without_the_scope(api_client, service_token, user):
    from conftest import bearer

    api_client.credentials(**bearer(service_token("reports:read")))

    response = api_client.post(RECORD, usage_event(user), format="json")

    assert response.status_code == 403


def test_batch_answers_each_event_in_order_with_its_own_status(service_client, user, other_user):
    fund(user, 100)
    fund(other_user, 1000)
    first = usage_event(user)
    events = [
        first,  # 70 of 100: recorded
        usage_event(other_user),  # recorded
        usage_event(user),  # 70 more than the 30 left: refused
        {**first},  # a repeat of the first
        usage_event(user, model="gpt-9"),  # unknown model
        usage_event(user, input_tokens="many"),  # malformed
        usage_event(user, input_tokens=100, output_tokens=0),  # 0.0005 x 2 = 1 credit: recorded
    ]

    response = service_client.post(BATCH, {"events": events}, format="json")

    assert response.status_code == 200
    results = response.json()["results"]
    assert [result["status"] for result in results] == [201, 201, 402, 200, 422, 400, 201]
    assert [result["index"] for result in results] == list(range(7))
    assert results[0]["request_id"] == first["request_id"]
    assert results[3]["result"] == results[0]["result"]
    assert results[2]["code"] == "insufficient_credits"
    assert results[4]["code"] == "unknown_model"
    assert "input_tokens" in results[5]["errors"]
    assert results[6]["result"]["credits_deducted"] == 1
    assert balance_of(user) == 29
    assert balance_of(other_user) == 930
    assert TokenUsageLedger.objects.count() == 3


def test_batch_refuses_more_than_a_thousand_events(service_client, user):
    response = service_client.post(BATCH, {"events": [usage_event(user)] * 1001}, format="json")

    assert response.status_code == 400
    assert "events" in response.json()["errors"]


def test_check_says_whether_an_estimate_fits_and_changes_nothing(service_client, user):
    fund(user, 100)

    allowed = service_client.post("/api/v1/usage/check/", {"user_id": user.pk, "estimated_credits": 100}, format="json")
    refused = service_client.post("/api/v1/usage/check/", {"user_id": user.pk, "estimated_credits": 101}, format="json")

    assert allowed.json() == {
        "allowed": True,
        "reason": None,
        "balance": 100,
        "available": 100,
        "budget_available": None,
    }
    assert refused.json() == {
        "allowed": False,
        "reason": "insufficient_credits",
        "balance": 100,
        "available": 100,
        "budget_available": None,
    }
    assert counts() == (0, 0, 0)


def test_record_on_expired_grants_expires_them_first(service_client, user):
    fund(user, 500, expires_at=timezone.now() + timedelta(minutes=1))
    fund(user, 100)

    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        response = service_client.post(RECORD, usage_event(user), format="json")

    assert response.status_code == 201
    assert response.json()["balance_after"] == 30
    reasons = sorted(CreditDeductionLedger.objects.values_list("reason", flat=True))
    assert reasons == ["expiration", "inference"]


def test_unknown_request_id_shape_in_batch_is_reported_without_id(service_client, user):
    response = service_client.post(BATCH, {"events": [{"request_id": 5}]}, format="json")

    (result,) = response.json()["results"]
    assert result["status"] == 400
    assert result["request_id"] is None


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"request_id": "nope"},
        {"user_id": 0},
        {"user_id": True},
        {"input_tokens": -5, "output_tokens": "x"},
        {"cached_input_tokens": None},
        {"request_type": "poem"},
        {"request_started_at": "yesterday"},
        {"request_started_at": "9500-01-01T00:00:00Z"},
        {"request_started_at": "0500-01-01T00:00:00Z"},
        {"request_started_at": "0001-01-01T00:00:00+01:00"},
        {"model": "", "provider": None},
        {"hold_id": "not-a-uuid", "streaming_segments": -1},
        {"region": "r" * 51},
        {"region": "eu\x00west", "model": "gpt\x00"},
        {"service_tier": "turbo"},
        {"service_tier": "flex", "reasoning_tokens": 5, "cached_input_tokens": 3},
        {"usage_format": "anthropic_v9"},
        {"usage_format": {}, "service_tier": ["flex"]},
    ],
)
def test_fast_event_parser_follows_the_documented_schema(user, changes):
    from credits.api.serializers import UsageEventInput

    raw = {**usage_event(user), **changes}
    documented = UsageEventInput(data=raw)
    documented.is_valid()

    event, errors = usage_event_parse(raw)

    assert set(errors) == set(documented.errors)
    assert (event is None) == bool(documented.errors)
    if event is not None:
        data = documented.validated_data
        flat = {name: data.pop(name, 0) for name in FLAT_FIELDS}
        assert event.tokens == breakdown_from_flat(flat)
        assert all(getattr(event, name) == value for name, value in data.items())


@pytest.mark.parametrize("name", ["web\x00search", "\ud800"], ids=["nul", "lone_surrogate"])
def test_a_fee_name_no_column_or_response_can_hold_is_refused_without_echoing_it(name):
    with pytest.raises(UsageObjectError) as refused:
        fee_units_parse({name: 1})

    assert refused.value.field == "fee_units"
    assert name not in refused.value.message


def test_fast_event_parser_knows_every_documented_field():
    from credits.api.events import FIELDS
    from credits.api.serializers import UsageEventInput

    assert set(UsageEventInput().fields) == FIELDS


def test_recording_counts_attempts_by_outcome_and_credits_deducted(service_client, user):
    from prometheus_client import REGISTRY

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0

    fund(user, 100)
    before = (
        sample("usage_recording_attempts_total", result="success"),
        sample("usage_recording_attempts_total", result="insufficient_credits"),
        sample("credits_deducted_total"),
    )

    service_client.post(RECORD, usage_event(user), format="json")
    service_client.post(RECORD, usage_event(user), format="json")  # 70 more than the 30 left

    after = (
        sample("usage_recording_attempts_total", result="success"),
        sample("usage_recording_attempts_total", result="insufficient_credits"),
        sample("credits_deducted_total"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 70]


def test_a_batch_counts_each_event_by_its_outcome(service_client, user):
    from prometheus_client import REGISTRY

    def samples():
        name = "usage_recording_attempts_total"
        results = ("success", "replayed", "insufficient_credits")
        return [REGISTRY.get_sample_value(name, {"result": result}) or 0 for result in results]

    fund(user, 150)
    first = usage_event(user)
    before, deducted_before = samples(), REGISTRY.get_sample_value("credits_deducted_total") or 0

    response = service_client.post(
        BATCH, {"events": [first, usage_event(user), first, usage_event(user)]}, format="json"
    )

    assert [entry["status"] for entry in response.json()["results"]] == [201, 201, 200, 402]
    assert [b - a for a, b in zip(before, samples(), strict=True)] == [2, 1, 1]
    assert (REGISTRY.get_sample_value("credits_deducted_total") or 0) - deducted_before == 140
