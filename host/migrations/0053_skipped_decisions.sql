-- Plugin decisions the host refused, cut or skipped while recording a purchase (a failed
-- bonus plugin, a bonus over the order's cap), kept with the purchase so a member's dispute is
-- answered from the record rather than from logs or metrics.
CREATE TABLE purchase_skipped_decisions (
    purchase_id TEXT NOT NULL REFERENCES purchases (id),
    position BIGINT NOT NULL,
    plugin TEXT NOT NULL,
    version TEXT NOT NULL,
    hook TEXT NOT NULL,
    code TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (purchase_id, position)
);
