"""The fraud signals around a redemption (SPEC 4) and the unknown codes a caller tried (code
guessing). Read from the redemptions and guesses already recorded."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings

from coupons.models import (
    Coupon,
    CouponCodeGuess,
    CouponRedemption,
    FraudDetectionType,
    FraudSeverity,
    RedemptionStatus,
)

BLOCKING = (FraudSeverity.HIGH, FraudSeverity.CRITICAL)
VELOCITY_WINDOW = timedelta(hours=1)
DEVICE_ACCOUNTS_WINDOW = timedelta(days=30)
IP_ACCOUNTS_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class FraudSignal:
    detection_type: FraudDetectionType
    severity: FraudSeverity
    details: dict

    @property
    def blocks(self) -> bool:
        return self.severity in BLOCKING


def _level(count: int, levels: tuple[int, int]) -> FraudSeverity | None:
    flag, block = levels
    if count >= block:
        return FraudSeverity.HIGH
    if count >= flag:
        return FraudSeverity.MEDIUM
    return None


def fraud_signals(*, coupon: Coupon, user, client, now: datetime) -> list[FraudSignal]:
    """The patterns SPEC 4 names, from the redemptions already recorded: velocity per user, device
    and IP; several accounts redeeming this coupon from one device, or anything from one IP. Unknown
    codes tried again and again (guessing) are checked before any lookup: `code_guessing`."""
    signals = []
    succeeded = CouponRedemption.objects.filter(status=RedemptionStatus.SUCCESS)
    recent = succeeded.filter(redemption_date__gte=now - VELOCITY_WINDOW)

    def velocity(detection_type, count, levels, **details):
        severity = _level(count, levels)
        if severity is not None:
            signals.append(FraudSignal(detection_type, severity, {"redemptions_last_hour": count, **details}))

    velocity(FraudDetectionType.VELOCITY_USER, recent.filter(user=user).count(), settings.COUPON_VELOCITY_USER)
    if client.device_fingerprint:
        device = client.device_fingerprint
        velocity(
            FraudDetectionType.VELOCITY_DEVICE,
            recent.filter(device_fingerprint=device).count(),
            settings.COUPON_VELOCITY_DEVICE,
        )
        others = (
            succeeded.filter(
                coupon=coupon, device_fingerprint=device, redemption_date__gte=now - DEVICE_ACCOUNTS_WINDOW
            )
            .exclude(user=user)
            .values("user")
            .distinct()
            .count()
        )
        if others:
            severity = FraudSeverity.HIGH if others >= settings.COUPON_ACCOUNTS_PER_DEVICE else FraudSeverity.MEDIUM
            signals.append(
                FraudSignal(FraudDetectionType.MULTIPLE_ACCOUNTS_DEVICE, severity, {"other_accounts": others})
            )
    if client.ip:
        velocity(
            FraudDetectionType.VELOCITY_IP, recent.filter(ip_address=client.ip).count(), settings.COUPON_VELOCITY_IP
        )
        others = (
            succeeded.filter(ip_address=client.ip, redemption_date__gte=now - IP_ACCOUNTS_WINDOW)
            .exclude(user=user)
            .values("user")
            .distinct()
            .count()
        )
        if others >= settings.COUPON_ACCOUNTS_PER_IP_FLAG:
            signals.append(
                FraudSignal(FraudDetectionType.MULTIPLE_ACCOUNTS_IP, FraudSeverity.MEDIUM, {"other_accounts": others})
            )
    return signals


@dataclass(frozen=True)
class Guessing:
    """Unknown codes tried in the last hour by one user, and from their address by anyone."""

    by_user: int
    from_ip: int

    @property
    def blocked(self) -> bool:
        """The guesser is blocked, not the address: another account there that tried no unknown
        code is served, while accounts guessing together from one address are all blocked."""
        block = settings.COUPON_GUESSING[1]
        return self.by_user >= block or (self.by_user > 0 and self.from_ip >= block)


def code_guessing(*, user, client, now: datetime) -> Guessing:
    recent = CouponCodeGuess.objects.filter(tried_at__gte=now - VELOCITY_WINDOW)
    by_user = recent.filter(user=user).count()
    from_ip = recent.filter(ip_address=client.ip).count() if client.ip and by_user else 0
    return Guessing(by_user=by_user, from_ip=from_ip)
