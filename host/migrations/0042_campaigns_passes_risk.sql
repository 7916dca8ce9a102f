-- Coupon campaigns with a hard cap, the offline member pass (signing keys and offline purchase
-- sync) and risk controls (blacklist, real-name verification, the redemption log).

-- A campaign issues one coupon of a template to each member of a segment, up to a hard cap.
-- `issued` only ever moves through `UPDATE … SET issued = issued + 1 WHERE issued < cap`, and
-- the CHECK makes an over-issue impossible even for a statement that forgot the guard.
CREATE TABLE campaigns (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    template_id TEXT NOT NULL REFERENCES coupon_templates (id),
    funding_brand TEXT NOT NULL REFERENCES brands (id),
    segment TEXT NOT NULL,                     -- JSON {"tiers": [...], "tags": [...]}
    cap BIGINT NOT NULL CHECK (cap > 0),
    issued BIGINT NOT NULL DEFAULT 0 CHECK (issued >= 0 AND issued <= cap),
    starts_at BIGINT,                          -- issuing allowed from (Unix ms), if set
    ends_at BIGINT,                            -- issuing allowed until (Unix ms), if set
    created_by TEXT NOT NULL,                  -- key id
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX campaigns_by_brand ON campaigns (funding_brand, id);

-- Platform ed25519 keys that sign member passes, shared by every node. `active_slot` is 1 on
-- the one key that signs new passes and NULL on retired ones: the UNIQUE makes two nodes that
-- create the first key at once agree on one. Retired keys stay listed so counters keep
-- accepting passes signed before a rotation until they expire.
CREATE TABLE pass_keys (
    id TEXT PRIMARY KEY,                       -- first 16 hex chars of SHA-256(public key)
    public_key TEXT NOT NULL,                  -- 32 bytes, hex
    private_key TEXT NOT NULL,                 -- 32-byte seed, hex
    active_slot BIGINT UNIQUE CHECK (active_slot = 1),
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);

-- Purchases taken at a counter while it was offline and synced later; one row per recorded
-- purchase, with the pass that was scanned.
CREATE TABLE offline_purchases (
    purchase_id TEXT PRIMARY KEY REFERENCES purchases (id),
    brand_id TEXT NOT NULL REFERENCES brands (id),
    order_id TEXT NOT NULL,
    member_id TEXT NOT NULL REFERENCES members (id),
    device_id TEXT,
    pass_key_id TEXT NOT NULL,
    pass_nonce TEXT NOT NULL,
    taken_at BIGINT NOT NULL,
    synced_at BIGINT NOT NULL,
    UNIQUE (brand_id, order_id)
);

-- Coupons a counter honoured offline that turned out not to be redeemable; the purchase stands
-- and the brand resolves each conflict.
CREATE TABLE offline_conflicts (
    id TEXT PRIMARY KEY,
    brand_id TEXT NOT NULL REFERENCES brands (id),
    purchase_id TEXT NOT NULL REFERENCES purchases (id),
    order_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    coupon_code TEXT NOT NULL,
    code TEXT NOT NULL,                        -- coupon_already_used, coupon_not_found, ...
    detail TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX offline_conflicts_by_brand ON offline_conflicts (brand_id, id);

-- Members and devices refused for earning and redeeming.
CREATE TABLE risk_blacklist (
    kind TEXT NOT NULL CHECK (kind IN ('member', 'device')),
    subject TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (kind, subject)
);

-- Real-name verification of a member, as reported by an admin or a brand.
CREATE TABLE member_verifications (
    member_id TEXT PRIMARY KEY REFERENCES members (id),
    reference TEXT NOT NULL,                   -- the verifier's own reference (not the ID number)
    verified_by TEXT NOT NULL,                 -- key id
    verified_by_brand TEXT,
    verified_at BIGINT NOT NULL
);

-- Every accepted redemption, for the frequency limits (written in the redemption's transaction).
CREATE TABLE risk_redemptions (
    id TEXT PRIMARY KEY,                       -- the redemption's id
    member_id TEXT NOT NULL,
    device_id TEXT,
    value_cents BIGINT NOT NULL,
    what TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX risk_redemptions_by_member ON risk_redemptions (member_id, created_at);
CREATE INDEX risk_redemptions_by_device ON risk_redemptions (device_id, created_at);

-- One row per member or device that has redeemed: the redemption check upserts it first, and
-- the row lock serialises concurrent redemptions of one subject so the counts stay exact.
CREATE TABLE risk_subjects (
    kind TEXT NOT NULL CHECK (kind IN ('member', 'device')),
    subject TEXT NOT NULL,
    touched_at BIGINT NOT NULL,
    PRIMARY KEY (kind, subject)
);
