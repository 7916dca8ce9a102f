-- Purchases and refunds recorded at brand counters.

CREATE TABLE purchases (
    id TEXT PRIMARY KEY,
    brand_id TEXT NOT NULL REFERENCES brands (id),
    order_id TEXT NOT NULL,
    member_id TEXT NOT NULL REFERENCES members (id),
    total_cents BIGINT NOT NULL CHECK (total_cents >= 0),
    points_spent BIGINT NOT NULL CHECK (points_spent >= 0),
    points_value_cents BIGINT NOT NULL CHECK (points_value_cents >= 0 AND points_value_cents <= total_cents),
    cash_cents BIGINT NOT NULL CHECK (cash_cents >= 0),
    eligible_cents BIGINT NOT NULL CHECK (eligible_cents >= 0),
    base_points BIGINT NOT NULL CHECK (base_points >= 0),
    bonus_points BIGINT NOT NULL CHECK (bonus_points >= 0),
    -- The earn rule in force, kept so the purchase explains itself after the brand changes it.
    earn_points BIGINT NOT NULL,
    earn_unit_cents BIGINT NOT NULL,
    spend_entry_id TEXT REFERENCES ledger_entries (id),
    earn_entry_id TEXT REFERENCES ledger_entries (id),
    created_at BIGINT NOT NULL,
    UNIQUE (brand_id, order_id)
);
CREATE INDEX purchases_by_member ON purchases (member_id, created_at);

CREATE TABLE purchase_lines (
    purchase_id TEXT NOT NULL REFERENCES purchases (id),
    line_no BIGINT NOT NULL,
    line_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    category TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0),
    total_cents BIGINT NOT NULL CHECK (total_cents >= 0),
    excluded BIGINT NOT NULL CHECK (excluded IN (0, 1)),
    -- The points payment allocated to this line, in points and in cents.
    points_alloc BIGINT NOT NULL CHECK (points_alloc >= 0),
    points_cents_alloc BIGINT NOT NULL CHECK (points_cents_alloc >= 0 AND points_cents_alloc <= total_cents),
    eligible_cents BIGINT NOT NULL CHECK (eligible_cents >= 0),
    earned_points BIGINT NOT NULL CHECK (earned_points >= 0),
    -- Cumulative refunds: the CHECK is what makes over-refunding impossible.
    refunded_quantity BIGINT NOT NULL DEFAULT 0
        CHECK (refunded_quantity >= 0 AND refunded_quantity <= quantity),
    PRIMARY KEY (purchase_id, line_no),
    UNIQUE (purchase_id, line_id)
);

-- Validated bonuses (from plugins) added to a purchase's earn, each its own posting pair.
CREATE TABLE purchase_bonuses (
    id TEXT PRIMARY KEY,
    purchase_id TEXT NOT NULL REFERENCES purchases (id),
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    points BIGINT NOT NULL CHECK (points > 0)
);
CREATE INDEX purchase_bonuses_by_purchase ON purchase_bonuses (purchase_id);

CREATE TABLE refunds (
    id TEXT PRIMARY KEY,
    brand_id TEXT NOT NULL REFERENCES brands (id),
    refund_id TEXT NOT NULL,
    purchase_id TEXT NOT NULL REFERENCES purchases (id),
    member_id TEXT NOT NULL REFERENCES members (id),
    cash_refund_cents BIGINT NOT NULL DEFAULT 0,
    points_restored BIGINT NOT NULL DEFAULT 0,
    points_reversed BIGINT NOT NULL DEFAULT 0,
    points_clawed_back BIGINT NOT NULL DEFAULT 0,
    shortfall_points BIGINT NOT NULL DEFAULT 0,
    qualifying_reversed_cents BIGINT NOT NULL DEFAULT 0,
    entry_id TEXT REFERENCES ledger_entries (id),
    created_at BIGINT NOT NULL,
    UNIQUE (brand_id, refund_id)
);
CREATE INDEX refunds_by_purchase ON refunds (purchase_id);

CREATE TABLE refund_lines (
    refund_pk TEXT NOT NULL REFERENCES refunds (id),
    line_id TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    cash_refund_cents BIGINT NOT NULL,
    points_restored BIGINT NOT NULL,
    points_reversed BIGINT NOT NULL,
    PRIMARY KEY (refund_pk, line_id)
);
