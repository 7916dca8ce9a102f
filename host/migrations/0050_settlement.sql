-- Settlement between brands: periods (local calendar months), the settlement of each event
-- (exactly once: the primary key), its lines, and what a close freezes: statements, their
-- detail and bilateral netting per party pair. Parties are brand ids or 'platform'.

CREATE TABLE settlement_periods (
    id TEXT PRIMARY KEY,                       -- 'YYYY-MM', the local month
    start_ms BIGINT NOT NULL,                  -- first instant of the local month, Unix ms
    end_ms BIGINT NOT NULL,                    -- first instant of the next month (exclusive)
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closing', 'closed')),
    closing_at BIGINT,
    closed_at BIGINT,
    closed_by TEXT,
    line_count BIGINT NOT NULL DEFAULT 0,      -- frozen at close
    total_cents BIGINT NOT NULL DEFAULT 0,     -- frozen at close: sum of line amounts
    held_carried BIGINT NOT NULL DEFAULT 0,    -- events of the month still held at close
    audit_seq BIGINT,                          -- the audit entry of the close
    created_at BIGINT NOT NULL
);

-- One row per settled event: the rule that governed it, the receipt of the plugin call (or the
-- platform rates used), and where its lines went. The primary key makes settlement exactly once.
CREATE TABLE settlement_runs (
    event_id TEXT PRIMARY KEY REFERENCES settle_events (id),
    period_id TEXT NOT NULL REFERENCES settlement_periods (id),
    rule TEXT NOT NULL,                        -- 'plugin@version' or 'platform:<rule>'
    receipt_id TEXT,                           -- plugin_receipts.id when a plugin decided
    params TEXT NOT NULL DEFAULT '{}',         -- platform rules: the rates used (canonical JSON)
    is_adjustment BIGINT NOT NULL DEFAULT 0,   -- 1: corrects a closed period
    adjusts_period_id TEXT,                    -- the closed period it corrects
    original_event_id TEXT,                    -- the event corrected (reversed, or itself if late)
    line_count BIGINT NOT NULL,
    total_cents BIGINT NOT NULL,
    settled_at BIGINT NOT NULL
);
CREATE INDEX settlement_runs_by_period ON settlement_runs (period_id);

CREATE TABLE settlement_lines (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES settle_events (id),
    period_id TEXT NOT NULL REFERENCES settlement_periods (id),
    line_no BIGINT NOT NULL,                   -- 0.. within the event, in the rule's order
    payer TEXT NOT NULL,
    payee TEXT NOT NULL,
    amount_cents BIGINT NOT NULL CHECK (amount_cents > 0),
    reason TEXT NOT NULL,
    rule TEXT NOT NULL,
    category TEXT NOT NULL,                    -- 'points', 'perk', 'coupon', 'commission', 'refund'
    reference TEXT,                            -- the event's perk / coupon template, if any
    receipt_id TEXT,
    is_adjustment BIGINT NOT NULL DEFAULT 0,
    original_event_id TEXT,
    original_line_id TEXT,                     -- platform reversals: the line reversed
    created_at BIGINT NOT NULL,
    CHECK (payer <> payee),
    UNIQUE (event_id, line_no)
);
CREATE INDEX settlement_lines_by_period ON settlement_lines (period_id, payer, payee);
CREATE INDEX settlement_lines_by_payee ON settlement_lines (period_id, payee);

-- Per period and party (brands and 'platform'): frozen at close.
CREATE TABLE settlement_statements (
    period_id TEXT NOT NULL REFERENCES settlement_periods (id),
    party TEXT NOT NULL,
    gross_owed_cents BIGINT NOT NULL,          -- lines the party pays
    gross_due_cents BIGINT NOT NULL,           -- lines the party receives
    net_cents BIGINT NOT NULL,                 -- due - owed: > 0 the party is paid
    commission_cents BIGINT NOT NULL,          -- commission paid net of reversals (platform: earned)
    adjustment_cents BIGINT NOT NULL,          -- net of adjustment lines (corrections)
    line_count BIGINT NOT NULL,
    points_issued BIGINT NOT NULL,             -- in the month, from the ledger
    points_issued_reversed BIGINT NOT NULL,
    points_redeemed BIGINT NOT NULL,
    points_redeemed_reversed BIGINT NOT NULL,
    points_expired BIGINT NOT NULL,            -- breakage
    PRIMARY KEY (period_id, party)
);

-- Statement detail: per counterparty and per reference (perk, coupon template, rule).
CREATE TABLE settlement_statement_detail (
    period_id TEXT NOT NULL REFERENCES settlement_periods (id),
    party TEXT NOT NULL,
    dimension TEXT NOT NULL CHECK (dimension IN ('counterparty', 'reference')),
    item TEXT NOT NULL,
    owed_cents BIGINT NOT NULL,
    due_cents BIGINT NOT NULL,
    line_count BIGINT NOT NULL,
    PRIMARY KEY (period_id, party, dimension, item)
);

-- Bilateral netting: one row per unordered pair (party_a < party_b).
CREATE TABLE settlement_netting (
    period_id TEXT NOT NULL REFERENCES settlement_periods (id),
    party_a TEXT NOT NULL,
    party_b TEXT NOT NULL,
    a_owes_b_cents BIGINT NOT NULL,
    b_owes_a_cents BIGINT NOT NULL,
    net_cents BIGINT NOT NULL,                 -- a_owes_b - b_owes_a: > 0 a pays b
    PRIMARY KEY (period_id, party_a, party_b)
);
