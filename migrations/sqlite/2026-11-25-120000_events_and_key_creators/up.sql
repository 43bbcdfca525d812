-- Events carry who made the change and under which request (the actor is a
-- principal's resource name, or 'system'), and the payload is now an encoded
-- tollgate.v1.Event (base64). relay_time is set when the relay has published
-- a row; the audit log keeps rows after that.
ALTER TABLE outbox ADD COLUMN actor TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN request_id TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN relay_time BIGINT;
-- Rows written before this migration carry the bare resource, not an Event,
-- and were never published: mark them so the relay never sends the old shape.
UPDATE outbox SET relay_time = create_time;
-- The relay: unrelayed rows of an organization in id (= commit) order.
CREATE INDEX outbox_unrelayed ON outbox (org_id, id) WHERE relay_time IS NULL;

-- Who minted a key (a principal's resource name, or 'system'), and the
-- highest role the key may exercise: the minter's own rank in the owner's
-- organization when someone else minted it, so a later promotion of the
-- owner never hands the minter more than it had. NULL: no cap (the owner's
-- own keys, keys minted by platform admins or by the system).
ALTER TABLE api_keys ADD COLUMN creator TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN role_cap TEXT;
