-- A counter can cancel an open checkout (the customer walks away): its coupons are released at
-- once instead of staying reserved until the checkout's TTL. Kept beside `checkouts` (rather
-- than a new status) so the table needs no rebuild; a cancelled checkout completes nothing.
CREATE TABLE checkout_cancellations (
    checkout_id TEXT PRIMARY KEY REFERENCES checkouts (id),
    cancelled_by TEXT NOT NULL,                -- key id
    reason TEXT NOT NULL,
    cancelled_at BIGINT NOT NULL
);
