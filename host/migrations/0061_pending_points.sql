-- Pending points: a brand's return window. Points earned at a brand with a window are pending
-- (visible, not spendable) until it passes; the release job then credits them as ordinary lots.
-- A refund inside the window cancels pending points, so it never creates debt.

ALTER TABLE brands ADD COLUMN return_window_days BIGINT NOT NULL DEFAULT 0
    CHECK (return_window_days >= 0 AND return_window_days <= 365);

CREATE TABLE pending_earns (
    purchase_id TEXT PRIMARY KEY REFERENCES purchases (id),
    member_id TEXT NOT NULL REFERENCES members (id),
    brand_id TEXT NOT NULL REFERENCES brands (id),
    base_points BIGINT NOT NULL CHECK (base_points >= 0),
    bonus_points BIGINT NOT NULL CHECK (bonus_points >= 0),
    eligible_cents BIGINT NOT NULL CHECK (eligible_cents >= 0),
    -- What refunds inside the window cancelled (never more than was pending).
    cancelled_base BIGINT NOT NULL DEFAULT 0
        CHECK (cancelled_base >= 0 AND cancelled_base <= base_points),
    cancelled_bonus BIGINT NOT NULL DEFAULT 0
        CHECK (cancelled_bonus >= 0 AND cancelled_bonus <= bonus_points),
    cancelled_eligible_cents BIGINT NOT NULL DEFAULT 0
        CHECK (cancelled_eligible_cents >= 0 AND cancelled_eligible_cents <= eligible_cents),
    available_at BIGINT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'released')),
    released_at BIGINT,
    entry_id TEXT REFERENCES ledger_entries (id),
    created_at BIGINT NOT NULL
);
CREATE INDEX pending_earns_due ON pending_earns (available_at) WHERE status = 'pending';
CREATE INDEX pending_earns_by_member ON pending_earns (member_id) WHERE status = 'pending';

ALTER TABLE refunds ADD COLUMN pending_cancelled BIGINT NOT NULL DEFAULT 0;
