from io import StringIO

import pytest
from django.core.management import call_command

from coupons.models import CampaignCoupon, Coupon
from coupons.tests.conftest import REDEEM_URL

pytestmark = pytest.mark.django_db


def test_the_demo_coupons_are_seeded_once_and_redeem(customer_client):
    first, second = StringIO(), StringIO()

    call_command("seed_demo_coupons", stdout=first)
    call_command("seed_demo_coupons", stdout=second)

    assert first.getvalue().startswith("Created 4 demo coupons")
    assert second.getvalue().startswith("Created 0 demo coupons")
    assert Coupon.objects.count() == CampaignCoupon.objects.count() == 4
    response = customer_client.post(REDEEM_URL, {"code": "bonus5k"}, format="json")
    assert (response.status_code, response.json()["credits_granted"]) == (201, 5000)
