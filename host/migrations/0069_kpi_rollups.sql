-- Daily roll-ups of the key figures (workflows/kpi_rollups.rs): a closed local day's orders,
-- sales, points and buyers per brand and for the coalition, so that a year of figures reads a
-- few hundred rows instead of every purchase and posting.

-- The roll-up job and the open days' reads find a day's purchases and points postings by time.
CREATE INDEX purchases_by_time ON purchases (created_at);
CREATE INDEX ledger_postings_points_by_time ON ledger_postings (created_at)
    WHERE account IN ('issuance', 'adjustment', 'redemption', 'expiry');
-- A brand's outstanding points (an index-only scan where the database has them).
CREATE INDEX point_lots_outstanding_by_brand ON point_lots (brand_id, expires_at, remaining)
    WHERE remaining > 0;
-- The coalition's member count at the end of a range.
CREATE INDEX members_by_created ON members (created_at);

-- Dense numbers for the buyer sets (compressed bitmaps index members by a small integer),
-- assigned by the roll-up job in the order members first buy. No foreign key: a number outlives
-- nothing and blocks nothing.
CREATE TABLE kpi_member_numbers (
    member_id TEXT PRIMARY KEY,
    no BIGINT NOT NULL UNIQUE CHECK (no >= 1)
);

-- One row per closed local day (days since 1970 at the programme's offset) and brand; brand ''
-- is the coalition. `buyers` are the members with a purchase that day, `repeat_buyers` those
-- with two or more: roaring bitmaps of member numbers, base64.
CREATE TABLE kpi_days (
    brand_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    orders BIGINT NOT NULL CHECK (orders >= 0),
    sales_cents BIGINT NOT NULL CHECK (sales_cents >= 0),
    points_issued BIGINT NOT NULL,
    points_redeemed BIGINT NOT NULL,
    points_expired BIGINT NOT NULL,
    buyers TEXT NOT NULL,
    repeat_buyers TEXT NOT NULL,
    PRIMARY KEY (brand_id, day)
);

-- Days before `closed_before_day` are rolled up, at `offset_minutes` (a new offset starts the
-- roll-up over).
CREATE TABLE kpi_rollup_state (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    offset_minutes BIGINT NOT NULL,
    closed_before_day BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The RFM distribution as of the last closed day (domain/rfm.rs): members per (R, F, M)
-- combination, coalition-wide (brand '') and per brand, over the purchases before `as_of_ms`.
-- Recomputed by the roll-up job whenever it closes days; `GET /segments/rfm` reads it.
CREATE TABLE rfm_snapshot_cells (
    brand_id TEXT NOT NULL,
    r BIGINT NOT NULL,
    f BIGINT NOT NULL,
    m BIGINT NOT NULL,
    members BIGINT NOT NULL,
    PRIMARY KEY (brand_id, r, f, m)
);
CREATE TABLE rfm_snapshot_state (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    as_of_ms BIGINT NOT NULL,
    computed_at BIGINT NOT NULL
);
