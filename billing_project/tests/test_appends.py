"""billing_project.appends: new rows of append-only records kept by a block and written together at
its end, with the block's last write and the reads they ask for."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from billing_project import sql
from billing_project.appends import appends_deferred, write_ahead
from billing_project.enums import EventType
from billing_project.models import OutboundEvent, WebhookDelivery, WebhookEndpoint
from billing_project.outbound import event_emit
from billing_project.tests.protocol import queries_sent
from billing_project.webhook_endpoints import endpoint_create

pytestmark = pytest.mark.django_db


def test_rows_appended_in_a_block_are_written_at_its_end_with_its_last_write_in_one_round_trip(staff_user):
    wants_invoices = endpoint_create(actor=staff_user, url="https://a.example.com/hooks", event_types=["invoice"])
    with transaction.atomic(), appends_deferred() as appends:
        paid = event_emit(type=EventType.INVOICE_PAID, subject="invoice:1", data={"amount": "19.00"})
        granted = event_emit(type=EventType.CREDITS_GRANTED, subject="user:1", data={"amount": 20_000})
        assert not OutboundEvent.objects.exists()  # kept, not yet written
        wants_invoices.description = "renamed by the block's last write"
        with CaptureQueriesContext(connection) as queries:
            appends.write(last=sql.update(wants_invoices, ["description"]))

    # The events, the last write and one read of the endpoints; then the one delivery wanted.
    assert len(queries) == (2 if connection.vendor == "postgresql" else 4)
    assert set(OutboundEvent.objects.values_list("pk", "type")) == {
        (paid.pk, "invoice.paid"),
        (granted.pk, "credits.granted"),
    }
    assert list(WebhookDelivery.objects.values_list("event_id", "endpoint_id")) == [(paid.pk, wants_invoices.pk)]
    assert WebhookEndpoint.objects.get(pk=wants_invoices.pk).description == "renamed by the block's last write"
    assert not paid._state.adding


def test_a_block_left_by_an_exception_writes_nothing():
    with pytest.raises(RuntimeError), transaction.atomic(), appends_deferred():
        event_emit(type=EventType.INVOICE_PAID, subject="invoice:1", data={})
        raise RuntimeError("the operation failed")

    assert not OutboundEvent.objects.exists()


def test_a_row_appended_in_a_savepoint_that_is_rolled_back_within_the_block_is_not_written():
    with transaction.atomic(), appends_deferred():
        event_emit(type=EventType.INVOICE_PAID, subject="invoice:kept", data={})
        with pytest.raises(RuntimeError), transaction.atomic():
            event_emit(type=EventType.INVOICE_PAID, subject="invoice:rolled-back", data={})
            raise RuntimeError("the effect no longer applies")

    assert list(OutboundEvent.objects.values_list("subject", flat=True)) == ["invoice:kept"]


def test_outside_a_block_a_row_is_written_at_once():
    event = event_emit(type=EventType.INVOICE_PAID, subject="invoice:1", data={"amount": "19.00"})

    assert OutboundEvent.objects.get(pk=event.pk).data == {"amount": "19.00"}


# Writes sent ahead of the next statement (`write_ahead`), on WebhookEndpoint rows: a write whose
# result nobody waits for, that whatever reads next must see.


def _renamed(endpoint: WebhookEndpoint, description: str) -> sql.Statement:
    endpoint.description = description
    return sql.update(endpoint, ["description"])


def _recorded(sent: list):
    def recording(execute, statement, params, many, context):
        sent.append(statement)
        return execute(statement, params, many, context)

    return recording


def _description_read(endpoint: WebhookEndpoint) -> sql.Statement:
    return f"SELECT description FROM {sql.table(WebhookEndpoint)} WHERE id = %s", [endpoint.pk]


@pytest.mark.postgres
def test_a_write_ahead_goes_in_the_round_trip_of_the_next_read_which_sees_it(staff_user):
    endpoint = endpoint_create(actor=staff_user, url="https://a.example.com/hooks", event_types=["invoice"])
    with transaction.atomic(), appends_deferred():
        write_ahead(_renamed(endpoint, "renamed ahead"))
        read = []
        sent = queries_sent(lambda: read.extend(sql.read_all([_description_read(endpoint)])))

    assert read == [[("renamed ahead",)]]
    assert len([query for query in sent if "PREPARE" not in query]) == 1


@pytest.mark.postgres
def test_a_write_ahead_is_sent_alone_before_a_statement_of_the_orm_which_sees_it(staff_user):
    endpoint = endpoint_create(actor=staff_user, url="https://a.example.com/hooks", event_types=["invoice"])
    with transaction.atomic(), appends_deferred():
        write_ahead(_renamed(endpoint, "renamed ahead"))
        read = []
        sent = queries_sent(lambda: read.append(WebhookEndpoint.objects.get(pk=endpoint.pk).description))

    assert read == ["renamed ahead"]
    assert len([query for query in sent if "PREPARE" not in query]) == 2


@pytest.mark.postgres
def test_writes_sent_ahead_together_are_one_statement_in_the_round_trip_of_the_next_read(staff_user):
    endpoint = endpoint_create(actor=staff_user, url="https://a.example.com/hooks", event_types=["invoice"])
    with transaction.atomic(), appends_deferred():
        event = sql.new_row(OutboundEvent, type="invoice.paid", subject="invoice:1", data={})
        write_ahead(sql.insert([event]), _renamed(endpoint, "renamed ahead"))
        with connection.execute_wrapper(_recorded(sent := [])):  # inside the block's own wrapper
            (rows,) = sql.read_all([_description_read(endpoint)])

    assert rows == [("renamed ahead",)]
    assert OutboundEvent.objects.get(pk=event.pk).subject == "invoice:1"
    (statements,) = sent
    assert [part.split(" ", 3)[:3] for part, _ in statements.parts] == [
        ["WITH", "w0", "AS"],  # the insert, then the update
        ["SELECT", "description", "FROM"],
    ]


def test_a_write_ahead_that_nothing_followed_is_written_when_the_block_ends(staff_user):
    endpoint = endpoint_create(actor=staff_user, url="https://a.example.com/hooks", event_types=["invoice"])
    with transaction.atomic(), appends_deferred():
        write_ahead(_renamed(endpoint, "renamed ahead"))

    assert WebhookEndpoint.objects.get(pk=endpoint.pk).description == "renamed ahead"


def test_an_insert_ahead_that_nothing_followed_is_written_once_when_the_block_ends():
    with transaction.atomic(), appends_deferred():
        write_ahead(sql.insert([sql.new_row(OutboundEvent, type="invoice.paid", subject="invoice:1", data={})]))

    assert list(OutboundEvent.objects.values_list("subject", flat=True)) == ["invoice:1"]


def test_a_write_ahead_stays_when_a_savepoint_opened_after_it_is_rolled_back(staff_user):
    endpoint = endpoint_create(actor=staff_user, url="https://a.example.com/hooks", event_types=["invoice"])
    with transaction.atomic(), appends_deferred():
        write_ahead(_renamed(endpoint, "renamed ahead"))
        with pytest.raises(RuntimeError), transaction.atomic():
            raise RuntimeError("the effect no longer applies")

    assert WebhookEndpoint.objects.get(pk=endpoint.pk).description == "renamed ahead"


def test_a_block_left_by_an_exception_writes_nothing_ahead(staff_user):
    endpoint = endpoint_create(actor=staff_user, url="https://a.example.com/hooks", event_types=["invoice"])
    with pytest.raises(RuntimeError), transaction.atomic(), appends_deferred():
        write_ahead(_renamed(endpoint, "renamed ahead"))
        raise RuntimeError("the operation failed")

    assert WebhookEndpoint.objects.get(pk=endpoint.pk).description == ""


@pytest.mark.postgres
def test_a_read_made_ahead_is_read_again_after_a_write_ahead(staff_user):
    endpoint = endpoint_create(actor=staff_user, url="https://a.example.com/hooks", event_types=["invoice"])
    read = _description_read(endpoint)
    with transaction.atomic(), appends_deferred(), sql.reads_primed([read], sql.read_all([read])):
        write_ahead(_renamed(endpoint, "renamed ahead"))
        (rows,) = sql.read_all([read])

    assert rows == [("renamed ahead",)]
