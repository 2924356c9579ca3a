"""Money at the border with the payment provider: what moved (operations), what the provider told us
(webhook events) and the record of every payment fact (payment events)."""

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from audit.models import AppendOnlyModel
from billing_project.models import TimestampedModel, choices_check
from billing_project.money import minor_to_major


class WebhookProvider(models.TextChoices):
    STRIPE = "stripe"
    OFFLINE = "offline"


class WebhookStatus(models.TextChoices):
    RECEIVED = "received"
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"
    UNMATCHED = "unmatched", "Unmatched (about nothing known here; kept for staff to link and process again)"


class WebhookEvent(TimestampedModel):
    """A payment-provider event as received: the replay and idempotency record of record.
    Invariant: one row per (provider, event_id); processing is idempotent on it. `raw_body` keeps
    the bytes whose signature was verified, so what was trusted can always be shown."""

    provider = models.CharField(max_length=16, choices=WebhookProvider.choices, default=WebhookProvider.STRIPE)
    event_id = models.CharField(max_length=255)
    event_type = models.CharField(max_length=100)
    payload = models.JSONField()
    raw_body = models.TextField(blank=True, help_text="The signed body exactly as delivered.")
    event_created_at = models.DateTimeField(null=True, blank=True, help_text="When the provider created the event.")
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=WebhookStatus.choices, default=WebhookStatus.RECEIVED)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    unmatched_reason = models.TextField(blank=True, help_text="Why the event could not be linked to anything here.")
    object_id = models.CharField(max_length=255, blank=True, help_text="The provider object the event is about.")
    fetched = models.JSONField(
        default=dict, blank=True, help_text="Provider objects read from the API before processing, by id."
    )
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        constraints = [
            choices_check("provider", WebhookProvider),
            choices_check("status", WebhookStatus),
            models.UniqueConstraint(fields=["provider", "event_id"], name="webhook_event_unique_per_provider"),
        ]
        indexes = [
            models.Index(fields=["status", "received_at"], name="webhook_status_time_idx"),
            models.Index(fields=["event_type", "received_at"], name="webhook_type_time_idx"),
            models.Index(fields=["object_id", "received_at"], name="webhook_object_time_idx"),
        ]

    def __str__(self):
        return f"{self.provider}:{self.event_id} {self.event_type}"


class ProviderObjectVersion(TimestampedModel):
    """The newest event applied for each provider object (a subscription, an invoice, a checkout
    session, a customer...). Events arrive in any order: one created before the applied one is stale
    and changes nothing. The row is also the lock that makes the events of one object (invoice.paid
    and invoice.payment_succeeded at once) apply one after the other."""

    provider = models.CharField(max_length=16, choices=WebhookProvider.choices, default=WebhookProvider.STRIPE)
    object_id = models.CharField(max_length=255)
    object_type = models.CharField(max_length=64)
    event_created_at = models.DateTimeField(null=True, blank=True)
    event_id = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [
            choices_check("provider", WebhookProvider),
            models.UniqueConstraint(fields=["provider", "object_id"], name="provider_object_version_unique"),
        ]

    def __str__(self):
        return f"{self.object_type} {self.object_id} @ {self.event_created_at}"


class PaymentEvent(AppendOnlyModel):
    """One row per payment-relevant event (checkout, invoice, charge, refund...). Append-only;
    survives the deletion of its user (user set to NULL) for the financial record."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="payment_events",
        db_index=False,
    )
    event_type = models.CharField(max_length=64, help_text="e.g. checkout_completed, invoice_paid")
    plan_code = models.CharField(max_length=32, blank=True)
    customer_id = models.CharField(max_length=255, blank=True)
    invoice_id = models.CharField(max_length=255, blank=True)
    subscription_id = models.CharField(max_length=255, blank=True)
    amount = models.BigIntegerField(
        null=True, blank=True, help_text="In the currency's minor units (cents, yen, fils), as the provider reports it."
    )
    currency = models.CharField(max_length=3, blank=True, help_text="ISO 4217 code, lower case (usd, eur, jpy).")
    metadata = models.JSONField(default=dict, blank=True)
    webhook_event = models.ForeignKey(
        WebhookEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="payment_events"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "created_at"], name="payment_event_user_time_idx"),
            models.Index(fields=["event_type", "created_at"], name="payment_event_type_time_idx"),
            models.Index(fields=["created_at"], name="payment_event_time_idx"),
            models.Index(fields=["invoice_id", "event_type"], name="payment_event_invoice_idx"),
        ]

    def __str__(self):
        return f"{self.event_type} {self.amount} {self.currency}"


class StripeCustomer(TimestampedModel):
    """The one Stripe customer of a user, created once and reused by every checkout, charge and
    portal session."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="stripe_customer")
    stripe_customer_id = models.CharField(max_length=255, unique=True)

    def __str__(self):
        return self.stripe_customer_id


class OperationKind(models.TextChoices):
    """What an operation does. Its effect is registered by the app that owns the subject."""

    SUBSCRIPTION_CHECKOUT = "subscription_checkout"
    LICENSE_CHECKOUT = "license_checkout"
    LICENSE_UPGRADE_CHECKOUT = "license_upgrade_checkout"
    UPGRADE_CHARGE = "upgrade_charge"
    RENEWAL_CHARGE = "renewal_charge"
    DUNNING_RETRY = "dunning_retry"
    REFUND = "refund"
    SUBSCRIPTION_SYNC = "subscription_sync"
    CREDIT_PACK_CHECKOUT = "credit_pack_checkout"
    CREDIT_RECHARGE = "credit_recharge"


CHECKOUT_KINDS = (
    OperationKind.SUBSCRIPTION_CHECKOUT,
    OperationKind.LICENSE_CHECKOUT,
    OperationKind.LICENSE_UPGRADE_CHECKOUT,
    OperationKind.CREDIT_PACK_CHECKOUT,
)
CHARGE_KINDS = (
    OperationKind.UPGRADE_CHARGE,
    OperationKind.RENEWAL_CHARGE,
    OperationKind.DUNNING_RETRY,
    OperationKind.CREDIT_RECHARGE,
)


class OperationState(models.TextChoices):
    PENDING = "pending", "Pending (nothing asked of the provider yet, or asked without an answer)"
    SUBMITTED = "submitted", "Submitted (the provider has it; waiting for the money or its answer)"
    SUCCEEDED = "succeeded", "Succeeded (money moved and its effect applied)"
    FAILED = "failed", "Failed (no money moved, or it was returned)"
    NEEDS_ATTENTION = "needs_attention", "Needs attention (could not be settled automatically)"


UNFINISHED_STATES = (OperationState.PENDING, OperationState.SUBMITTED)
STUCK_STATES = (OperationState.SUBMITTED, OperationState.NEEDS_ATTENTION)


class OperationEffect(models.TextChoices):
    """Which of its effects an operation applied (once): `succeeded` or `failed`."""

    NONE = "", "None yet"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class OperationCleanup(models.TextChoices):
    """What is still owed at the provider after the effect was decided (retried by reconcile)."""

    NONE = "", "Nothing"
    VOID_INVOICE = "void_invoice", "Void the unpaid invoice"
    REFUND = "refund", "Refund money that arrived for an effect that no longer applies"
    EXPIRE_CHECKOUT = "expire_checkout", "Expire the abandoned checkout session"


class PaymentOperation(TimestampedModel):
    """One movement of money (or one change the provider must mirror), recorded before the provider
    is asked anything.

    Invariants: the row commits before any provider call; every provider request of the operation
    carries the idempotency key `<id>:<step>`, so any retry (the client's, Celery's, an operator's)
    reaches the same provider objects; at most one provider invoice is ever paid per operation (pay is
    only called on the invoice recorded here); the domain effect is applied once, in the transaction
    that moves the state to `succeeded`. State: pending -> submitted -> succeeded | failed |
    needs_attention.
    """

    kind = models.CharField(max_length=32, choices=OperationKind.choices)
    state = models.CharField(max_length=16, choices=OperationState.choices, default=OperationState.PENDING)
    provider = models.CharField(max_length=16, choices=WebhookProvider.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="payment_operations",
        db_index=False,
    )
    subject_type = models.CharField(
        max_length=64, help_text="What the operation is about, e.g. subscriptions.subscription."
    )
    subject_id = models.CharField(max_length=64)
    natural_key = models.CharField(
        max_length=200, unique=True, help_text="Opening the same operation twice finds this row instead."
    )
    amount = models.BigIntegerField(default=0, help_text="In the currency's minor units (cents, yen, fils).")
    currency = models.CharField(max_length=3, default="usd", help_text="ISO 4217 code, lower case.")
    description = models.CharField(max_length=255, blank=True)
    params = models.JSONField(default=dict, blank=True, help_text="What the provider steps and the effect need.")
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    stripe_checkout_session_id = models.CharField(max_length=255, blank=True)
    stripe_invoice_id = models.CharField(max_length=255, blank=True)
    stripe_payment_intent_id = models.CharField(max_length=255, blank=True)
    stripe_refund_id = models.CharField(max_length=255, blank=True)
    stripe_objects = models.JSONField(default=dict, blank=True, help_text="Other provider ids, by step.")
    effect = models.CharField(max_length=10, choices=OperationEffect.choices, blank=True)
    cleanup_due = models.CharField(max_length=20, choices=OperationCleanup.choices, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Runs of the provider steps so far.")
    run_lease_until = models.DateTimeField(
        null=True, blank=True, help_text="A run of the provider steps is under way until then (one at a time)."
    )
    last_error = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True, help_text="What the effect returned.")
    submitted_at = models.DateTimeField(null=True, blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            choices_check("kind", OperationKind),
            choices_check("state", OperationState),
            choices_check("provider", WebhookProvider),
            choices_check("effect", OperationEffect),
            choices_check("cleanup_due", OperationCleanup),
            models.CheckConstraint(condition=Q(amount__gte=0), name="payment_operation_amount_not_negative"),
            # One charge or refund at a time for the same thing: a retry without an idempotency key
            # finds the unfinished one instead of charging again.
            models.UniqueConstraint(
                fields=["kind", "subject_type", "subject_id"],
                condition=Q(state__in=UNFINISHED_STATES) & Q(kind__in=(*CHARGE_KINDS, OperationKind.REFUND)),
                name="payment_operation_one_unfinished_charge",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "updated_at"], name="payment_op_state_idx"),
            models.Index(fields=["subject_type", "subject_id", "state"], name="payment_op_subject_idx"),
            models.Index(fields=["user", "created_at"], name="payment_op_user_time_idx"),
            models.Index(fields=["stripe_invoice_id"], name="payment_op_invoice_idx"),
            models.Index(fields=["stripe_checkout_session_id"], name="payment_op_session_idx"),
        ]

    def __str__(self):
        return f"{self.kind} {self.amount_decimal} {self.currency} ({self.state})"

    @property
    def amount_decimal(self) -> Decimal:
        """The amount in the currency's major unit (USD 19.00, JPY 2900, KWD 19.005)."""
        return minor_to_major(self.amount, self.currency)

    def idempotency_key(self, step: str) -> str:
        return f"op_{self.pk}:{step}"


class PaymentStatus(models.TextChoices):
    SUCCEEDED = "succeeded"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


class DisputeStatus(models.TextChoices):
    NONE = "", "No dispute"
    OPEN = "open", "Open (access suspended)"
    WON = "won", "Won (access restored)"
    LOST = "lost", "Lost (treated as a full refund)"


class Payment(TimestampedModel):
    """Money a customer paid: one row per provider payment (a paid checkout, a paid invoice), what
    refunds and disputes are matched to, by charge, payment intent or invoice.

    Invariants: amounts are in the minor units of `currency`; 0 <= amount_refunded <= amount and the
    refunded amount only grows (an older event reporting less changes nothing); at most one row per
    payment intent, charge, invoice and checkout session. `kind` and `object_id` say what the money
    bought (the operation kind; the subscription, license or invoice its effect made), which is how
    the owning app's reaction to a refund or a dispute is found (payments.registry)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="payments_received",
        db_index=False,
    )
    kind = models.CharField(max_length=32, choices=OperationKind.choices, help_text="What the money paid for.")
    object_id = models.CharField(
        max_length=64, blank=True, help_text="What the payment's effect made or renewed (subscription, license...)."
    )
    operation = models.ForeignKey(
        PaymentOperation, null=True, blank=True, on_delete=models.SET_NULL, related_name="payments"
    )
    provider = models.CharField(max_length=16, choices=WebhookProvider.choices)
    amount = models.BigIntegerField(help_text="Paid, in the currency's minor units (cents, yen, fils).")
    amount_refunded = models.BigIntegerField(default=0, help_text="Refunded so far, in the same minor units.")
    currency = models.CharField(max_length=3, help_text="ISO 4217 code, lower case.")
    status = models.CharField(max_length=20, choices=PaymentStatus.choices, default=PaymentStatus.SUCCEEDED)
    dispute_status = models.CharField(max_length=8, choices=DisputeStatus.choices, blank=True)
    stripe_payment_intent_id = models.CharField(max_length=255, blank=True)
    stripe_charge_id = models.CharField(max_length=255, blank=True)
    stripe_invoice_id = models.CharField(max_length=255, blank=True)
    stripe_checkout_session_id = models.CharField(max_length=255, blank=True)
    refunds = models.JSONField(
        default=dict, blank=True, help_text="Each provider refund seen: {refund id: {amount, status}}."
    )
    disputes = models.JSONField(default=dict, blank=True, help_text="Each provider dispute seen: {dispute id: status}.")
    paid_at = models.DateTimeField()

    class Meta:
        constraints = [
            choices_check("kind", OperationKind),
            choices_check("provider", WebhookProvider),
            choices_check("status", PaymentStatus),
            choices_check("dispute_status", DisputeStatus),
            models.CheckConstraint(
                condition=Q(amount__gte=0) & Q(amount_refunded__gte=0) & Q(amount_refunded__lte=F("amount")),
                name="payment_received_amounts_valid",
            ),
            *(
                models.UniqueConstraint(
                    fields=[name], condition=~Q(**{name: ""}), name=f"payment_received_unique_{short}"
                )
                for name, short in (
                    ("stripe_payment_intent_id", "intent"),
                    ("stripe_charge_id", "charge"),
                    ("stripe_invoice_id", "invoice"),
                    ("stripe_checkout_session_id", "session"),
                )
            ),
        ]
        indexes = [
            models.Index(fields=["paid_at", "currency"], name="payment_received_time_idx"),
            models.Index(fields=["user", "paid_at"], name="payment_received_user_idx"),
        ]

    def __str__(self):
        return f"{self.amount_major} {self.currency} ({self.status})"

    @property
    def amount_major(self) -> Decimal:
        return minor_to_major(self.amount, self.currency)

    @property
    def amount_refunded_major(self) -> Decimal:
        return minor_to_major(self.amount_refunded, self.currency)
