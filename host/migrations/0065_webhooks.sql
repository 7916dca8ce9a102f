-- Webhooks: a brand subscribes endpoints to event types. An event is written to the outbox in
-- the same transaction as its cause (so it exists exactly when its cause does), fanned out there
-- to one delivery per matching active subscription; the delivery worker posts each one, signed,
-- with retries, and logs every attempt.

CREATE TABLE webhook_subscriptions (
    id TEXT PRIMARY KEY,
    brand_id TEXT NOT NULL REFERENCES brands (id),
    url TEXT NOT NULL,
    event_types TEXT NOT NULL,                 -- JSON array of kebab-case event types
    secret TEXT NOT NULL,                      -- the HMAC key; needed in clear to sign
    active BIGINT NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhook_subscriptions_by_brand ON webhook_subscriptions (brand_id, id);

-- One row per (subscription, event type): what recording an event looks up, by brand and type.
CREATE TABLE webhook_subscription_events (
    subscription_id TEXT NOT NULL REFERENCES webhook_subscriptions (id),
    brand_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    PRIMARY KEY (subscription_id, event_type)
);
CREATE INDEX webhook_subscription_events_lookup
    ON webhook_subscription_events (brand_id, event_type);

-- The outbox: one row per event that at least one subscription wanted.
CREATE TABLE webhook_events (
    id TEXT PRIMARY KEY,
    brand_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    member_id TEXT,
    payload TEXT NOT NULL                      -- JSON object, personal fields masked
);

-- One delivery per (event, subscription). `budget_start` is the attempt count when the current
-- retry budget began (0, or the count at the last manual replay).
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES webhook_events (id),
    subscription_id TEXT NOT NULL REFERENCES webhook_subscriptions (id),
    brand_id TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    budget_start BIGINT NOT NULL DEFAULT 0 CHECK (budget_start >= 0),
    next_attempt_at BIGINT NOT NULL DEFAULT 0,  -- Unix ms; 0 = due at once
    lease_owner TEXT,
    lease_until BIGINT,
    last_status_code BIGINT,
    last_error TEXT,
    last_attempt_at BIGINT,
    delivered_at BIGINT,
    UNIQUE (event_id, subscription_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_by_subscription ON webhook_deliveries (subscription_id, id);
CREATE INDEX webhook_deliveries_by_brand ON webhook_deliveries (brand_id, id);

-- Every attempt: its number, the receiver's status code or the error.
CREATE TABLE webhook_attempts (
    id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id),
    attempt BIGINT NOT NULL CHECK (attempt > 0),
    status_code BIGINT,
    error TEXT,
    attempted_at BIGINT NOT NULL,
    UNIQUE (delivery_id, attempt)
);
