-- The points ledger: materialised member wallets, an append-only journal of balanced entries,
-- lots with expiry, which lots each debit drew from, and two-phase holds.
-- Portable between SQLite and PostgreSQL (TEXT ids, BIGINT integers and Unix ms).

-- One row per member: the only materialised balances. System accounts (issuance, redemption,
-- expiry, adjustment) are derived from postings: materialising them would make every purchase
-- of a brand wait on one hot row.
CREATE TABLE point_wallets (
    member_id TEXT PRIMARY KEY REFERENCES members (id),
    -- Spendable points = sum of the member's 'wallet' postings = sum of remaining lots.
    balance BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
    -- Points reserved by pending holds = sum of the member's 'held' postings.
    held BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0),
    -- Points a refund could not claw back because the member had spent them
    -- (= minus the sum of 'receivable' postings); settled from later credits.
    debt BIGINT NOT NULL DEFAULT 0 CHECK (debt >= 0),
    updated_at BIGINT NOT NULL
);

-- A journal entry: one business event, two or more postings summing to zero.
CREATE TABLE ledger_entries (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('earn', 'spend', 'hold', 'capture', 'release',
        'hold_timeout', 'expiry', 'adjustment', 'refund', 'debt_settlement')),
    member_id TEXT NOT NULL REFERENCES members (id),
    brand_id TEXT REFERENCES brands (id),
    purchase_id TEXT,
    refund_id TEXT,
    hold_id TEXT,
    reason TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);
CREATE INDEX ledger_entries_by_member ON ledger_entries (member_id, created_at);
CREATE INDEX ledger_entries_by_purchase ON ledger_entries (purchase_id) WHERE purchase_id IS NOT NULL;

-- Member accounts ('wallet', 'held', 'receivable') name a member; the others name a brand
-- (NULL brand = the platform).
CREATE TABLE ledger_postings (
    id TEXT PRIMARY KEY,
    entry_id TEXT NOT NULL REFERENCES ledger_entries (id),
    account TEXT NOT NULL CHECK (account IN ('wallet', 'held', 'receivable',
        'issuance', 'redemption', 'expiry', 'adjustment')),
    member_id TEXT REFERENCES members (id),
    brand_id TEXT REFERENCES brands (id),
    amount BIGINT NOT NULL CHECK (amount <> 0),
    memo TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    CHECK ((account IN ('wallet', 'held', 'receivable')) = (member_id IS NOT NULL))
);
CREATE INDEX ledger_postings_by_entry ON ledger_postings (entry_id);
CREATE INDEX ledger_postings_by_member ON ledger_postings (member_id, id) WHERE member_id IS NOT NULL;

-- Every credit to a wallet is a lot; `remaining` only ever decreases.
CREATE TABLE point_lots (
    id TEXT PRIMARY KEY,
    member_id TEXT NOT NULL REFERENCES members (id),
    posting_id TEXT NOT NULL REFERENCES ledger_postings (id),
    brand_id TEXT REFERENCES brands (id),       -- who funded the points; NULL = platform
    source TEXT NOT NULL CHECK (source IN ('earn', 'bonus', 'adjustment', 'restore')),
    amount BIGINT NOT NULL CHECK (amount > 0),
    remaining BIGINT NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    earned_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    purchase_id TEXT,
    -- Restored points (refund, hold release) name the consumption they give back.
    origin_consumption_id TEXT
);
CREATE INDEX point_lots_spendable ON point_lots (member_id, expires_at, id) WHERE remaining > 0;
CREATE INDEX point_lots_due ON point_lots (expires_at) WHERE remaining > 0;
CREATE INDEX point_lots_by_purchase ON point_lots (purchase_id) WHERE purchase_id IS NOT NULL;
CREATE INDEX point_lots_by_origin ON point_lots (origin_consumption_id)
    WHERE origin_consumption_id IS NOT NULL;

-- Which lots each debit (spend, hold, expiry, claw-back, adjustment) drew from.
CREATE TABLE lot_consumptions (
    id TEXT PRIMARY KEY,
    lot_id TEXT NOT NULL REFERENCES point_lots (id),
    entry_id TEXT NOT NULL REFERENCES ledger_entries (id),
    amount BIGINT NOT NULL CHECK (amount > 0),
    created_at BIGINT NOT NULL
);
CREATE INDEX lot_consumptions_by_entry ON lot_consumptions (entry_id);
CREATE INDEX lot_consumptions_by_lot ON lot_consumptions (lot_id);

-- Two-phase holds: pending, then captured, released or expired (timed out).
CREATE TABLE point_holds (
    id TEXT PRIMARY KEY,
    member_id TEXT NOT NULL REFERENCES members (id),
    brand_id TEXT REFERENCES brands (id),       -- where the points will be redeemed
    amount BIGINT NOT NULL CHECK (amount > 0),
    captured BIGINT NOT NULL DEFAULT 0 CHECK (captured >= 0 AND captured <= amount),
    status TEXT NOT NULL CHECK (status IN ('pending', 'captured', 'released', 'expired')),
    reason TEXT NOT NULL DEFAULT '',
    hold_entry_id TEXT NOT NULL REFERENCES ledger_entries (id),
    settle_entry_id TEXT REFERENCES ledger_entries (id),
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    settled_at BIGINT
);
CREATE INDEX point_holds_pending ON point_holds (expires_at) WHERE status = 'pending';
CREATE INDEX point_holds_by_member ON point_holds (member_id, status);
