"""E-mail verification by a signed link.

The link carries `{"user": id, "email": address}` signed with SECRET_KEY (Django's signing, salted
for this use) and is valid EMAIL_VERIFICATION_MAX_AGE. Following it, or posting its token, records
the address as verified; an altered or expired token, or one for an address the user no longer
has, is refused. Rules that trust an address (a coupon for an e-mail domain) wait for it, and so,
with FREE_OFFERS_REQUIRE_VERIFIED_EMAIL, do a sign-up's free credits and trials: the apps that give
something for a verified address listen to `email_verified`.
"""

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from billing_project.codes import ErrorCode
from billing_project.errors import DomainError
from billing_project.models import VerifiedEmail

logger = logging.getLogger(__name__)

SALT = "billing_project.email-verification"

# Sent with `user` inside the transaction that records a newly verified address.
email_verified = Signal()


class VerificationTokenInvalid(DomainError):
    code = ErrorCode.VERIFICATION_TOKEN_INVALID
    title = "Bad request"


class VerificationTokenExpired(DomainError):
    code = ErrorCode.VERIFICATION_TOKEN_EXPIRED
    title = "Bad request"


def _address(email: str) -> str:
    return (email or "").strip().lower()


def email_verification_token(*, user) -> str:
    return signing.dumps({"user": user.pk, "email": _address(user.email)}, salt=SALT)


def email_is_verified(*, user) -> bool:
    """Whether the user's current address is the one they proved."""
    if not getattr(user, "email", ""):
        return False
    return VerifiedEmail.objects.filter(user_id=user.pk, email=_address(user.email)).exists()


def email_verification_send(*, user, link_template: str) -> bool:
    """Sends the link (`link_template` with `{token}` in it) once the current transaction commits,
    and says whether it did. Nothing is sent for an address already verified."""
    from billing_project.tasks import send_email_verification

    if email_is_verified(user=user):
        return False
    # robust: an e-mail that cannot be queued is logged, and never undoes the committed sign-up.
    transaction.on_commit(lambda: send_email_verification.delay(user.pk, link_template), robust=True)
    return True


@transaction.atomic
def email_verify(*, token: str) -> VerifiedEmail:
    """Records the address a valid token names as the user's verified one. Idempotent."""
    try:
        claims = signing.loads(token, salt=SALT, max_age=settings.EMAIL_VERIFICATION_MAX_AGE)
    except signing.SignatureExpired:
        raise VerificationTokenExpired("This verification link has expired: ask for a new one.") from None
    except signing.BadSignature:
        raise VerificationTokenInvalid("This verification link is not valid.") from None
    user_model = get_user_model()
    # The user row is the lock: one verification at a time, so the signal is sent once.
    user = user_model._default_manager.select_for_update().filter(pk=claims.get("user")).first()
    if user is None or not user.is_active or _address(user.email) != claims.get("email"):
        raise VerificationTokenInvalid("This verification link is for an address this account no longer has.")
    verified = VerifiedEmail.objects.filter(user=user).first()
    if verified is not None and verified.email == claims["email"]:
        return verified
    verified, _ = VerifiedEmail.objects.update_or_create(
        user=user, defaults={"email": claims["email"], "verified_at": timezone.now()}
    )
    logger.info("user %s verified their e-mail address", user.pk)
    email_verified.send(sender=VerifiedEmail, user=user)
    return verified
