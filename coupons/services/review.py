"""Staff review of fraud detections: each is closed with what was decided, audited."""

from django.db import transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_model_change, snapshot
from billing_project.errors import Conflict, NotFound, RuleViolation
from coupons.codes import ErrorCode
from coupons.models import CouponFraudDetection


@transaction.atomic
def fraud_detection_resolve(*, detection_id, actor, resolution: str) -> CouponFraudDetection:
    """Staff close a detection with what they decided; audited."""
    resolution = (resolution or "").strip()
    if not resolution:
        raise RuleViolation("Say how this detection was resolved.", code=ErrorCode.RESOLUTION_REQUIRED)
    detection = CouponFraudDetection.objects.select_for_update().filter(pk=detection_id).first()
    if detection is None:
        raise NotFound("No fraud detection with this id.", code=ErrorCode.DETECTION_NOT_FOUND)
    if detection.resolved_at is not None:
        raise Conflict("This detection is already resolved.", code=ErrorCode.ALREADY_RESOLVED)
    previous = snapshot(detection)
    detection.is_flagged = False
    detection.resolved_at = timezone.now()
    detection.resolved_by = actor
    detection.resolution = resolution
    detection.save()
    audit_model_change(action=AuditAction.RESOLVE, instance=detection, previous_value=previous, actor=actor)
    return detection
