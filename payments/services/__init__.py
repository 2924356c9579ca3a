"""Writes of the payments app: the operations that move money, the customer, the webhook inbox."""
