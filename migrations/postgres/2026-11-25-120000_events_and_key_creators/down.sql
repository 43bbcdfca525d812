ALTER TABLE api_keys DROP COLUMN role_cap;
ALTER TABLE api_keys DROP COLUMN creator;
DROP INDEX outbox_unrelayed;
ALTER TABLE outbox DROP COLUMN relay_time;
ALTER TABLE outbox DROP COLUMN request_id;
ALTER TABLE outbox DROP COLUMN actor;
