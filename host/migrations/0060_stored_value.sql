-- Stored value (a prepaid balance in cents): a second currency beside points, in its own
-- double-entry journal. A real-name verified member (`member_verifications`) may hold more.
-- Every cent a member holds is tracked by the brand that took the money
-- (its "fund"), so the outstanding liability and the reserve it requires are known per brand.

-- The share of a brand's outstanding stored value it must hold in reserve, in percent.
-- NULL = the `[stored_value] default_reserve_percent`.
ALTER TABLE brands ADD COLUMN stored_value_reserve_percent BIGINT
    CHECK (stored_value_reserve_percent IS NULL
        OR (stored_value_reserve_percent >= 0 AND stored_value_reserve_percent <= 100));

-- One row per member who ever held stored value: the only materialised total.
CREATE TABLE stored_value_wallets (
    member_id TEXT PRIMARY KEY REFERENCES members (id),
    balance BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
    -- Last top-up, payment or refund (dormancy is measured from it).
    last_activity_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The member's balance split by the brand holding the money. Sum over a member = the wallet.
CREATE TABLE stored_value_funds (
    member_id TEXT NOT NULL REFERENCES members (id),
    brand_id TEXT NOT NULL REFERENCES brands (id),
    balance BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (member_id, brand_id)
);
CREATE INDEX stored_value_funds_by_brand ON stored_value_funds (brand_id);

-- A journal entry: one business event, two postings summing to zero.
CREATE TABLE stored_value_entries (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('topup', 'payment', 'refund')),
    member_id TEXT NOT NULL REFERENCES members (id),
    brand_id TEXT NOT NULL REFERENCES brands (id),   -- where it happened
    holder_brand TEXT NOT NULL REFERENCES brands (id), -- whose fund it moved
    amount BIGINT NOT NULL CHECK (amount > 0),       -- cents moved
    purchase_id TEXT,
    refund_pk TEXT,
    topup_pk TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX stored_value_entries_by_member ON stored_value_entries (member_id, created_at);
CREATE INDEX stored_value_entries_by_purchase ON stored_value_entries (purchase_id)
    WHERE purchase_id IS NOT NULL;

-- Accounts: 'member' (what the member holds, per holding brand: a liability of that brand),
-- 'float' (money a brand took at top-ups), 'sales' (stored value a brand accepted as payment).
CREATE TABLE stored_value_postings (
    id TEXT PRIMARY KEY,
    entry_id TEXT NOT NULL REFERENCES stored_value_entries (id),
    account TEXT NOT NULL CHECK (account IN ('member', 'float', 'sales')),
    member_id TEXT REFERENCES members (id),
    brand_id TEXT NOT NULL REFERENCES brands (id),
    amount BIGINT NOT NULL CHECK (amount <> 0),
    created_at BIGINT NOT NULL,
    CHECK ((account = 'member') = (member_id IS NOT NULL))
);
CREATE INDEX stored_value_postings_by_entry ON stored_value_postings (entry_id);

-- Top-ups at a brand's counter (or by an admin), unique per brand.
CREATE TABLE stored_value_topups (
    id TEXT PRIMARY KEY,
    brand_id TEXT NOT NULL REFERENCES brands (id),
    topup_id TEXT NOT NULL,
    member_id TEXT NOT NULL REFERENCES members (id),
    amount_cents BIGINT NOT NULL CHECK (amount_cents > 0),
    entry_id TEXT NOT NULL REFERENCES stored_value_entries (id),
    created_at BIGINT NOT NULL,
    UNIQUE (brand_id, topup_id)
);

-- What a purchase paid with stored value, per holding fund, and how much refunds gave back.
CREATE TABLE stored_value_draws (
    id TEXT PRIMARY KEY,
    purchase_id TEXT NOT NULL REFERENCES purchases (id),
    member_id TEXT NOT NULL REFERENCES members (id),
    holder_brand TEXT NOT NULL REFERENCES brands (id),
    amount BIGINT NOT NULL CHECK (amount > 0),
    returned BIGINT NOT NULL DEFAULT 0 CHECK (returned >= 0 AND returned <= amount),
    -- The settle event of a draw from another brand's fund (NULL when the holder honoured it).
    event_id TEXT,
    position BIGINT NOT NULL
);
CREATE INDEX stored_value_draws_by_purchase ON stored_value_draws (purchase_id, position);

-- Purchases and refunds carry their stored-value part (per line, so refunds are exact).
ALTER TABLE purchases ADD COLUMN stored_value_cents BIGINT NOT NULL DEFAULT 0
    CHECK (stored_value_cents >= 0);
ALTER TABLE purchase_lines ADD COLUMN stored_value_alloc BIGINT NOT NULL DEFAULT 0
    CHECK (stored_value_alloc >= 0);
ALTER TABLE refunds ADD COLUMN stored_value_refund_cents BIGINT NOT NULL DEFAULT 0;
ALTER TABLE refund_lines ADD COLUMN stored_value_refund_cents BIGINT NOT NULL DEFAULT 0;

-- A new settle kind: stored value held by one brand and spent at another. The kind's CHECK is
-- widened the portable way (SQLite cannot alter a CHECK): a new column with the wider CHECK
-- takes the old one's values and name. Its DEFAULT exists only because SQLite requires one for
-- a NOT NULL column added later; every insert names the kind.
ALTER TABLE settle_events ADD COLUMN kind_v2 TEXT NOT NULL DEFAULT 'refund' CHECK (kind_v2 IN
    ('points-issued', 'points-redeemed', 'perk-redeemed', 'coupon-honoured', 'refund',
     'stored-value-redeemed'));
UPDATE settle_events SET kind_v2 = kind;
ALTER TABLE settle_events DROP COLUMN kind;
ALTER TABLE settle_events RENAME COLUMN kind_v2 TO kind;
