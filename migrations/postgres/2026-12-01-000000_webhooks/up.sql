-- Webhooks (server/src/store/webhooks.rs): an organization's HTTP
-- endpoints for its events. state: 1 active, 2 disabled. Secrets are
-- sealed with the key-encryption key (AES-256-GCM, bound to the uid):
-- signing needs the secret itself, so a digest would not do.
CREATE TABLE webhooks (
    org_id                      TEXT     NOT NULL,
    webhook_id                  TEXT     NOT NULL,
    uid                         TEXT     NOT NULL,
    display_name                TEXT     NOT NULL,
    description                 TEXT     NOT NULL,
    url                         TEXT     NOT NULL,
    event_types                 TEXT     NOT NULL,
    state                       SMALLINT NOT NULL,
    secret_sealed               TEXT     NOT NULL,
    previous_secret_sealed      TEXT,
    previous_secret_expire_time BIGINT,
    create_time                 BIGINT   NOT NULL,
    update_time                 BIGINT   NOT NULL,
    revision                    BIGINT   NOT NULL,
    PRIMARY KEY (org_id, webhook_id)
);
-- The relay's fan-out: an organization's active webhooks.
CREATE INDEX webhooks_active ON webhooks (org_id) WHERE state = 1;

-- One event to one webhook. status: 1 pending, 2 succeeded, 3 dead. Made
-- by the relay in the transaction that marks the event relayed, so each
-- (webhook, event) exists once; sent in event_id order per webhook.
CREATE TABLE webhook_deliveries (
    org_id              TEXT     NOT NULL,
    webhook_id          TEXT     NOT NULL,
    event_id            BIGINT   NOT NULL,
    event_type          TEXT     NOT NULL,
    status              SMALLINT NOT NULL,
    attempts            INTEGER  NOT NULL DEFAULT 0,
    last_response_code  INTEGER  NOT NULL DEFAULT 0,
    last_error          TEXT     NOT NULL DEFAULT '',
    last_latency_micros BIGINT   NOT NULL DEFAULT 0,
    body                TEXT     NOT NULL,
    create_time         BIGINT   NOT NULL,
    last_attempt_time   BIGINT,
    next_attempt_time   BIGINT   NOT NULL,
    PRIMARY KEY (org_id, webhook_id, event_id)
);
-- A webhook's pump: its pending deliveries in event order.
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (org_id, webhook_id, event_id)
    WHERE status = 1;
-- Retention: finished deliveries by age.
CREATE INDEX webhook_deliveries_age ON webhook_deliveries (create_time) WHERE status <> 1;
