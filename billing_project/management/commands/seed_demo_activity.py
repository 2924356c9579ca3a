from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from billing_project.demo_activity import DemoRefused, demo_activity_seed


class Command(BaseCommand):
    help = (
        "Development only: five weeks of demo customers, subscriptions, renewals, usage, coupons and payments, "
        "lived day by day through the services and the offline payment provider. Idempotent: does nothing once "
        "its customers exist."
    )

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="Run even with DEBUG off.")

    def handle(self, *args, force: bool = False, **options):
        if not settings.DEBUG and not force:
            raise CommandError("seed_demo_activity writes demo customers: it runs with DEBUG on, or with --force.")
        try:
            activity = demo_activity_seed()
        except DemoRefused as refused:
            raise CommandError(str(refused)) from refused
        if activity is None:
            self.stdout.write("The demo customers exist already: nothing to do.")
            return
        self.stdout.write(
            f"Created {activity.customers} demo customers over {activity.days} days: "
            f"{activity.subscriptions} subscriptions, {activity.renewals} paid renewals "
            f"({activity.declined_payments} declined first and paid by a dunning retry), "
            f"{activity.usage_events} usage events, {activity.redemptions} coupon redemptions, "
            f"{activity.grants} staff grants and {activity.refunds} refund."
        )
