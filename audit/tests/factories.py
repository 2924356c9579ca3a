import factory
from factory.django import DjangoModelFactory

from audit.models import ADMIN_AUDIT_CHAIN, GENESIS_HASH, AdminAuditLog, AuditAction, AuditChainHead
from audit.services import audit_record
from billing_project.tests.factories import UserFactory
from payments.models import PaymentEvent


class AdminAuditLogFactory(DjangoModelFactory):
    """Appends through `audit_record`: a row inserted any other way would break the hash chain."""

    class Meta:
        model = AdminAuditLog

    actor = factory.SubFactory(UserFactory, is_staff=True)
    action = AuditAction.UPDATE
    resource_type = "subscriptions.tierconfig"
    resource_id = factory.Sequence(str)
    previous_value = factory.Dict({"is_active": True})
    new_value = factory.Dict({"is_active": False})

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return audit_record(**kwargs)


class AuditChainHeadFactory(DjangoModelFactory):
    """The chain's head row, as it is before the first append (or the existing one: it is unique)."""

    class Meta:
        model = AuditChainHead
        django_get_or_create = ("chain",)

    chain = ADMIN_AUDIT_CHAIN
    sequence = 0
    row_hash = GENESIS_HASH


class PaymentEventFactory(DjangoModelFactory):
    class Meta:
        model = PaymentEvent

    user = factory.SubFactory(UserFactory)
    event_type = "invoice_paid"
    plan_code = "pro"
    customer_id = factory.Sequence(lambda n: f"cus_test_{n}")
    invoice_id = factory.Sequence(lambda n: f"in_test_{n}")
    subscription_id = factory.Sequence(lambda n: f"sub_test_{n}")
    amount = 1900
    currency = "usd"
