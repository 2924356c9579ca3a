from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from payments.models import OperationState
from payments.selectors import operations_stuck
from payments.services.reconcile import payments_reconcile


class Command(BaseCommand):
    help = (
        "Lists payment operations stuck in submitted or needs_attention; with --fix, settles each from "
        "what Stripe says of its objects (paid: the effect applied once; never paid: voided and failed)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--fix", action="store_true", help="Settle what can be settled now.")

    def handle(self, *args, fix: bool = False, **options):
        if fix:
            outcomes = payments_reconcile(progress=lambda items: tqdm(items, disable=not items, file=self.stderr))
            summary = ", ".join(f"{state}: {count}" for state, count in sorted(outcomes.items())) or "nothing to settle"
            self.stdout.write(f"Settled ({summary}).")
        now = timezone.now()
        stuck = list(operations_stuck())
        for operation in stuck:
            age = now - operation.created_at
            self.stdout.write(
                f"{operation.pk} {operation.kind} {operation.state} {operation.amount_decimal} {operation.currency} "
                f"user={operation.user_id} age={age.days}d{age.seconds // 3600}h "
                f"cleanup={operation.cleanup_due or '-'} error={operation.last_error[:120] or '-'}"
            )
        attention = sum(1 for operation in stuck if operation.state == OperationState.NEEDS_ATTENTION)
        self.stdout.write(f"{len(stuck)} operation(s) waiting on the provider or needing attention.")
        if attention:
            raise CommandError(f"{attention} operation(s) need attention.")
