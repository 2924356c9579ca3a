"""The instance a LiteLLM proxy's config.yaml names: `callbacks: rephlo_litellm.proxy.credit_billing`.

Configured from the environment: REPHLO_BILLING_URL, REPHLO_SERVICE_TOKEN, REPHLO_BILLING_TIMEOUT.
"""

from rephlo_litellm.callback import CreditBilling

credit_billing = CreditBilling()
