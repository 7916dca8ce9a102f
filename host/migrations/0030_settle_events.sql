-- Money-relevant events waiting to be settled between brands (an outbox written in the same
-- transaction as the event itself, so no event is ever lost or recorded twice).

CREATE TABLE settle_events (
    id TEXT PRIMARY KEY,
    -- One of the WIT `settle-kind` cases.
    kind TEXT NOT NULL CHECK (kind IN
        ('points-issued', 'points-redeemed', 'perk-redeemed', 'coupon-honoured', 'refund')),
    brand_id TEXT NOT NULL,                    -- where it happened
    funding_brand TEXT NOT NULL,               -- who pays for it (perks, coupons), else brand_id
    honouring_brand TEXT NOT NULL,             -- who hands it over (perks, coupons), else brand_id
    reference TEXT,                            -- perk id or coupon template; for a refund the kind it reverses
    plugin TEXT,                               -- plugin that governs the event (perk or coupon source), if any
    points BIGINT NOT NULL CHECK (points >= 0),
    value_cents BIGINT NOT NULL CHECK (value_cents >= 0),
    member_id TEXT,
    subject_kind TEXT NOT NULL,                -- 'purchase', 'refund', 'redemption', 'coupon', ...
    subject_id TEXT NOT NULL,
    reverses_event_id TEXT REFERENCES settle_events (id),  -- refunds: the event reversed
    dedupe_key TEXT NOT NULL UNIQUE,           -- subject_kind:subject_id:kind:reference
    occurred_at BIGINT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'settled', 'held')),
    attempts BIGINT NOT NULL DEFAULT 0,
    held_reason TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX settle_events_by_status ON settle_events (status, occurred_at);
CREATE INDEX settle_events_by_subject ON settle_events (subject_kind, subject_id);
