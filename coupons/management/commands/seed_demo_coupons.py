from django.core.management.base import BaseCommand

from coupons.services.campaigns import DEMO_COUPONS, demo_coupons_seed


class Command(BaseCommand):
    help = "Development only: a demo campaign with one coupon of each kind. Idempotent."

    def handle(self, *args, **options):
        created = demo_coupons_seed()
        codes = ", ".join(fields["code"] for fields in DEMO_COUPONS)
        self.stdout.write(f"Created {created} demo coupons ({codes}).")
