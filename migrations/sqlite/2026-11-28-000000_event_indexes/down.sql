DROP INDEX outbox_create_time;
DROP INDEX outbox_org_time;
DROP INDEX outbox_org_resource;
DROP INDEX outbox_org_actor;
DROP INDEX outbox_org_type;
DROP INDEX outbox_org;
