-- Rate-limit policies (tollgate.v1.RateLimitPolicy), one row per policy.
-- Selector columns: NULL (or an empty JSON object) matches anything.
-- headers and descriptors are JSON objects {"key": "value"}, keys sorted;
-- an empty value matches any value. Enums are stored as their proto
-- numbers, never 0 (the default is written out): rate_period is
-- RateLimit.Period, quota_period RateLimitQuota.Period, algorithm,
-- failure_mode and key_by the RateLimitPolicy enums. shadow is 0 or 1.

CREATE TABLE rate_limit_policies (
    org_id        TEXT     NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    policy_id     TEXT     NOT NULL,
    uid           TEXT     NOT NULL,
    display_name  TEXT     NOT NULL,
    -- A full method path, or a prefix ending in '*'.
    method        TEXT,
    -- Resource names, of the policy's organization.
    principal     TEXT,
    api_key       TEXT,
    oauth_client  TEXT,
    headers       TEXT     NOT NULL,
    descriptors   TEXT     NOT NULL,
    -- The rate (all NULL without one); rate_burst NULL means rate_limit.
    rate_limit    BIGINT,
    rate_period   SMALLINT,
    rate_burst    BIGINT,
    -- The quota (both NULL without one).
    quota_limit   BIGINT,
    quota_period  SMALLINT,
    algorithm     SMALLINT NOT NULL,
    shadow        SMALLINT NOT NULL,
    failure_mode  SMALLINT NOT NULL,
    key_by        SMALLINT NOT NULL,
    create_time   BIGINT   NOT NULL,
    -- Every write raises the table's greatest update_time (see
    -- store::rate_limit_policies), so (COUNT(*), MAX(update_time)) changes
    -- with every change: the fingerprint replicas poll.
    update_time   BIGINT   NOT NULL,
    revision      BIGINT   NOT NULL,
    PRIMARY KEY (org_id, policy_id)
);
CREATE UNIQUE INDEX rate_limit_policies_uid ON rate_limit_policies (org_id, uid);
CREATE INDEX rate_limit_policies_update_time ON rate_limit_policies (update_time);
