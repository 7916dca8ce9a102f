-- Portable between SQLite and PostgreSQL: TEXT ids, BIGINT for every integer (cents, points,
-- Unix milliseconds), BIGINT 0/1 flags, JSON as TEXT.

CREATE TABLE brands (
    id TEXT PRIMARY KEY,                       -- slug, e.g. 'coffee'
    name TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    -- Base earn rule: earn_points per earn_unit_cents of eligible spend, rounded down.
    earn_points BIGINT NOT NULL DEFAULT 1 CHECK (earn_points >= 0),
    earn_unit_cents BIGINT NOT NULL DEFAULT 100 CHECK (earn_unit_cents > 0),
    excluded_skus TEXT NOT NULL DEFAULT '[]',        -- JSON array of strings
    excluded_categories TEXT NOT NULL DEFAULT '[]',  -- JSON array of strings
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE members (
    id TEXT PRIMARY KEY,
    phone TEXT NOT NULL UNIQUE,                -- E.164, e.g. '+8613800138000'
    name TEXT NOT NULL,
    birthday TEXT,                             -- 'YYYY-MM-DD'
    email TEXT,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'blocked')),
    blocked_reason TEXT,
    tier TEXT NOT NULL DEFAULT 'bronze',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE member_tags (
    member_id TEXT NOT NULL REFERENCES members (id),
    tag TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (member_id, tag)
);
CREATE INDEX member_tags_by_tag ON member_tags (tag);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,             -- sha256 hex of the secret
    prefix TEXT NOT NULL,                      -- first characters, to recognise a key in lists
    role TEXT NOT NULL CHECK (role IN ('admin', 'brand', 'counter', 'member')),
    brand_id TEXT REFERENCES brands (id),
    member_id TEXT REFERENCES members (id),
    label TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,                       -- the caller, so callers cannot collide
    idem_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status_code BIGINT,
    response_body TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
