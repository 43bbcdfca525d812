-- Usage counters (issue 9): calls, refusals and cost per organization,
-- minute, principal, API key and method, written by every replica's usage
-- flush as additive upserts (calls = calls + excluded.calls), never a
-- write per call.
--
-- bucket_start: the minute's start, microseconds since the epoch like every
-- other time here, so hour and day buckets are integer arithmetic on both
-- backends. principal and api_key are resource names; api_key is '' for
-- calls made with an access token. method is the request path,
-- `/tollgate.v1.UserService/GetUser`.
--
-- The primary key leads with (org_id, bucket_start): it is also the index
-- GetUsage's time-range scan of one organization uses (the other filters
-- narrow the rows it reads), so an upsert maintains one index, not two.
CREATE TABLE usage_minutes (
    org_id       TEXT   NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    bucket_start BIGINT NOT NULL,
    principal    TEXT   NOT NULL,
    api_key      TEXT   NOT NULL,
    method       TEXT   NOT NULL,
    calls        BIGINT NOT NULL,
    refused      BIGINT NOT NULL,
    cost         BIGINT NOT NULL,
    PRIMARY KEY (org_id, bucket_start, principal, api_key, method)
);

-- The start of the latest minute the key authenticated a call in, set by
-- the usage flush (never lowered); NULL until first used. Not a change of
-- the key: no revision bump, no event.
ALTER TABLE api_keys ADD COLUMN last_used_time BIGINT;
