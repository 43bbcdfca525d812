-- Tenant-scoped tables carry org_id first in their primary key so the schema
-- can later be distributed by organization (Citus); every query filters on it.

CREATE TABLE organizations (
    org_id       TEXT     NOT NULL PRIMARY KEY,
    uid          TEXT     NOT NULL,
    display_name TEXT     NOT NULL,
    state        SMALLINT NOT NULL,
    create_time  BIGINT   NOT NULL,
    update_time  BIGINT   NOT NULL,
    revision     BIGINT   NOT NULL
);
CREATE UNIQUE INDEX organizations_uid ON organizations (uid);

CREATE TABLE users (
    org_id        TEXT     NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    user_id       TEXT     NOT NULL,
    uid           TEXT     NOT NULL,
    display_name  TEXT     NOT NULL,
    email         TEXT     NOT NULL,
    state         SMALLINT NOT NULL,
    roles         TEXT     NOT NULL,
    password_hash TEXT,
    create_time   BIGINT   NOT NULL,
    update_time   BIGINT   NOT NULL,
    revision      BIGINT   NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
-- Emails are stored lower-cased and unique within an organization.
CREATE UNIQUE INDEX users_email ON users (org_id, email);
CREATE UNIQUE INDEX users_uid ON users (org_id, uid);

CREATE TABLE service_accounts (
    org_id       TEXT     NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    sa_id        TEXT     NOT NULL,
    uid          TEXT     NOT NULL,
    display_name TEXT     NOT NULL,
    description  TEXT     NOT NULL,
    state        SMALLINT NOT NULL,
    roles        TEXT     NOT NULL,
    create_time  BIGINT   NOT NULL,
    update_time  BIGINT   NOT NULL,
    revision     BIGINT   NOT NULL,
    PRIMARY KEY (org_id, sa_id)
);
CREATE UNIQUE INDEX service_accounts_uid ON service_accounts (org_id, uid);

-- owner_kind: 1 = user, 2 = service account. Keys of a deleted owner are
-- deleted in the same transaction as the owner; owner_uid binds a key to
-- its owner so that a principal re-created under the same name never
-- inherits a key a stale cache still holds.
CREATE TABLE api_keys (
    org_id       TEXT     NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    key_id       TEXT     NOT NULL,
    owner_kind   SMALLINT NOT NULL,
    owner_id     TEXT     NOT NULL,
    owner_uid    TEXT     NOT NULL,
    display_name TEXT     NOT NULL,
    digest       TEXT     NOT NULL,
    state        SMALLINT NOT NULL,
    expire_time  BIGINT,
    create_time  BIGINT   NOT NULL,
    revoke_time  BIGINT,
    revision     BIGINT   NOT NULL,
    PRIMARY KEY (org_id, key_id)
);
-- Authentication looks a key up by the id embedded in it, without the org.
-- Key ids are 80 random bits; under Citus this index becomes non-unique.
CREATE UNIQUE INDEX api_keys_key_id ON api_keys (key_id);
-- ListApiKeys: keyset scan of one owner's keys.
CREATE INDEX api_keys_owner ON api_keys (org_id, owner_kind, owner_id, key_id);

-- Every state change appends a row here in the same transaction as the
-- change; the relay (events) publishes them in id order per organization.
CREATE TABLE outbox (
    id          BIGSERIAL PRIMARY KEY,
    org_id      TEXT   NOT NULL,
    event_type  TEXT   NOT NULL,
    resource    TEXT   NOT NULL,
    payload     TEXT   NOT NULL,
    create_time BIGINT NOT NULL
);
