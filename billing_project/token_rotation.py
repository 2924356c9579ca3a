"""Refresh-token rotation: each refresh token is exchanged once, and a second use ends its family.

A sign-in starts a family; each refresh blacklists the token presented and issues the next one,
which carries the family's id (the jti of its first token) in the `family` claim. The presented
token's row in simplejwt's OutstandingToken table is locked while it is checked and blacklisted,
so of any number of parallel refreshes with one token exactly one succeeds. A token presented after
it was rotated means two holders (a retry racing, or a thief): the whole family is revoked and
every later refresh in it refused, as the OAuth 2.0 security best practice asks.
"""

import logging
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework import exceptions
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken, Token
from rest_framework_simplejwt.utils import datetime_from_epoch

from billing_project.auth import OTP_CLAIM
from billing_project.codes import ErrorCode
from billing_project.models import RevokedTokenFamily

logger = logging.getLogger(__name__)

FAMILY_CLAIM = "family"


class _PresentedRefreshToken(RefreshToken):
    """A refresh token checked for signature, expiry and type only: whether it was already used is
    decided under the row lock, where a reuse can revoke the family."""

    def verify(self):
        Token.verify(self)


@dataclass(frozen=True)
class TokenPair:
    access: str
    refresh: str


def _presented(raw: str) -> _PresentedRefreshToken:
    try:
        return _PresentedRefreshToken(raw)
    except TokenError as error:
        raise exceptions.AuthenticationFailed(str(error), code=ErrorCode.TOKEN_NOT_VALID) from None


def token_pair_issue(*, user, second_factor_verified: bool) -> TokenPair:
    """The first pair of a sign-in, which starts its family. A sign-in proven with a second factor
    says so in both tokens (and in every pair rotated from them): staff permissions require it."""
    refresh = RefreshToken.for_user(user)
    if second_factor_verified:
        refresh[OTP_CLAIM] = True
    return TokenPair(access=str(refresh.access_token), refresh=str(refresh))


def refresh_token_rotate(*, raw: str) -> TokenPair:
    """A new access token and the family's next refresh token for `raw`, or a 401."""
    token = _presented(raw)
    user_id = token.get(api_settings.USER_ID_CLAIM)
    # An erased or deactivated user's tokens refresh nothing (and leave no row behind).
    user = get_user_model()._default_manager.filter(pk=user_id, is_active=True).first() if user_id else None
    if user is None:
        raise exceptions.AuthenticationFailed(
            "No active account found for the given token.", code=ErrorCode.NO_ACTIVE_ACCOUNT
        )
    with transaction.atomic():
        rotated = _rotate(token, user)
    # Refused only now, outside the transaction: a family's revocation has committed.
    if rotated == ErrorCode.TOKEN_REUSED:
        raise exceptions.AuthenticationFailed(
            "This refresh token was already used: its sign-in is revoked. Sign in again.", code=ErrorCode.TOKEN_REUSED
        )
    if rotated == ErrorCode.TOKEN_REVOKED:
        raise exceptions.AuthenticationFailed(
            "This refresh token's sign-in was revoked. Sign in again.", code=ErrorCode.TOKEN_REVOKED
        )
    return rotated


def _rotate(token: _PresentedRefreshToken, user) -> TokenPair | str:
    """The next pair, or why not: "token_revoked" (its family ended) or "token_reused"."""
    jti = token[api_settings.JTI_CLAIM]
    family = token.get(FAMILY_CLAIM) or jti
    outstanding, _ = OutstandingToken.objects.get_or_create(
        jti=jti,
        defaults={"user": user, "token": str(token), "expires_at": datetime_from_epoch(token["exp"])},
    )
    # The lock: parallel refreshes with one token queue here, and only the first finds it unused.
    outstanding = OutstandingToken.objects.select_for_update().get(pk=outstanding.pk)
    if BlacklistedToken.objects.filter(token=outstanding).exists():
        _, revoked = RevokedTokenFamily.objects.get_or_create(
            family=family, defaults={"user": user, "reason": "A rotated refresh token was presented again."}
        )
        if revoked:
            logger.warning("refresh token reused: token family of user %s revoked", user.pk)
        return ErrorCode.TOKEN_REUSED
    if RevokedTokenFamily.objects.filter(family=family).exists():
        return ErrorCode.TOKEN_REVOKED
    BlacklistedToken.objects.create(token=outstanding)
    token[FAMILY_CLAIM] = family
    token.set_jti()
    token.set_exp()
    token.set_iat()
    token.outstand()
    return TokenPair(access=str(token.access_token), refresh=str(token))
