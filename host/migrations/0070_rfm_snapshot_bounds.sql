-- Where each quintile of the RFM snapshot starts (domain/rfm.rs): for every scope (brand '' =
-- the coalition), dimension (r, f, m) and score 2..=5, the (value, member id) of the first
-- member NTILE ranked into it. A member's score in the snapshot is 1 + the starts at or below
-- their own (value, member id): exactly what NTILE gave them, so a page of members is scored
-- from those members' own purchases instead of ranking every buyer again.
CREATE TABLE rfm_snapshot_bounds (
    brand_id TEXT NOT NULL,
    dimension TEXT NOT NULL CHECK (dimension IN ('r', 'f', 'm')),
    score BIGINT NOT NULL CHECK (score BETWEEN 2 AND 5),
    value BIGINT NOT NULL,
    member_id TEXT NOT NULL,
    PRIMARY KEY (brand_id, dimension, score)
);

-- A snapshot taken before this table existed has no starts: drop it, and the next roll-up
-- pass retakes it (until then the scores are ranked live, as before any snapshot).
DELETE FROM rfm_snapshot_cells;
DELETE FROM rfm_snapshot_state;
