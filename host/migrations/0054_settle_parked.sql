-- Settle events a plugin failed on (it trapped, ran out of fuel or time, or proposed invalid
-- lines for that event), parked with the reason and retried with exponential backoff instead
-- of on every run, so one bad event neither blocks nor trips the breaker against the plugin's
-- later events (docs/SETTLEMENT.md, "Parked events"). The event itself stays `held`; its row
-- here goes away in the transaction that settles it.
CREATE TABLE settle_parked (
    event_id TEXT PRIMARY KEY REFERENCES settle_events (id),
    failed_plugin TEXT NOT NULL,               -- the plugin that failed on the event
    failed_version TEXT NOT NULL,              -- and its version
    problem_code TEXT NOT NULL,                -- the runtime's stable code: trap_unreachable, fuel_exhausted, ...
    problem_message TEXT NOT NULL,             -- the failure as the runtime told it (clipped)
    failures BIGINT NOT NULL CHECK (failures >= 0),  -- consecutive failures of failed_plugin@failed_version
    parked_at BIGINT NOT NULL,
    last_failed_at BIGINT NOT NULL,
    next_retry_at BIGINT,                      -- NULL: out of retries, waits for an admin (or a new version)
    released_by TEXT,                          -- the last admin retry: who, when, why
    released_at BIGINT,
    release_reason TEXT
);
CREATE INDEX settle_parked_by_plugin ON settle_parked (failed_plugin, event_id);
