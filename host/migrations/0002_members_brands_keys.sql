-- Members, brands and API keys beyond the foundation: attribution, blocking audit trail, and the
-- indexes behind list filters and cursor pagination (ids are time-ordered, so `ORDER BY id` is
-- creation order).

-- The brand whose key registered the member (a counter sign-up); NULL when an admin or an
-- import created it. Used for attribution in measurement, never for access control.
ALTER TABLE members ADD COLUMN joined_brand_id TEXT REFERENCES brands (id);
ALTER TABLE members ADD COLUMN blocked_at BIGINT;

CREATE INDEX members_by_status ON members (status, id);
CREATE INDEX members_by_tier ON members (tier, id);

-- Every block and unblock, with who did it and why; append-only.
CREATE TABLE member_status_changes (
    id TEXT PRIMARY KEY,
    member_id TEXT NOT NULL REFERENCES members (id),
    status TEXT NOT NULL CHECK (status IN ('active', 'blocked')),
    reason TEXT NOT NULL,
    actor_key_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX member_status_changes_by_member ON member_status_changes (member_id, created_at);

-- The key that created this key (NULL for keys made by the CLI or the demo seed).
ALTER TABLE api_keys ADD COLUMN created_by TEXT;
CREATE INDEX api_keys_by_brand ON api_keys (brand_id, id);
CREATE INDEX api_keys_by_member ON api_keys (member_id);
