"""Reads of the coupons app, by module: `validation` (finding a coupon, the validation steps of SPEC 4
in their order), `fraud` (the fraud signals around a redemption, code guessing), `reports` (the staff
lists and the performance report) and `checkout` (holds of abandoned checkouts). Nothing here writes:
redemption (`coupons.services.redemption`) runs these same checks again under the coupon's row lock."""
