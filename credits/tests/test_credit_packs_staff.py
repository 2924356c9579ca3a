"""Staff define credit packs in the staff API and the console, each write audited; a pack once sold
keeps its terms (retired, never repriced) and is never deleted."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from audit.models import AdminAuditLog
from credits.models import CreditAllocation, CreditPack
from credits.services.packs import credit_pack_purchase

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("roles_synced")]

STAFF_PACKS = "/api/v1/admin/credit-packs/"


@pytest.fixture
def pack(db) -> CreditPack:
    return CreditPack.objects.create(name="Starter", credits=5_000, price=Decimal("5.00"))


@pytest.fixture
def sold(pack, user) -> CreditPack:
    credit_pack_purchase(user=user, pack_id=pack.pk)  # the offline provider: paid at once
    return pack


# The staff API


def test_staff_create_a_pack_and_the_write_is_audited(staff_client, staff_user):
    response = staff_client.post(
        STAFF_PACKS,
        {"name": "Builder", "credits": 25_000, "price": "22.50", "currency": "EUR", "credit_expiry_days": 90},
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert {key: body[key] for key in ("name", "credits", "price", "currency", "credit_expiry_days", "is_active")} == {
        "name": "Builder",
        "credits": 25000,
        "price": "22.50",
        "currency": "eur",
        "credit_expiry_days": 90,
        "is_active": True,
    }
    pack = CreditPack.objects.get(pk=body["id"])
    row = AdminAuditLog.objects.get(action="create", resource_type="credits.creditpack")
    assert (row.actor, row.resource_id, row.new_value["credits"]) == (staff_user, str(pack.pk), 25000)


def test_staff_list_and_retrieve_packs_retired_ones_included(staff_client, pack):
    retired = CreditPack.objects.create(name="Old", credits=100, price=Decimal("1.00"), is_active=False)

    listed = staff_client.get(STAFF_PACKS).json()["results"]
    only_retired = staff_client.get(STAFF_PACKS, {"is_active": "false"}).json()["results"]
    one = staff_client.get(f"{STAFF_PACKS}{pack.pk}/")

    assert {row["id"] for row in listed} == {str(pack.pk), str(retired.pk)}
    assert [row["id"] for row in only_retired] == [str(retired.pk)]
    assert (one.status_code, one.json()["price"]) == (200, "5.00")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"credits": 0}, "credits"),
        ({"price": "0.00"}, "price"),
        ({"price": "1.234"}, "price"),
        ({"currency": "dollars"}, "currency"),
        ({"credit_expiry_days": 0}, "credit_expiry_days"),
        ({"name": ""}, "name"),
    ],
)
def test_staff_create_with_bad_input_is_a_400_problem_and_writes_nothing(staff_client, body, field):
    response = staff_client.post(STAFF_PACKS, {"name": "X", "credits": 10, "price": "1.00", **body}, format="json")

    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/problem+json")
    assert field in response.json()["errors"]
    assert not CreditPack.objects.exists()
    assert not AdminAuditLog.objects.filter(resource_type="credits.creditpack").exists()


def test_a_price_with_a_fraction_of_a_yen_is_refused_as_a_422_problem(staff_client):
    response = staff_client.post(
        STAFF_PACKS, {"name": "Yen", "credits": 1000, "price": "1000.50", "currency": "jpy"}, format="json"
    )

    assert response.status_code == 422
    assert (response.json()["code"], response.json()["field"]) == ("invalid_price", "price")
    assert not CreditPack.objects.exists()


def test_staff_change_the_terms_of_a_pack_not_yet_sold(staff_client, staff_user, pack):
    response = staff_client.patch(f"{STAFF_PACKS}{pack.pk}/", {"price": "4.00", "credits": 4_500}, format="json")

    assert response.status_code == 200, response.content
    pack.refresh_from_db()
    assert (pack.price, pack.credits) == (Decimal("4.00"), 4500)
    row = AdminAuditLog.objects.get(action="update", resource_id=str(pack.pk))
    assert (row.actor, row.previous_value["price"], row.new_value["price"]) == (staff_user, "5.00", "4.00")


@pytest.mark.parametrize(
    "change",
    [{"price": "4.00"}, {"credits": 9_000}, {"currency": "eur"}, {"credit_expiry_days": 30}],
)
def test_a_sold_pack_is_not_repriced_409_pack_sold(staff_client, sold, change):
    response = staff_client.patch(f"{STAFF_PACKS}{sold.pk}/", change, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "pack_sold"
    sold.refresh_from_db()
    assert (sold.price, sold.credits, sold.currency, sold.credit_expiry_days) == (Decimal("5.00"), 5000, "usd", None)
    assert not AdminAuditLog.objects.filter(action="update", resource_id=str(sold.pk)).exists()


def test_a_sold_pack_is_retired_and_renamed(staff_client, sold):
    response = staff_client.patch(
        f"{STAFF_PACKS}{sold.pk}/", {"is_active": False, "name": "Starter (2025)", "price": "5.00"}, format="json"
    )

    assert response.status_code == 200, response.content
    sold.refresh_from_db()
    assert (sold.is_active, sold.name) == (False, "Starter (2025)")
    assert CreditAllocation.objects.get(source="purchase").amount == 5000


def test_the_staff_api_has_no_delete(staff_client, pack):
    response = staff_client.delete(f"{STAFF_PACKS}{pack.pk}/")

    assert response.status_code == 405
    assert CreditPack.objects.filter(pk=pack.pk).exists()


def test_support_reads_packs_but_cannot_write_them(support_client, pack):
    assert support_client.get(STAFF_PACKS).status_code == 200
    refused = support_client.post(STAFF_PACKS, {"name": "X", "credits": 10, "price": "1.00"}, format="json")
    assert refused.status_code == 403
    assert CreditPack.objects.count() == 1


def test_customers_cannot_reach_the_staff_packs(user_client, pack):
    assert user_client.get(STAFF_PACKS).status_code == 403


# The console


def test_a_pack_added_in_the_console_is_audited(console):
    response = console.post(
        "/admin/credits/creditpack/add/",
        {"name": "Console pack", "credits": "1000", "price": "2.00", "currency": "USD", "is_active": "on"},
    )

    assert response.status_code == 302, response.content
    pack = CreditPack.objects.get(name="Console pack")
    assert pack.currency == "usd"
    row = AdminAuditLog.objects.get(action="create", resource_id=str(pack.pk))
    assert row.actor == console.admin


def test_the_console_refuses_a_price_its_currency_cannot_charge(console):
    response = console.post(
        "/admin/credits/creditpack/add/", {"name": "Yen", "credits": "10", "price": "10.50", "currency": "jpy"}
    )

    assert response.status_code == 200
    assert b"errorlist" in response.content
    assert not CreditPack.objects.exists()


def test_a_sold_pack_shows_its_terms_read_only_and_cannot_be_deleted_in_the_console(console, sold):
    change_url = f"/admin/credits/creditpack/{sold.pk}/change/"

    page = console.get(change_url)
    console.post(change_url, {"name": "Renamed", "credits": "1", "price": "0.50", "currency": "eur"})
    deleted = console.post(f"/admin/credits/creditpack/{sold.pk}/delete/", {"post": "yes"})

    assert page.status_code == 200
    assert b'name="price"' not in page.content and b'name="name"' in page.content
    sold.refresh_from_db()
    assert (sold.name, sold.credits, sold.price, sold.currency, sold.is_active) == (
        "Renamed",
        5000,
        Decimal("5.00"),
        "usd",
        False,
    )
    assert deleted.status_code == 403
    assert CreditPack.objects.filter(pk=sold.pk).exists()


def test_a_pack_never_sold_can_be_deleted_in_the_console_audited(console, pack):
    response = console.post(f"/admin/credits/creditpack/{pack.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not CreditPack.objects.exists()
    assert AdminAuditLog.objects.filter(action="delete", resource_id=str(pack.pk)).exists()


# The demo catalog


def test_seed_catalog_adds_the_demo_packs_once():
    for _ in range(2):
        call_command("seed_catalog", stdout=StringIO())

    assert CreditPack.objects.filter(is_active=True).count() == 3
    assert CreditPack.objects.get(name="Starter 5,000").price == Decimal("5.00")
