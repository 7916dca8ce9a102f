-- Member lifecycle stages and journeys (docs/ENGAGEMENT.md).
--
-- Stages (welcome, growth, stable, silent, churned) are computed from purchases by the rules
-- below (one row, 'current'; the defaults are inserted here and an admin may change them), kept
-- per member with the moment the member entered the stage, and every change is appended to the
-- history. Journeys act on members who meet a trigger; each touch of a member is one row keyed
-- (journey, member, occurrence), inserted in the transaction of its actions.

CREATE TABLE stage_rules (
    id TEXT PRIMARY KEY CHECK (id = 'current'),
    welcome_days BIGINT NOT NULL CHECK (welcome_days >= 1),
    stable_min_purchases BIGINT NOT NULL CHECK (stable_min_purchases >= 2),
    silent_after_days BIGINT NOT NULL CHECK (silent_after_days >= 1),
    churned_after_days BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CHECK (welcome_days <= silent_after_days AND churned_after_days > silent_after_days)
);
INSERT INTO stage_rules (id, welcome_days, stable_min_purchases, silent_after_days,
    churned_after_days, updated_at)
VALUES ('current', 30, 3, 30, 90, 0);

-- A member's stage now, with what it was computed from (the churn-risk list orders by them).
CREATE TABLE member_stages (
    member_id TEXT PRIMARY KEY REFERENCES members (id),
    stage TEXT NOT NULL
        CHECK (stage IN ('welcome', 'growth', 'stable', 'silent', 'churned')),
    since_at BIGINT NOT NULL,
    purchases BIGINT NOT NULL,
    spend_cents BIGINT NOT NULL,
    last_purchase_at BIGINT,
    computed_at BIGINT NOT NULL
);
CREATE INDEX member_stages_by_stage ON member_stages (stage, spend_cents);

-- Every change of stage, once: `from_stage` NULL is the first computation.
CREATE TABLE member_stage_history (
    id TEXT PRIMARY KEY,
    member_id TEXT NOT NULL REFERENCES members (id),
    from_stage TEXT,
    to_stage TEXT NOT NULL,
    changed_at BIGINT NOT NULL
);
CREATE INDEX member_stage_history_by_member ON member_stage_history (member_id, changed_at);

-- Where a resumable job stopped: the last member id of its last committed batch ('' = start).
CREATE TABLE engagement_cursors (
    job TEXT PRIMARY KEY,
    after_id TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE journeys (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    owner_brand TEXT REFERENCES brands (id),               -- NULL: the platform's
    trigger_kind TEXT NOT NULL,
    trigger_spec TEXT NOT NULL,                            -- JSON
    audience TEXT NOT NULL,                                -- JSON
    actions TEXT NOT NULL,                                 -- JSON array
    per_member_cap BIGINT NOT NULL CHECK (per_member_cap >= 1),
    total_cap BIGINT CHECK (total_cap IS NULL OR total_cap >= 1),
    touched BIGINT NOT NULL DEFAULT 0,
    starts_at BIGINT,
    ends_at BIGINT,
    status TEXT NOT NULL CHECK (status IN ('draft', 'active', 'paused', 'ended')),
    after_id TEXT NOT NULL DEFAULT '',                     -- the run's cursor
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CHECK (total_cap IS NULL OR touched <= total_cap)
);
CREATE INDEX journeys_by_owner ON journeys (owner_brand, created_at);

-- One touch of a member by a journey: at most once per occurrence, whatever runs concurrently.
CREATE TABLE journey_touches (
    id TEXT PRIMARY KEY,
    journey_id TEXT NOT NULL REFERENCES journeys (id),
    member_id TEXT NOT NULL REFERENCES members (id),
    occurrence_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (journey_id, member_id, occurrence_key)
);
CREATE INDEX journey_touches_by_member ON journey_touches (member_id, journey_id);

-- What a touch did, one row per action.
CREATE TABLE journey_actions (
    id TEXT PRIMARY KEY,
    touch_id TEXT NOT NULL REFERENCES journey_touches (id),
    journey_id TEXT NOT NULL REFERENCES journeys (id),
    member_id TEXT NOT NULL REFERENCES members (id),
    kind TEXT NOT NULL CHECK (kind IN ('issue_coupon', 'grant_points', 'webhook')),
    detail TEXT NOT NULL,                                  -- JSON: the coupon code, the entry, …
    created_at BIGINT NOT NULL
);
CREATE INDEX journey_actions_by_journey ON journey_actions (journey_id, kind);
