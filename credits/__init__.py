"""Usage credits: vendor prices and margins, grants, balances, holds and the append-only ledgers.

One door to every balance: every change goes through `credits.services.accounts.LockedAccount`, which
locks the user's balance row and writes it with the change's ledger rows in the caller's transaction.
The ledger is the history of balances and grants: django-auditlog does not track `UserCreditBalance`
or `UserCreditSource` (the console links a balance to its ledger rows), so the object history never
shows some balance changes and not others.

Credits sits below subscriptions: subscriptions pushes each user's tier and live subscription to the
balance row (`credits.services.account_tier_set`), usage prices at what it finds there, and the ledgers
keep subscriptions' ids as plain ids.
"""
