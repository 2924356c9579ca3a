from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives, send_mail
from django.template.loader import render_to_string
from django.utils import timezone

from billing_project.email_verification import email_is_verified, email_verification_token
from billing_project.models import IdempotencyKey, Notification
from billing_project.webhook_delivery import webhook_deliveries_send_due as deliveries_send_due
from billing_project.webhook_delivery import webhook_event_deliver as event_deliver


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def purge_idempotency_keys() -> int:
    """Idempotency keys are kept IDEMPOTENCY_KEY_TTL; older ones go."""
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=timezone.now() - settings.IDEMPOTENCY_KEY_TTL).delete()
    return deleted


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_email_verification(user_id: int, link_template: str) -> bool:
    """The verification link for the user's current address; nothing for a deleted user or an
    address verified meanwhile. Retried when the mail server does not answer."""
    user = get_user_model()._default_manager.filter(pk=user_id, is_active=True).first()
    if user is None or not user.email or email_is_verified(user=user):
        return False
    context = {
        "link": link_template.replace("{token}", email_verification_token(user=user)),
        "hours": int(settings.EMAIL_VERIFICATION_MAX_AGE.total_seconds() // 3600),
    }
    send_mail(
        subject=render_to_string("accounts/email/verify_email_subject.txt", context).strip(),
        message=render_to_string("accounts/email/verify_email.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[user.email],
    )
    return True


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def notification_email_send(notification_id: str) -> bool:
    """The notification's e-mail (text and HTML), once. The row is claimed (emailed_at set) before
    the mail server is called, outside any transaction; a failed send gives the claim back, so the
    retry sends it and two runs of the task never both do."""
    claimed = Notification.objects.filter(pk=notification_id, emailed_at__isnull=True).update(emailed_at=timezone.now())
    if not claimed:
        return False
    notification = Notification.objects.select_related("user").get(pk=notification_id)
    recipients = [notification.user.email] if notification.user else staff_notification_recipients()
    recipients = [address for address in recipients if address]
    if not recipients:
        return False
    context = {**notification.context, "user": notification.user, "kind": notification.kind}
    template = "notifications/email/" + notification.kind.replace(".", "_")
    message = EmailMultiAlternatives(
        subject=render_to_string(f"{template}_subject.txt", context).strip(),
        body=render_to_string(f"{template}.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
    )
    message.attach_alternative(render_to_string(f"{template}.html", context), "text/html")
    try:
        message.send()
    except Exception:
        Notification.objects.filter(pk=notification_id).update(emailed_at=None)
        raise
    return True


def staff_notification_recipients() -> list[str]:
    """STAFF_NOTIFICATION_EMAILS, or else every active superuser's address."""
    if settings.STAFF_NOTIFICATION_EMAILS:
        return list(settings.STAFF_NOTIFICATION_EMAILS)
    users = get_user_model()._default_manager.filter(is_superuser=True, is_active=True).exclude(email="")
    return list(users.values_list("email", flat=True))


@shared_task(acks_late=True)
def webhook_event_deliver(event_id: str) -> dict:
    """The event's deliveries, right after the change committed. Not retried by Celery: a failed
    attempt is rescheduled on its row, and the beat job sends it when due."""
    return event_deliver(event_id=event_id)


@shared_task(acks_late=True)
def webhook_deliveries_send_due() -> dict:
    """Every minute: every pending delivery whose time has come."""
    return deliveries_send_due()
