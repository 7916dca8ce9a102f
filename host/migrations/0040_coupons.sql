-- Coupon templates (what a coupon does, applied by a coupon-logic plugin) and coupon instances
-- (one per member, with a unique hard-to-guess code).

CREATE TABLE coupon_templates (
    id TEXT PRIMARY KEY,                       -- e.g. 'cinema-ticket-half', 'spend-200-get-30'
    title TEXT NOT NULL,
    funding_brand TEXT NOT NULL REFERENCES brands (id),
    honouring_brand TEXT NOT NULL REFERENCES brands (id),
    plugin TEXT NOT NULL,                      -- the plugin whose apply-coupon applies it
    params TEXT NOT NULL DEFAULT '{}',         -- JSON object string -> string, passed to the plugin
    exclusive BIGINT NOT NULL DEFAULT 0 CHECK (exclusive IN (0, 1)),  -- 1: never combined with another
    validity_days BIGINT NOT NULL CHECK (validity_days > 0),
    value_cents BIGINT NOT NULL DEFAULT 0 CHECK (value_cents >= 0),   -- nominal face value
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE coupons (
    code TEXT PRIMARY KEY,                     -- 16 chars of Crockford base32, 80 random bits
    template_id TEXT NOT NULL REFERENCES coupon_templates (id),
    member_id TEXT NOT NULL REFERENCES members (id),
    status TEXT NOT NULL CHECK (status IN ('issued', 'reserved', 'redeemed', 'expired', 'voided')),
    source_kind TEXT NOT NULL,                 -- 'perk', 'campaign', 'admin'
    source_id TEXT NOT NULL,                   -- redemption id, campaign id, ...
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    reservation_id TEXT,                       -- the checkout holding it while reserved
    reserved_until BIGINT,
    purchase_id TEXT,                          -- the purchase that redeemed it
    discount_cents BIGINT,                     -- what it took off when redeemed
    updated_at BIGINT NOT NULL,
    UNIQUE (source_kind, source_id, template_id, member_id)
);
CREATE INDEX coupons_by_member ON coupons (member_id, status);
CREATE INDEX coupons_by_template ON coupons (template_id, status);
