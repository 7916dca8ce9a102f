-- A version rejected at validation records a stable code beside its reason
-- (describe_brands_mismatch, forbidden_imports, compile_timeout, ...), so clients branch on it.
ALTER TABLE plugin_versions ADD COLUMN status_code TEXT;

-- Which settle plugins govern a brand's events that name no plugin (points issued at its
-- counter, for example), in order, as an admin set it. Without rows, only the brand's own
-- plugins are asked (see docs/plugins.md, "Which plugin governs an event").
CREATE TABLE settle_precedence (
    brand_id TEXT NOT NULL REFERENCES brands (id),
    position BIGINT NOT NULL,                 -- 0 = asked first
    plugin_name TEXT NOT NULL,
    set_by TEXT NOT NULL,                     -- actor, e.g. admin:<key id>
    set_at BIGINT NOT NULL,
    PRIMARY KEY (brand_id, position)
);
