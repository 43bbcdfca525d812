-- The W3C traceparent of the change whose event a delivery carries, so
-- the delivery's span links back to it (empty when traces were off).
ALTER TABLE webhook_deliveries ADD COLUMN trace_parent TEXT NOT NULL DEFAULT '';
