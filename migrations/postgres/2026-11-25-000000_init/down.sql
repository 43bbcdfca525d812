DROP TABLE outbox;
DROP TABLE api_keys;
DROP TABLE service_accounts;
DROP TABLE users;
DROP TABLE organizations;
