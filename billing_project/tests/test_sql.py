"""The hot path's statement helpers: rows built like the constructor builds them, set membership,
rows read as the ORM reads them, inserts unless present, inserts and updates as the ORM makes them."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection
from django.db.models import signals
from django.utils import timezone

from billing_project import sql
from billing_project.models import OutboundEvent, RevokedTokenFamily
from billing_project.rows import row_insert, row_insert_unless_present, row_update, rows_insert_unless_present
from billing_project.tests.factories import UserFactory
from credits.models import (
    CreditAllocation,
    CreditConsumption,
    CreditDeductionLedger,
    CreditSource,
    TokenUsageLedger,
)
from payments.models import ProviderObjectVersion, WebhookEvent

MADE_PER_ROW = {"id"}  # a fresh UUID each time, compared apart


def _values(row) -> dict:
    return {field.attname: getattr(row, field.attname) for field in type(row)._meta.concrete_fields}


def _without_made(values: dict) -> dict:
    return {name: value for name, value in values.items() if name not in MADE_PER_ROW}


def test_new_row_matches_the_constructor_with_defaults_for_the_fields_not_given():
    given = {
        "user_id": 7,
        "amount": 30,
        "balance_before": 100,
        "balance_after": 70,
        "reason": "inference",
        "request_id": uuid.uuid4(),
        "token_vendor_cost": Decimal("0.0012500000"),
    }

    built, constructed = sql.new_row(CreditDeductionLedger, **given), CreditDeductionLedger(**given)

    assert _without_made(_values(built)) == _without_made(_values(constructed))
    assert isinstance(built.id, uuid.UUID) and built.id != sql.new_row(CreditDeductionLedger, **given).id
    assert built._state.adding and built._state.db is None


def test_new_row_takes_a_related_instance_by_the_relation_name():
    deduction = sql.new_row(CreditDeductionLedger, user_id=1, amount=5, balance_before=5, balance_after=0)

    consumption = sql.new_row(CreditConsumption, deduction=deduction, source_id=uuid.uuid4(), amount=5)
    usage = sql.new_row(TokenUsageLedger, request_id=uuid.uuid4(), user_id=1, deduction=None)

    assert consumption.deduction_id == deduction.id and consumption.deduction is deduction
    assert usage.deduction_id is None and usage.deduction is None
    assert usage.fee_units == {} and usage.fee_units is not sql.new_row(TokenUsageLedger, user_id=1).fee_units


def test_new_row_refuses_a_name_the_model_does_not_have():
    with pytest.raises(TypeError, match="no field named colour"):
        sql.new_row(CreditConsumption, amount=1, colour="red")


def test_new_row_builds_through_the_constructor_when_its_signals_are_listened_to():
    seen = []

    def listener(sender, instance, **kwargs):
        seen.append(instance)

    signals.post_init.connect(listener, sender=CreditConsumption)
    try:
        row = sql.new_row(CreditConsumption, amount=3)
    finally:
        signals.post_init.disconnect(listener, sender=CreditConsumption)

    assert seen == [row] and row.amount == 3


@pytest.mark.django_db
def test_one_of_matches_exactly_the_values_given():
    users = UserFactory.create_batch(3)
    among, params = sql.one_of([users[0].pk, users[2].pk])

    (rows,) = sql.read_all([(f"SELECT id FROM auth_user WHERE id {among} ORDER BY id", params)])

    assert [row[0] for row in rows] == [users[0].pk, users[2].pk]
    among, params = sql.one_of([-1])
    assert sql.read_all([(f"SELECT id FROM auth_user WHERE id {among}", params)]) == [[]]


@pytest.mark.django_db
def test_one_of_matches_exactly_the_uuids_and_the_texts_given():
    users = UserFactory.create_batch(3)
    users[0].username, users[2].username = 'comma, "quote" and \\ {brace}', "NULL"
    for user in users:
        user.save(update_fields=["username"])
    families = [RevokedTokenFamily.objects.create(family=str(uuid.uuid4()), reason="test") for _ in range(3)]

    among, params = sql.one_of([users[0].username, users[2].username])
    (rows,) = sql.read_all([(f"SELECT id FROM auth_user WHERE username {among} ORDER BY id", params)])
    assert [row[0] for row in rows] == [users[0].pk, users[2].pk]

    # As the services send them: the field's database values (UUIDs on PostgreSQL, hex text on SQLite).
    field, connection = RevokedTokenFamily._meta.pk, sql.default_connection()
    wanted = [field.get_db_prep_value(family.pk, connection) for family in (families[0], families[2])]
    among, params = sql.one_of([*wanted, field.get_db_prep_value(uuid.uuid4(), connection)])
    (rows,) = sql.read_all([(f"SELECT id FROM billing_project_revokedtokenfamily WHERE id {among}", params)])
    assert sorted(row[0] for row in rows) == sorted(wanted)
    among, params = sql.one_of([])
    assert sql.read_all([(f"SELECT id FROM auth_user WHERE id {among}", params)]) == [[]]


@pytest.mark.django_db
@pytest.mark.postgres  # the rows travel as one JSON parameter on PostgreSQL only
def test_an_insert_carries_every_value_and_an_integer_past_64_bits_is_left_to_the_database():
    request_id = uuid.uuid4()
    row = sql.new_row(
        CreditDeductionLedger,
        user_id=1,
        amount=2**70,
        balance_before=0,
        balance_after=-(2**70),
        reason="inference",
        request_id=request_id,
        token_vendor_cost=Decimal("1E-10"),
    )

    _, (row_json,) = sql.insert([row])

    # One row travels as one record.
    written = json.loads(row_json)
    assert (written["amount"], written["request_id"], Decimal(written["token_vendor_cost"])) == (
        2**70,
        str(request_id),
        Decimal("1E-10"),
    )
    assert written["id"] == str(row.id) and written["created_at"]


@pytest.mark.django_db
def test_a_row_inserted_alone_keeps_every_value_and_its_json_as_sent():
    user = UserFactory()
    # JSON values Python finds equal to others (1 and 1.0, true) stay the document that was sent.
    data = {"count": 1, "ratio": 1.0, "flag": True, "nested": {"list": [1, "two", None]}, "text": 'quote " \\'}
    row = sql.new_row(OutboundEvent, type="invoice.paid", subject=f"user:{user.pk}", user_id=user.pk, data=data)

    sql.execute_all([sql.insert([row])])

    stored = OutboundEvent.objects.get(pk=row.pk)
    assert _values(stored) == _values(row)
    assert json.dumps(stored.data, sort_keys=True) == json.dumps(data, sort_keys=True)


@pytest.mark.django_db
def test_rows_inserted_together_keep_their_own_values_and_the_ones_they_share():
    user, other = UserFactory(), UserFactory()
    rows = [
        sql.new_row(
            CreditDeductionLedger,
            # The first and last rows agree on the user, the middle one does not: not a shared value.
            user_id=other.pk if index == 1 else user.pk,
            amount=5,
            balance_before=100 - 5 * index,
            balance_after=95 - 5 * index,
            reason="inference",
            request_id=uuid.uuid4(),
            token_vendor_cost=Decimal("0.000125"),
        )
        for index in range(3)
    ]

    sql.execute_all([sql.insert(rows)])

    stored = CreditDeductionLedger.objects.in_bulk([row.pk for row in rows])
    for row in rows:
        assert _without_made(_values(stored[row.pk])) == _without_made(_values(row))
    assert {stored[row.pk].user_id for row in rows} == {user.pk, other.pk}


@pytest.mark.django_db
def test_rows_inserted_together_take_one_creation_time_set_on_them_as_saving_sets_it():
    user = UserFactory()
    rows = [
        sql.new_row(CreditAllocation, user_id=user.pk, amount=5 + index, source="bonus", reason="test")
        for index in range(3)
    ]
    before = timezone.now()

    sql.execute_all([sql.insert(rows)])

    stored = CreditAllocation.objects.in_bulk([row.pk for row in rows])
    assert len({row.created_at for row in rows}) == 1
    assert before <= rows[0].created_at <= timezone.now()
    assert {stored[row.pk].created_at for row in rows} == {rows[0].created_at}


@pytest.mark.django_db
def test_json_values_equal_in_python_but_not_the_same_document_are_each_kept():
    events = [
        sql.new_row(WebhookEvent, event_id=f"evt_{index}", event_type="invoice.paid", payload={}, result=result)
        for index, result in enumerate([{"paid": 1}, {"paid": True}, {"paid": 1.0}])
    ]

    sql.execute_all([sql.insert(events)])

    stored = WebhookEvent.objects.order_by("event_id").values_list("result", flat=True)
    assert [json.dumps(result) for result in stored] == ['{"paid": 1}', '{"paid": true}', '{"paid": 1.0}']


@pytest.mark.django_db
def test_rows_updated_together_take_their_own_values_and_the_ones_they_share():
    events = [
        WebhookEvent.objects.create(event_id=f"evt_{index}", event_type="invoice.paid", payload={})
        for index in range(3)
    ]
    for event, result, error in zip(events, [{"paid": 1}, {"paid": True}, {"paid": 1}], ["", "late", ""], strict=True):
        event.status, event.result, event.error = "processed", result, error

    sql.execute_all(sql.update_many(events, ["status", "result", "error"]))

    stored = WebhookEvent.objects.order_by("event_id").values_list("status", "result", "error")
    assert [(status, json.dumps(result), error) for status, result, error in stored] == [
        ("processed", '{"paid": 1}', ""),
        ("processed", '{"paid": true}', "late"),
        ("processed", '{"paid": 1}', ""),
    ]


def _allocations(user, starts: list[datetime]) -> list[CreditAllocation]:
    subscription_id = uuid.uuid4()
    return [
        CreditAllocation.objects.create(
            user=user,
            subscription_id=subscription_id,
            amount=100 + index,
            source=CreditSource.SUBSCRIPTION,
            period_start=start,
            expires_at=start + timedelta(days=30),
            reason="Pro credits",
        )
        for index, start in enumerate(starts)
    ]


@pytest.mark.django_db
def test_first_loads_the_row_the_orm_loads_in_the_order_given():
    user = UserFactory()
    early, late = _allocations(user, [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)])
    where = "user_id = %s"

    oldest = sql.first(CreditAllocation, where, [user.pk], order_by="period_start")
    newest = sql.first(CreditAllocation, where, [user.pk], order_by="period_start DESC")

    assert _values(oldest) == _values(CreditAllocation.objects.get(pk=early.pk))
    assert _values(newest) == _values(CreditAllocation.objects.get(pk=late.pk))
    assert not oldest._state.adding and oldest._state.db == "default"
    assert sql.first(CreditAllocation, where, [-1]) is None


@pytest.mark.django_db
def test_first_and_exists_match_uuids_and_datetimes_given_as_the_database_stores_them():
    user = UserFactory()
    (allocation,) = _allocations(user, [datetime(2026, 3, 1, 12, 30, tzinfo=UTC)])
    where = "subscription_id = %s AND period_start = %s"
    match = sql.values_of(
        CreditAllocation, subscription_id=allocation.subscription_id, period_start=allocation.period_start
    )
    miss = sql.values_of(
        CreditAllocation, subscription_id=allocation.subscription_id, period_start=datetime(2026, 3, 2, tzinfo=UTC)
    )

    assert sql.first(CreditAllocation, where, match).pk == allocation.pk
    assert sql.exists(CreditAllocation, where, match) and not sql.exists(CreditAllocation, where, miss)


@pytest.mark.django_db
def test_a_row_is_inserted_unless_one_with_its_unique_fields_is_present():
    payload = {"id": "evt_1", "data": {"object": {"id": "in_1", "lines": [1, 2.5, None]}}, "note": "naïve ✓"}
    first = WebhookEvent(provider="stripe", event_id="evt_1", event_type="invoice.paid", payload=payload)
    again = WebhookEvent(provider="stripe", event_id="evt_1", event_type="invoice.paid", payload={})

    assert row_insert_unless_present(first, unique_fields=("provider", "event_id"))
    assert not row_insert_unless_present(again, unique_fields=("provider", "event_id"))

    stored = WebhookEvent.objects.get(event_id="evt_1")
    assert (stored.pk, stored.payload, stored.event_type) == (first.pk, payload, "invoice.paid")
    assert not first._state.adding and again._state.adding


def _event(event_id: str) -> WebhookEvent:
    return sql.new_row(WebhookEvent, provider="stripe", event_id=event_id, event_type="invoice.paid", payload={})


def _version(object_id: str) -> ProviderObjectVersion:
    return sql.new_row(ProviderObjectVersion, provider="stripe", object_id=object_id, object_type="invoice")


EVENT_KEY, VERSION_KEY = ("provider", "event_id"), ("provider", "object_id")


@pytest.mark.django_db
def test_rows_are_inserted_unless_present_each_only_when_the_one_before_it_was(django_assert_num_queries):
    row_insert_unless_present(_event("evt_there"), unique_fields=EVENT_KEY)
    row_insert_unless_present(_version("in_there"), unique_fields=VERSION_KEY)

    with django_assert_num_queries(1 if connection.vendor == "postgresql" else 2):
        both = rows_insert_unless_present([(_event("evt_1"), EVENT_KEY), (_version("in_1"), VERSION_KEY)])
    second_present = rows_insert_unless_present([(_event("evt_2"), EVENT_KEY), (_version("in_there"), VERSION_KEY)])
    first_present = rows_insert_unless_present([(_event("evt_there"), EVENT_KEY), (_version("in_3"), VERSION_KEY)])

    assert (both, second_present, first_present) == ([True, True], [True, False], [False, False])
    assert set(WebhookEvent.objects.values_list("event_id", flat=True)) == {"evt_there", "evt_1", "evt_2"}
    # The row after one that was present is not tried, though nothing stood in its way.
    assert set(ProviderObjectVersion.objects.values_list("object_id", flat=True)) == {"in_there", "in_1"}


@pytest.fixture
def saves():
    """The pre_save and post_save signals sent for WebhookEvent, in order."""
    sent = []

    def pre(sender, instance, update_fields, **kwargs):
        sent.append(("pre_save", instance.pk, update_fields))

    def post(sender, instance, created, update_fields, **kwargs):
        sent.append(("post_save", instance.pk, created, update_fields))

    signals.pre_save.connect(pre, sender=WebhookEvent)
    signals.post_save.connect(post, sender=WebhookEvent)
    yield sent
    signals.pre_save.disconnect(pre, sender=WebhookEvent)
    signals.post_save.disconnect(post, sender=WebhookEvent)


@pytest.mark.django_db
def test_a_row_is_inserted_as_create_inserts_it(saves):
    event = WebhookEvent(provider="stripe", event_id="evt_2", event_type="invoice.paid", payload={"id": "evt_2"})

    row_insert(event)

    stored = WebhookEvent.objects.get(event_id="evt_2")
    assert (stored.pk, stored.payload, stored.created_at) == (event.pk, {"id": "evt_2"}, event.created_at)
    assert not event._state.adding
    assert saves == [("post_save", event.pk, True, None)]


@pytest.mark.django_db
def test_a_row_is_updated_as_save_with_update_fields_updates_it(saves):
    event = WebhookEvent.objects.create(provider="stripe", event_id="evt_3", event_type="invoice.paid", payload={})
    created_at, updated_at = event.created_at, event.updated_at
    saves.clear()
    event.status, event.event_type = "processed", "ignored.here"

    row_update(event, ["status", "updated_at"])

    stored = WebhookEvent.objects.get(pk=event.pk)
    assert (stored.status, stored.event_type) == ("processed", "invoice.paid")
    assert stored.updated_at == event.updated_at > updated_at
    assert stored.created_at == created_at
    fields = frozenset({"status", "updated_at"})
    assert saves == [("pre_save", event.pk, fields), ("post_save", event.pk, False, fields)]


@pytest.mark.django_db
def test_updating_a_row_that_is_not_there_is_an_error_as_in_the_orm():
    event = WebhookEvent(provider="stripe", event_id="evt_4", event_type="invoice.paid", payload={})
    event._state.adding = False

    with pytest.raises(DatabaseError, match="did not affect any rows"):
        row_update(event, ["status"])
