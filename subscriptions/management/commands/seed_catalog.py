from django.core.management.base import BaseCommand
from django.db import transaction

from credits.services import pricing_catalog_seed
from credits.services.packs import credit_pack_catalog_seed
from subscriptions.services import tier_catalog_seed


class Command(BaseCommand):
    help = "Loads the tiers, providers, model prices, tier margins and credit packs. Idempotent: existing rows stay."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Show what would be created, change nothing.")

    def handle(self, *args, dry_run: bool = False, **options):
        with transaction.atomic():
            tiers = tier_catalog_seed()
            pricing = pricing_catalog_seed()
            packs = credit_pack_catalog_seed()
            if dry_run:
                transaction.set_rollback(True)
        prefix = "Would create" if dry_run else "Created"
        self.stdout.write(
            f"{prefix} {tiers} tiers, {pricing['providers']} providers, {pricing['model_prices']} model prices, "
            f"{pricing['tier_margins']} tier margins, {packs} credit packs."
        )
