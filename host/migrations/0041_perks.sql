-- Perks: host-side inventory and limits per (plugin, perk), redemptions with their receipts,
-- counter checkouts that reserve coupons, and the coupon discounts a purchase records.

-- Set by the funding brand or an admin. A perk without a row here has unlimited stock and no
-- limits: the plugin alone decides who may redeem it.
CREATE TABLE perk_inventory (
    plugin TEXT NOT NULL,
    perk_id TEXT NOT NULL,
    funding_brand TEXT NOT NULL REFERENCES brands (id),
    -- NULL = unlimited stock; otherwise `remaining` only moves through guarded updates.
    total_stock BIGINT CHECK (total_stock IS NULL OR total_stock >= 0),
    remaining BIGINT CHECK (remaining IS NULL OR (remaining >= 0 AND remaining <= total_stock)),
    -- Redemptions per member over the perk's lifetime; NULL = no limit.
    per_member_limit BIGINT CHECK (per_member_limit IS NULL OR per_member_limit >= 0),
    -- JSON object {tier code: redemptions per member at that tier}; overrides per_member_limit.
    tier_limits TEXT NOT NULL DEFAULT '{}',
    -- Redemptions per member per local day / week (Monday) / month; 'none' = no period limit.
    period TEXT NOT NULL DEFAULT 'none' CHECK (period IN ('none', 'day', 'week', 'month')),
    per_period_limit BIGINT CHECK (per_period_limit IS NULL OR per_period_limit >= 0),
    starts_at BIGINT,
    ends_at BIGINT,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (plugin, perk_id)
);

CREATE TABLE perk_redemptions (
    id TEXT PRIMARY KEY,
    member_id TEXT NOT NULL REFERENCES members (id),
    plugin TEXT NOT NULL,
    plugin_version TEXT NOT NULL,
    perk_id TEXT NOT NULL,
    funding_brand TEXT NOT NULL,
    honouring_brand TEXT NOT NULL,
    tier TEXT NOT NULL,                         -- the member's tier when redeeming
    points BIGINT NOT NULL CHECK (points >= 0),
    value_cents BIGINT NOT NULL CHECK (value_cents >= 0),
    grant_kind TEXT NOT NULL CHECK (grant_kind IN ('coupon', 'free-item', 'discount-cents')),
    coupon_code TEXT,
    item_sku TEXT,
    grant_cents BIGINT,
    stock_taken BIGINT NOT NULL CHECK (stock_taken IN (0, 1)),  -- 1: an inventory unit was taken
    status TEXT NOT NULL CHECK (status IN ('redeemed', 'reversed')),
    spend_entry_id TEXT REFERENCES ledger_entries (id),
    reversal_entry_id TEXT REFERENCES ledger_entries (id),
    receipt_id TEXT NOT NULL,
    device_id TEXT,
    created_at BIGINT NOT NULL,
    reversed_at BIGINT
);
CREATE INDEX perk_redemptions_by_member ON perk_redemptions (member_id, plugin, perk_id, created_at);

-- A cart validated at a counter with coupons applied; its coupons stay reserved until the
-- purchase completes it or it expires.
CREATE TABLE checkouts (
    id TEXT PRIMARY KEY,
    brand_id TEXT NOT NULL REFERENCES brands (id),
    member_id TEXT NOT NULL REFERENCES members (id),
    lines_sha256 TEXT NOT NULL,                 -- the cart the discounts were computed for
    total_cents BIGINT NOT NULL CHECK (total_cents >= 0),
    discount_cents BIGINT NOT NULL CHECK (discount_cents >= 0 AND discount_cents <= total_cents),
    status TEXT NOT NULL CHECK (status IN ('open', 'completed')),
    expires_at BIGINT NOT NULL,
    purchase_id TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE checkout_discounts (
    checkout_id TEXT NOT NULL REFERENCES checkouts (id),
    code TEXT NOT NULL REFERENCES coupons (code),
    position BIGINT NOT NULL,                   -- order the coupons were applied in
    template_id TEXT NOT NULL,
    line_id TEXT NOT NULL,
    discount_cents BIGINT NOT NULL CHECK (discount_cents > 0),
    PRIMARY KEY (checkout_id, code, line_id)
);

-- What coupons took off a purchase (the member paid that much less; it earns nothing).
ALTER TABLE purchases ADD COLUMN discount_cents BIGINT NOT NULL DEFAULT 0;
ALTER TABLE purchases ADD COLUMN checkout_id TEXT;
ALTER TABLE purchase_lines ADD COLUMN discount_cents BIGINT NOT NULL DEFAULT 0;
