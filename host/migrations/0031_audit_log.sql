-- The append-only audit log of decisions by people (plugin reviews and deploys, settlement
-- closes and adjustments). Each entry carries the hash of the one before, so changing or
-- deleting an entry breaks the chain and `audit::verify` says where.

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,                    -- 1, 2, 3, ... without gaps
    at BIGINT NOT NULL,                        -- Unix ms
    actor TEXT NOT NULL,                       -- who: key id and role, e.g. 'admin:k_01..'
    action TEXT NOT NULL,                      -- e.g. 'plugin.approve', 'settlement.close'
    subject_kind TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    details TEXT NOT NULL,                     -- canonical JSON object
    prev_hash TEXT NOT NULL,                   -- hash of entry seq-1 (64 zeros for the first)
    hash TEXT NOT NULL                         -- sha256 over prev_hash and this entry's fields
);
CREATE INDEX audit_log_by_subject ON audit_log (subject_kind, subject_id, seq);

-- The chain's head: one row, locked by every append so appends are serialised.
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
