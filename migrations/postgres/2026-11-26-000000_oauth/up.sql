-- OAuth 2.1 / OIDC: clients, signing keys, authorization codes, refresh
-- token families, revoked access tokens, and scopes on API keys.
-- Lists (redirect URIs, grant types, scopes, audiences) are stored as one
-- space-separated string: none of their values may contain a space.

CREATE TABLE oauth_clients (
    org_id                      TEXT     NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    client_id                   TEXT     NOT NULL,
    uid                         TEXT     NOT NULL,
    display_name                TEXT     NOT NULL,
    description                 TEXT     NOT NULL,
    client_type                 SMALLINT NOT NULL,
    state                       SMALLINT NOT NULL,
    redirect_uris               TEXT     NOT NULL,
    grant_types                 TEXT     NOT NULL,
    scopes                      TEXT     NOT NULL,
    audiences                   TEXT     NOT NULL,
    -- Seconds.
    access_token_ttl            BIGINT   NOT NULL,
    refresh_token_ttl           BIGINT   NOT NULL,
    -- sa_id of a service account of the same organization.
    service_account             TEXT,
    signing_algorithm           TEXT     NOT NULL,
    -- SHA-256 hex digests; NULL for public clients.
    secret_digest               TEXT,
    previous_secret_digest      TEXT,
    previous_secret_expire_time BIGINT,
    create_time                 BIGINT   NOT NULL,
    update_time                 BIGINT   NOT NULL,
    revision                    BIGINT   NOT NULL,
    PRIMARY KEY (org_id, client_id)
);
CREATE UNIQUE INDEX oauth_clients_uid ON oauth_clients (org_id, uid);

-- Global, not per organization: one issuer, one JWKS. private_key is
-- base64(nonce || AES-256-GCM(PKCS#8 DER)) under the key-encryption key
-- whose fingerprint is kek_id, with the kid as associated data.
CREATE TABLE signing_keys (
    kid             TEXT     NOT NULL PRIMARY KEY,
    algorithm       TEXT     NOT NULL,
    public_jwk      TEXT     NOT NULL,
    private_key     TEXT     NOT NULL,
    kek_id          TEXT     NOT NULL,
    create_time     BIGINT   NOT NULL,
    -- Signs from then on, until deactivate_time; published until retire_time.
    activate_time   BIGINT   NOT NULL,
    deactivate_time BIGINT,
    retire_time     BIGINT
);

-- Single use, short-lived; keyed by the SHA-256 hex digest of the code.
-- family_id: the refresh family the code's exchange started, revoked if the
-- code is presented again (RFC 6749 section 4.1.2).
CREATE TABLE authorization_codes (
    digest         TEXT   NOT NULL PRIMARY KEY,
    org_id         TEXT   NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    client_id      TEXT   NOT NULL,
    user_id        TEXT   NOT NULL,
    redirect_uri   TEXT   NOT NULL,
    scope          TEXT   NOT NULL,
    audience       TEXT   NOT NULL,
    nonce          TEXT,
    code_challenge TEXT,
    auth_time      BIGINT NOT NULL,
    create_time    BIGINT NOT NULL,
    expire_time    BIGINT NOT NULL,
    used_time      BIGINT,
    family_id      TEXT
);
CREATE INDEX authorization_codes_expiry ON authorization_codes (expire_time);

-- One row per refresh token ever issued; a family shares family_id from the
-- sign-in (or grant) that started it. Presenting a used token revokes the
-- family. subject_kind: 1 = user, 2 = service account.
CREATE TABLE refresh_tokens (
    digest       TEXT     NOT NULL PRIMARY KEY,
    family_id    TEXT     NOT NULL,
    org_id       TEXT     NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    client_id    TEXT     NOT NULL,
    subject_kind SMALLINT NOT NULL,
    subject_id   TEXT     NOT NULL,
    scope        TEXT     NOT NULL,
    audience     TEXT     NOT NULL,
    nonce        TEXT,
    auth_time    BIGINT   NOT NULL,
    create_time  BIGINT   NOT NULL,
    -- The family's end: rotation never extends it.
    expire_time  BIGINT   NOT NULL,
    used_time    BIGINT,
    revoke_time  BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_client ON refresh_tokens (org_id, client_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expire_time);

-- Access tokens revoked before their expiry, by jti; purged after expiry.
CREATE TABLE revoked_tokens (
    jti         TEXT   NOT NULL PRIMARY KEY,
    expire_time BIGINT NOT NULL,
    revoke_time BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expire_time);

-- Space-separated scopes; empty: everything the owner's roles grant.
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
