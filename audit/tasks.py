"""The audit chain's sealer, on the beat schedule (CELERY_BEAT_SCHEDULE, every few seconds)."""

from celery import shared_task

from audit.services import audit_chain_seal


@shared_task(acks_late=True)
def seal_audit_chain() -> int:
    # Runs overlapping or twice are harmless: sealers take turns on the chain head's lock.
    return audit_chain_seal().sealed
