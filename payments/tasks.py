"""Payments' periodic job (scheduled in CELERY_BEAT_SCHEDULE)."""

from celery import shared_task

from payments.services.reconcile import payments_reconcile


@shared_task(acks_late=True)
def reconcile_payments() -> dict:
    # No automatic retry: each operation is its own unit and the next run (minutes later) takes up
    # whatever this one could not settle.
    return dict(payments_reconcile())
