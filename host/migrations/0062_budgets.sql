-- Partner budgets: a funding brand caps what it funds per period (bonus points, perk value,
-- coupon value), optionally for one plugin. Usage is reserved by a guarded UPDATE in the same
-- transaction as the issue it pays for, so concurrent issues never spend past the cap.

CREATE TABLE budgets (
    id TEXT PRIMARY KEY,
    brand_id TEXT NOT NULL REFERENCES brands (id),   -- the funding brand
    kind TEXT NOT NULL CHECK (kind IN ('bonus_points', 'perk_value', 'coupon_value')),
    plugin TEXT,                                     -- NULL = every plugin of the brand
    period TEXT NOT NULL CHECK (period IN ('day', 'month')),
    amount BIGINT NOT NULL CHECK (amount >= 0),      -- points or cents per period
    alert_percent BIGINT NOT NULL CHECK (alert_percent >= 1 AND alert_percent <= 100),
    active BIGINT NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    label TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX budgets_by_brand ON budgets (brand_id, kind) WHERE active = 1;

-- One row per budget and period (a local day or month): a new period starts at zero.
CREATE TABLE budget_usage (
    budget_id TEXT NOT NULL REFERENCES budgets (id),
    period_key TEXT NOT NULL,
    used BIGINT NOT NULL DEFAULT 0 CHECK (used >= 0),
    -- Set once, when usage first reached the budget's alert threshold in this period.
    alerted_at BIGINT,
    PRIMARY KEY (budget_id, period_key)
);
