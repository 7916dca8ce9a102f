-- A budget may cap one campaign's coupons instead of every issue of its kind: `campaign_id`
-- NULL applies to every issue (as before); set, it applies only to that campaign's issues.
ALTER TABLE budgets ADD COLUMN campaign_id TEXT REFERENCES campaigns (id);
