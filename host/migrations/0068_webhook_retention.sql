-- The worker purges delivered deliveries older than `[webhooks] retention_days`, oldest first.
CREATE INDEX webhook_deliveries_delivered ON webhook_deliveries (status, delivered_at);
