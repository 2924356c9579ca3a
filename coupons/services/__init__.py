"""Writes of the coupons app, one business operation per function, by module: `redemption` (a
customer validates and redeems a code; code guessing), `checkout` (coupons held by a subscription
checkout), `review` (staff resolve fraud detections), `campaigns` (staff manage coupons and campaigns,
generate codes, seed the demo) and `analytics` (daily snapshots). Reads are in `coupons.selectors`."""
