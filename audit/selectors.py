from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Min
from django.utils import timezone

from audit.models import ADMIN_AUDIT_CHAIN, GENESIS_HASH, AdminAuditLog, AuditChainHead


@dataclass(frozen=True)
class ChainBreak:
    sequence: int
    row_id: str | None
    reason: str

    def __str__(self):
        row = f" (row {self.row_id})" if self.row_id else ""
        return f"sequence {self.sequence}{row}: {self.reason}"


def audit_chain_verify(*, chunk_size: int = 2000, on_row: Callable[[], object] | None = None) -> ChainBreak | None:
    """Walks the sealed rows in chain order and returns the first broken link, or None if the chain
    is whole. `on_row` is called once per row read (a progress bar's update)."""
    expected_sequence, expected_prev = 1, GENESIS_HASH
    sealed = AdminAuditLog.objects.filter(sequence__isnull=False).order_by("sequence")
    for row in sealed.iterator(chunk_size=chunk_size):
        if on_row is not None:
            on_row()
        if row.sequence != expected_sequence:
            return ChainBreak(
                expected_sequence, None, f"row missing (the next row present is #{row.sequence}, {row.id})"
            )
        if row.prev_hash != expected_prev:
            return ChainBreak(row.sequence, str(row.id), "does not link to the row before it (removed or reordered)")
        if row.compute_hash() != row.row_hash:
            return ChainBreak(row.sequence, str(row.id), "content was changed after it was written")
        expected_sequence, expected_prev = row.sequence + 1, row.row_hash
    head = AuditChainHead.objects.filter(chain=ADMIN_AUDIT_CHAIN).first()
    last_sequence = expected_sequence - 1
    if head is not None and (head.sequence != last_sequence or head.row_hash != expected_prev):
        return ChainBreak(head.sequence, None, f"the newest rows are missing (the chain ends at #{last_sequence})")
    return None


@dataclass(frozen=True)
class UnsealedRows:
    count: int
    oldest: datetime | None


def audit_rows_unsealed(*, older_than: timedelta) -> UnsealedRows:
    """Committed rows still unsealed `older_than` after they were written: none while the sealer runs."""
    figures = AdminAuditLog.objects.filter(sequence__isnull=True, created_at__lt=timezone.now() - older_than).aggregate(
        count=Count("id"), oldest=Min("created_at")
    )
    return UnsealedRows(count=figures["count"], oldest=figures["oldest"])
