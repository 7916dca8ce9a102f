-- Installed plugin versions, their components (content-addressed) and the receipts of every
-- call whose decision affected points or money.

CREATE TABLE plugin_components (
    sha256 TEXT PRIMARY KEY,                   -- hex sha256 of the component bytes
    size_bytes BIGINT NOT NULL,
    bytes_b64 TEXT NOT NULL,                   -- base64: portable across SQLite and PostgreSQL
    created_at BIGINT NOT NULL
);

CREATE TABLE plugin_versions (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    wit TEXT NOT NULL,
    component_sha256 TEXT NOT NULL REFERENCES plugin_components (sha256),
    manifest TEXT NOT NULL,                    -- the manifest TOML exactly as installed
    hooks TEXT NOT NULL,                       -- JSON array of hook names
    brands TEXT NOT NULL,                      -- JSON array of brand ids
    config TEXT NOT NULL DEFAULT '{}',         -- JSON object set by the platform admin
    status TEXT NOT NULL CHECK (status IN ('active', 'retired')),
    installed_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (name, version)
);
CREATE INDEX plugin_versions_by_status ON plugin_versions (status);

CREATE TABLE plugin_receipts (
    id TEXT PRIMARY KEY,
    plugin TEXT NOT NULL,
    version TEXT NOT NULL,
    hook TEXT NOT NULL,
    component_sha256 TEXT NOT NULL,
    input_sha256 TEXT NOT NULL,
    output_sha256 TEXT NOT NULL,
    fuel_used BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    input TEXT NOT NULL,                       -- canonical JSON: enough to replay the call
    output TEXT NOT NULL,                      -- canonical JSON of the validated decision
    subject_kind TEXT NOT NULL,                -- what the decision was used for, e.g. 'purchase'
    subject_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX plugin_receipts_by_subject ON plugin_receipts (subject_kind, subject_id);
CREATE INDEX plugin_receipts_by_plugin ON plugin_receipts (plugin, version, hook, created_at);
