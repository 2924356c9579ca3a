"""Credits billing for LiteLLM: a callback that reserves, records and releases credits on the billing backend."""

from rephlo_litellm.callback import CreditBilling, request_id_for
from rephlo_litellm.client import BillingBackend, BillingError, BillingUnavailable, CreditsRefused

__all__ = ["BillingBackend", "BillingError", "BillingUnavailable", "CreditBilling", "CreditsRefused", "request_id_for"]
