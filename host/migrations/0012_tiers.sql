-- Tiers: an optional ladder override (empty = the `[tiers]` configuration), the qualifying pool,
-- evaluations and the history of tier changes.

CREATE TABLE tier_ladder (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    rank BIGINT NOT NULL UNIQUE CHECK (rank >= 0),
    threshold BIGINT NOT NULL CHECK (threshold >= 0),
    retain_threshold BIGINT NOT NULL CHECK (retain_threshold >= 0),
    points_pay_max_percent BIGINT NOT NULL CHECK (points_pay_max_percent BETWEEN 0 AND 100),
    updated_at BIGINT NOT NULL
);

-- The qualifying pool: spend that counts towards tiers (cents) and points earned, net of refunds.
-- A refund is dated at its purchase's time so it nets out within the same window.
CREATE TABLE qualifying_events (
    id TEXT PRIMARY KEY,
    member_id TEXT NOT NULL REFERENCES members (id),
    purchase_id TEXT NOT NULL REFERENCES purchases (id),
    refund_pk TEXT REFERENCES refunds (id),
    spend_cents BIGINT NOT NULL,
    points BIGINT NOT NULL,
    occurred_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX qualifying_events_window ON qualifying_events (member_id, occurred_at);

CREATE TABLE tier_evaluations (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('schedule', 'baseline', 'admin')),
    -- 'YYYY-MM' for scheduled runs (one per month); the caller's idempotency key for admin runs.
    run_key TEXT NOT NULL UNIQUE,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    members_evaluated BIGINT NOT NULL DEFAULT 0,
    upgraded BIGINT NOT NULL DEFAULT 0,
    downgraded BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE tier_changes (
    id TEXT PRIMARY KEY,
    member_id TEXT NOT NULL REFERENCES members (id),
    from_tier TEXT NOT NULL,
    to_tier TEXT NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN ('purchase', 'evaluation')),
    qualifying BIGINT NOT NULL,
    -- Set for changes made by an evaluation: at most one change per member per evaluation,
    -- so a resumed or repeated run can never move a member two steps.
    evaluation_id TEXT REFERENCES tier_evaluations (id),
    purchase_id TEXT,
    changed_at BIGINT NOT NULL,
    UNIQUE (member_id, evaluation_id)
);
CREATE INDEX tier_changes_by_member ON tier_changes (member_id, changed_at);
