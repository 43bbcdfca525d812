-- The job queue (server/src/store/jobs.rs): background work claimed by
-- workers under a lease. state: 0 pending, 1 running, 2 dead; a done job
-- is deleted.
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT     NOT NULL,
    payload      TEXT     NOT NULL,
    unique_key   TEXT,
    priority     SMALLINT NOT NULL DEFAULT 0,
    state        SMALLINT NOT NULL,
    run_after    BIGINT   NOT NULL,
    attempts     INTEGER  NOT NULL DEFAULT 0,
    max_attempts INTEGER  NOT NULL,
    last_error   TEXT,
    lease_owner  TEXT,
    lease_expiry BIGINT,
    create_time  BIGINT   NOT NULL,
    update_time  BIGINT   NOT NULL
);
-- A claim: a kind's due pending jobs, highest priority first.
CREATE INDEX jobs_due ON jobs (kind, priority DESC, run_after, id) WHERE state = 0;
-- Taking back expired leases.
CREATE INDEX jobs_leases ON jobs (lease_expiry) WHERE state = 1;
-- At most one pending or running job per unique key.
CREATE UNIQUE INDEX jobs_unique ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN (0, 1);
