-- The audit log (ListEvents): an organization's events in id order, and one
-- index per filter, each (org_id, column, id) so a filtered page is a keyset
-- range scan of one index. text_pattern_ops lets `resource LIKE 'prefix%'`
-- (a prefix filter) use the index whatever the database's collation.
CREATE INDEX outbox_org ON outbox (org_id, id);
CREATE INDEX outbox_org_type ON outbox (org_id, event_type, id);
CREATE INDEX outbox_org_actor ON outbox (org_id, actor, id);
CREATE INDEX outbox_org_resource ON outbox (org_id, resource text_pattern_ops, id);
CREATE INDEX outbox_org_time ON outbox (org_id, create_time, id);
-- Retention deletes by age.
CREATE INDEX outbox_create_time ON outbox (create_time);
