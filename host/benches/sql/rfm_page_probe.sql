-- RFM member pages: the snapshot's page against live ranking, and the snapshot's refresh
-- before and after it kept quintile starts, on 1,000,000 members and 10,000,000 purchases.
-- A SQL probe with the statements of host/src/domain/rfm.rs on a table shaped like
-- `purchases` (only the columns they read), so it runs in about a minute without the scale
-- bench's hour of generation. Reproduce (docs/BENCHMARKS.md, "RFM member pages"):
--   psql -h 127.0.0.1 -U postgres -c 'CREATE DATABASE rfm_probe'
--   psql -h 127.0.0.1 -U postgres -d rfm_probe -f host/benches/sql/rfm_page_probe.sql
--   psql -h 127.0.0.1 -U postgres -c 'DROP DATABASE rfm_probe'
\set ON_ERROR_STOP on
CREATE TABLE purchases (id TEXT PRIMARY KEY, member_id TEXT NOT NULL, brand_id TEXT NOT NULL,
                        created_at BIGINT NOT NULL, total_cents BIGINT NOT NULL);
-- 10 purchases each for 1,000,000 members at 20 brands, 3 s apart.
INSERT INTO purchases
SELECT 'p' || g, 'mem_' || lpad(((g::bigint * 7919) % 1000000)::text, 7, '0'), 'b' || (g % 20),
       1700000000000 + g::bigint * 3000, 100 + g % 9000
FROM generate_series(1, 10000000) g;
CREATE INDEX purchases_by_member ON purchases (member_id, created_at);
CREATE INDEX purchases_by_time ON purchases (created_at);
CREATE TABLE rfm_snapshot_cells (brand_id TEXT NOT NULL, r BIGINT NOT NULL, f BIGINT NOT NULL,
                                 m BIGINT NOT NULL, members BIGINT NOT NULL,
                                 PRIMARY KEY (brand_id, r, f, m));
CREATE TABLE rfm_snapshot_bounds (brand_id TEXT NOT NULL, dimension TEXT NOT NULL,
                                  score BIGINT NOT NULL, value BIGINT NOT NULL,
                                  member_id TEXT NOT NULL,
                                  PRIMARY KEY (brand_id, dimension, score));
ANALYZE;
\timing on
BEGIN;
-- before: the coalition's cells, one ranking
INSERT INTO rfm_snapshot_cells (brand_id, r, f, m, members)
SELECT '', r, f, m, CAST(COUNT(*) AS BIGINT) FROM (
SELECT member_id, last_at, orders, spend_cents,
            CAST(NTILE(5) OVER (ORDER BY last_at, member_id) AS BIGINT) AS r,
            CAST(NTILE(5) OVER (ORDER BY orders, member_id) AS BIGINT) AS f,
            CAST(NTILE(5) OVER (ORDER BY spend_cents, member_id) AS BIGINT) AS m
         FROM (SELECT member_id, CAST(MAX(created_at) AS BIGINT) AS last_at,
                      CAST(COUNT(*) AS BIGINT) AS orders,
                      CAST(COALESCE(SUM(total_cents), 0) AS BIGINT) AS spend_cents
               FROM purchases WHERE created_at < 1800000000000 GROUP BY member_id) per_member) s GROUP BY r, f, m;
ROLLBACK;
BEGIN;
-- after: one ranking into a temporary table, cells and starts from it
CREATE TEMPORARY TABLE rfm_scored AS SELECT '' AS brand_id, member_id, last_at, orders, spend_cents, r, f, m FROM (
SELECT member_id, last_at, orders, spend_cents,
            CAST(NTILE(5) OVER (ORDER BY last_at, member_id) AS BIGINT) AS r,
            CAST(NTILE(5) OVER (ORDER BY orders, member_id) AS BIGINT) AS f,
            CAST(NTILE(5) OVER (ORDER BY spend_cents, member_id) AS BIGINT) AS m
         FROM (SELECT member_id, CAST(MAX(created_at) AS BIGINT) AS last_at,
                      CAST(COUNT(*) AS BIGINT) AS orders,
                      CAST(COALESCE(SUM(total_cents), 0) AS BIGINT) AS spend_cents
               FROM purchases WHERE created_at < 1800000000000 GROUP BY member_id) per_member) scored;
INSERT INTO rfm_snapshot_cells (brand_id, r, f, m, members) SELECT brand_id, r, f, m, CAST(COUNT(*) AS BIGINT) FROM rfm_scored GROUP BY brand_id, r, f, m;
INSERT INTO rfm_snapshot_bounds (brand_id, dimension, score, value, member_id)
SELECT brand_id, dimension, score, value, member_id FROM (
 SELECT brand_id, 'r' AS dimension, r AS score, last_at AS value, member_id, ROW_NUMBER() OVER (PARTITION BY brand_id, r ORDER BY last_at, member_id) AS rn FROM rfm_scored
 UNION ALL SELECT brand_id, 'f', f, orders, member_id, ROW_NUMBER() OVER (PARTITION BY brand_id, f ORDER BY orders, member_id) FROM rfm_scored
 UNION ALL SELECT brand_id, 'm', m, spend_cents, member_id, ROW_NUMBER() OVER (PARTITION BY brand_id, m ORDER BY spend_cents, member_id) FROM rfm_scored) starts
WHERE rn = 1 AND score > 1;
DROP TABLE rfm_scored;
COMMIT;
-- A page of 100 members scored from the snapshot (custom and generic plans; the coalition,
-- then one brand).
PREPARE page(bigint, text, text, text) AS
SELECT p.member_id, p.last_at, p.orders, p.spend_cents,
 CAST(1 + (SELECT COUNT(*) FROM rfm_snapshot_bounds b WHERE b.brand_id = $4 AND b.dimension = 'r' AND (b.value < p.last_at OR (b.value = p.last_at AND b.member_id <= p.member_id))) AS BIGINT),
 CAST(1 + (SELECT COUNT(*) FROM rfm_snapshot_bounds b WHERE b.brand_id = $4 AND b.dimension = 'f' AND (b.value < p.orders OR (b.value = p.orders AND b.member_id <= p.member_id))) AS BIGINT),
 CAST(1 + (SELECT COUNT(*) FROM rfm_snapshot_bounds b WHERE b.brand_id = $4 AND b.dimension = 'm' AND (b.value < p.spend_cents OR (b.value = p.spend_cents AND b.member_id <= p.member_id))) AS BIGINT)
FROM (SELECT member_id, CAST(MAX(created_at) AS BIGINT) AS last_at, CAST(COUNT(*) AS BIGINT) AS orders,
             CAST(COALESCE(SUM(total_cents), 0) AS BIGINT) AS spend_cents
      FROM purchases WHERE created_at < $1 AND ($2 IS NULL OR brand_id = $2) AND member_id > $3
      GROUP BY member_id ORDER BY member_id LIMIT 100) p
ORDER BY p.member_id;
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE page(1800000000000, NULL, 'mem_0500000', '');
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE page(1800000000000, 'b3', 'mem_0500000', 'b3');
SET plan_cache_mode = force_generic_plan;
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE page(1800000000000, NULL, '', '');
EXPLAIN (ANALYZE, COSTS OFF) EXECUTE page(1800000000000, 'b3', 'mem_0900000', 'b3');
RESET plan_cache_mode;
-- The same page ranked live (what `members=true` did before, and still does without a
-- snapshot).
SELECT count(*) FROM (SELECT member_id, last_at, orders, spend_cents, r, f, m FROM (
SELECT member_id, last_at, orders, spend_cents,
            CAST(NTILE(5) OVER (ORDER BY last_at, member_id) AS BIGINT) AS r,
            CAST(NTILE(5) OVER (ORDER BY orders, member_id) AS BIGINT) AS f,
            CAST(NTILE(5) OVER (ORDER BY spend_cents, member_id) AS BIGINT) AS m
         FROM (SELECT member_id, CAST(MAX(created_at) AS BIGINT) AS last_at,
                      CAST(COUNT(*) AS BIGINT) AS orders,
                      CAST(COALESCE(SUM(total_cents), 0) AS BIGINT) AS spend_cents
               FROM purchases WHERE (NULL IS NULL OR brand_id = NULL) GROUP BY member_id) per_member) s
             WHERE member_id > '' ORDER BY member_id LIMIT 100) x;
