ALTER TABLE outbox ADD COLUMN relay_time BIGINT;
UPDATE outbox SET relay_time = create_time
    WHERE id NOT IN (SELECT id FROM outbox_pending);
CREATE INDEX outbox_unrelayed ON outbox (org_id, id) WHERE relay_time IS NULL;
DROP TABLE outbox_pending;
