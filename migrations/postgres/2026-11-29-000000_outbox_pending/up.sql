-- Unrelayed events, by id, in a narrow table of their own: the relay reads
-- the oldest ids from its primary key and deletes them once published.
-- Marking a column of the outbox instead rewrote the row and every one of
-- its index entries per event (about 30 µs of PostgreSQL per event); an
-- insert and a delete here cost a few.
CREATE TABLE outbox_pending (id BIGINT PRIMARY KEY);
INSERT INTO outbox_pending (id) SELECT id FROM outbox WHERE relay_time IS NULL;
DROP INDEX outbox_unrelayed;
ALTER TABLE outbox DROP COLUMN relay_time;
