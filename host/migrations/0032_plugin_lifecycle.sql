-- Plugin lifecycle: signed uploads by partner brands, co-signatures, review states, canaries,
-- the kill switch, shadow runs, and a generation counter that tells every node to reload.

-- plugin_versions gains the review states; its CHECK allowed only active/retired, so the table
-- is rebuilt (create, copy, drop, rename: the same statements on SQLite and PostgreSQL).
CREATE TABLE plugin_versions_new (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    wit TEXT NOT NULL,
    component_sha256 TEXT NOT NULL REFERENCES plugin_components (sha256),
    manifest TEXT NOT NULL,
    hooks TEXT NOT NULL,
    brands TEXT NOT NULL,
    config TEXT NOT NULL DEFAULT '{}',
    -- uploaded -> validated | awaiting_cosign -> validated -> approved -> active -> retired;
    -- rejected from any review step. 'active' is the deployed version (one per name).
    status TEXT NOT NULL CHECK (status IN ('uploaded', 'validated', 'awaiting_cosign',
        'approved', 'active', 'retired', 'rejected')),
    installed_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    -- sha256 over the domain-separated manifest + component (NULL for the platform's direct
    -- installs, which are not signed packages).
    content_sha256 TEXT,
    uploaded_by_brand TEXT,                    -- NULL for direct installs
    status_reason TEXT NOT NULL DEFAULT '',    -- why it is in its status (e.g. rejection reason)
    previous_version_id TEXT,                  -- the active version this one replaced on deploy
    deployed_at BIGINT,
    UNIQUE (name, version)
);
INSERT INTO plugin_versions_new (id, name, version, wit, component_sha256, manifest, hooks,
    brands, config, status, installed_by, created_at, updated_at, deployed_at)
SELECT id, name, version, wit, component_sha256, manifest, hooks, brands, config, status,
    installed_by, created_at, updated_at, created_at FROM plugin_versions;
DROP TABLE plugin_versions;
ALTER TABLE plugin_versions_new RENAME TO plugin_versions;
CREATE INDEX plugin_versions_by_status ON plugin_versions (status);
-- At most one deployed version per plugin, enforced by the database.
CREATE UNIQUE INDEX plugin_versions_one_active ON plugin_versions (name) WHERE status = 'active';

-- ed25519 public keys a brand signs packages with: registered by the brand, approved by an
-- admin, revocable.
CREATE TABLE brand_signing_keys (
    id TEXT PRIMARY KEY,
    brand_id TEXT NOT NULL REFERENCES brands (id),
    public_key TEXT NOT NULL UNIQUE,           -- 32 bytes, lowercase hex
    label TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'revoked')),
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    decided_by TEXT,
    decided_at BIGINT
);
CREATE INDEX brand_signing_keys_by_brand ON brand_signing_keys (brand_id, status);

-- Signatures over a version's content hash: the uploader's and every co-signing brand's.
CREATE TABLE plugin_signatures (
    version_id TEXT NOT NULL REFERENCES plugin_versions (id),
    brand_id TEXT NOT NULL,
    key_id TEXT NOT NULL REFERENCES brand_signing_keys (id),
    content_sha256 TEXT NOT NULL,
    signature TEXT NOT NULL,                   -- 64 bytes, lowercase hex
    kind TEXT NOT NULL CHECK (kind IN ('upload', 'cosign')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (version_id, brand_id)
);

-- One canary per plugin: an approved version serving basis_points/10000 of members.
CREATE TABLE plugin_canaries (
    name TEXT PRIMARY KEY,
    version_id TEXT NOT NULL REFERENCES plugin_versions (id),
    basis_points BIGINT NOT NULL CHECK (basis_points > 0 AND basis_points < 10000),
    created_at BIGINT NOT NULL
);

-- Killed plugins serve nobody until resumed.
CREATE TABLE plugin_kills (
    name TEXT PRIMARY KEY,
    killed_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    killed_at BIGINT NOT NULL
);

-- One shadow per plugin: runs beside the serving version on live calls, never applied.
CREATE TABLE plugin_shadows (
    name TEXT PRIMARY KEY,
    version_id TEXT NOT NULL REFERENCES plugin_versions (id),
    created_at BIGINT NOT NULL
);

CREATE TABLE plugin_shadow_results (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    shadow_version_id TEXT NOT NULL,
    serving_version_id TEXT NOT NULL,
    hook TEXT NOT NULL,
    subject_id TEXT NOT NULL,                  -- e.g. the order id
    input_sha256 TEXT NOT NULL,
    same BIGINT NOT NULL,                      -- 1 when both decisions hash the same
    serving_output TEXT NOT NULL,
    shadow_output TEXT NOT NULL,               -- JSON decision, or the error as a JSON string
    serving_fuel BIGINT NOT NULL,
    shadow_fuel BIGINT NOT NULL,
    serving_us BIGINT NOT NULL,
    shadow_us BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX plugin_shadow_results_by_version ON plugin_shadow_results (shadow_version_id, created_at);

-- Bumped by every change to what serves; nodes that missed a notification see it on poll.
CREATE TABLE plugin_generation (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL
);
INSERT INTO plugin_generation (id, generation) VALUES (1, 0);
