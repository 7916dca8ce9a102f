-- The expiry job marks coupons past their expiry in batches; this index finds them without
-- scanning every coupon ever issued.
CREATE INDEX coupons_by_expiry ON coupons (status, expires_at);
