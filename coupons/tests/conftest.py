import pytest
from rest_framework.test import APIClient

from billing_project.net import ClientInfo
from conftest import access_token_for, bearer
from subscriptions.services import account_register, tier_catalog_seed

PASSWORD = "correct horse battery staple"
VALIDATE_URL = "/api/v1/coupons/validate/"
REDEEM_URL = "/api/v1/coupons/redeem/"


@pytest.fixture
def tier_catalog():
    tier_catalog_seed()


@pytest.fixture
def customer(tier_catalog):
    """A registered user: on the free tier, with its free credits."""
    return account_register(email="customer@example.com", password=PASSWORD)


@pytest.fixture
def customer_client(customer):
    client = APIClient()
    client.credentials(**bearer(access_token_for(customer)))
    return client


@pytest.fixture
def client_info():
    return ClientInfo(ip="203.0.113.7", user_agent="pytest", device_fingerprint="device-1")
