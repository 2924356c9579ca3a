from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.utils import timezone

from billing_project.email_verification import email_is_verified, email_verification_token
from billing_project.models import IdempotencyKey


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
