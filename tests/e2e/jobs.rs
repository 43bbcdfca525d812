//! The job queue (`store::jobs`) and the worker (`worker`), on every
//! backend: several workers drain a queue with each job run exactly once;
//! a job whose worker died (its lease ended) runs again elsewhere; failed
//! attempts are retried at the time asked and the job is dead after its
//! last attempt (at once when the failure is permanent); a unique job
//! stays unique under concurrent enqueues; a stopping worker releases what
//! it could not finish.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;
use tollgate_e2e::{TestServer, each_backend};
use tollgate_server::{
    domain::now_micros,
    store::jobs::{DEAD, NewJob, PENDING},
    worker::{Failure, Worker},
};

/// Runs `workers` workers over `server`'s store, each with `handler` for
/// `kind` (4 at a time), until the returned token is cancelled.
fn start_workers<H>(
    server: &TestServer,
    workers: usize,
    kind: &str,
    handler: H,
) -> (CancellationToken, Vec<tokio::task::JoinHandle<()>>)
where
    H: tollgate_server::worker::Handler + Clone,
{
    let token = CancellationToken::new();
    let handles = (0..workers)
        .map(|i| {
            let worker = Worker::new(server.store().clone(), format!("test-worker-{i}"))
                .handle(kind, 4, handler.clone())
                .lease(Duration::from_secs(5))
                .poll(Duration::from_millis(50));
            tokio::spawn(worker.run(token.clone(), Duration::from_secs(1)))
        })
        .collect();
    (token, handles)
}

async fn stop(token: CancellationToken, handles: Vec<tokio::task::JoinHandle<()>>) {
    token.cancel();
    for h in handles {
        h.await.expect("a worker panicked");
    }
}

/// Pending jobs of `kind` (the server's own upkeep jobs are pending too).
async fn pending(store: &tollgate_server::store::Store, kind: &str) -> i64 {
    store
        .job_depths()
        .await
        .expect("the queue's depth")
        .into_iter()
        .find(|d| d.kind == kind)
        .map_or(0, |d| d.pending)
}

/// Waits until `check` holds, for at most `within`.
async fn eventually(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_drain_the_queue_running_each_job_once() {
    each_backend(async |server: &mut TestServer| {
        let runs: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let handler = {
            let runs = runs.clone();
            move |job: tollgate_server::store::jobs::Job| {
                let runs = runs.clone();
                async move {
                    // Long enough that claims overlap.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    *runs.lock().unwrap().entry(job.payload).or_insert(0) += 1;
                    Ok::<(), Failure>(())
                }
            }
        };
        let (token, handles) = start_workers(server, 4, "test.count", handler);
        let store = server.store().clone();
        let mut ids = Vec::new();
        for i in 0..200 {
            assert!(
                store
                    .enqueue(NewJob::new("test.count", i.to_string()))
                    .await?
                    .is_some()
            );
            ids.push(i);
        }
        eventually(Duration::from_secs(30), "200 jobs run", async || {
            runs.lock().unwrap().len() == 200
        })
        .await;
        stop(token, handles).await;
        let runs = runs.lock().unwrap().clone();
        assert!(runs.values().all(|n| *n == 1), "a job ran twice: {runs:?}");
        assert_eq!(pending(&store, "test.count").await, 0, "the queue is empty");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_job_runs_again_after_its_lease() {
    each_backend(async |server: &mut TestServer| {
        let store = server.store().clone();
        store.enqueue(NewJob::new("test.orphan", "x")).await?;
        // A worker claims it and dies: nobody completes it.
        let claimed = store
            .claim_jobs("test.orphan", "dead-worker", 10, 200_000)
            .await?;
        assert_eq!(claimed.len(), 1);
        // Not claimable while leased.
        assert!(
            store
                .claim_jobs("test.orphan", "other", 10, 200_000)
                .await?
                .is_empty()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ran: Arc<Mutex<Vec<(i64, i32)>>> = Arc::default();
        let handler = {
            let ran = ran.clone();
            move |job: tollgate_server::store::jobs::Job| {
                let ran = ran.clone();
                async move {
                    ran.lock().unwrap().push((job.id, job.attempts));
                    Ok::<(), Failure>(())
                }
            }
        };
        let (token, handles) = start_workers(server, 1, "test.orphan", handler);
        eventually(Duration::from_secs(10), "the orphan run", async || {
            !ran.lock().unwrap().is_empty()
        })
        .await;
        stop(token, handles).await;
        assert_eq!(
            *ran.lock().unwrap(),
            [(claimed[0].id, 2)],
            "its second attempt"
        );
        assert_eq!(store.job(claimed[0].id).await?, None, "done");
        // The dead worker's late completion changes nothing.
        assert!(!store.complete_job(claimed[0].id, "dead-worker").await?);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_when_asked_then_dead() {
    each_backend(async |server: &mut TestServer| {
        let store = server.store().clone();
        let attempts: Arc<Mutex<Vec<(String, i32, Instant)>>> = Arc::default();
        let handler = {
            let attempts = attempts.clone();
            move |job: tollgate_server::store::jobs::Job| {
                let attempts = attempts.clone();
                async move {
                    attempts.lock().unwrap().push((
                        job.payload.clone(),
                        job.attempts,
                        Instant::now(),
                    ));
                    match job.payload.as_str() {
                        "flaky" if job.attempts < 3 => Err(Failure {
                            message: format!("attempt {} failed", job.attempts),
                            retry_after: Some(Duration::from_millis(300)),
                            permanent: false,
                        }),
                        "doomed" => Err(Failure {
                            message: "always".into(),
                            retry_after: Some(Duration::from_millis(10)),
                            permanent: false,
                        }),
                        "refused" => Err(Failure::permanent("410 Gone")),
                        _ => Ok(()),
                    }
                }
            }
        };
        let (token, handles) = start_workers(server, 2, "test.fail", handler);
        let enqueue = async |payload: &str| {
            store
                .enqueue(
                    NewJob::new("test.fail", payload)
                        .max_attempts(3)
                        .unique(payload),
                )
                .await
                .unwrap()
                .is_some()
        };
        assert!(enqueue("flaky").await);
        assert!(enqueue("doomed").await);
        assert!(enqueue("refused").await);
        let count = |payload: &'static str| {
            let attempts = attempts.clone();
            move || {
                attempts
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|a| a.0 == payload)
                    .count()
            }
        };
        let (flaky, doomed, refused) = (count("flaky"), count("doomed"), count("refused"));
        eventually(Duration::from_secs(20), "every attempt", async || {
            flaky() == 3 && doomed() == 3 && refused() == 1
        })
        .await;
        // Nothing more: flaky succeeded, the others are dead.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop(token, handles).await;
        assert_eq!((flaky(), doomed(), refused()), (3, 3, 1));
        let log = attempts.lock().unwrap().clone();
        let times: Vec<Instant> = log.iter().filter(|a| a.0 == "flaky").map(|a| a.2).collect();
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= Duration::from_millis(290),
                "retried before the time asked: {:?}",
                pair[1] - pair[0]
            );
        }
        assert_eq!(pending(&store, "test.fail").await, 0, "nothing pending");
        // The dead ones are kept, with why, and no longer block their key.
        assert!(enqueue("refused").await, "a dead job leaves its key free");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_is_recorded_and_a_dead_job_kept() {
    each_backend(async |server: &mut TestServer| {
        let store = server.store().clone();
        store
            .enqueue(NewJob::new("test.record", "p").max_attempts(2))
            .await?;
        let job = store
            .claim_jobs("test.record", "w", 1, 5_000_000)
            .await?
            .remove(0);
        let later = now_micros() + 60_000_000;
        assert!(store.fail_job(&job, "w", "boom", later, false).await?);
        let row = store.job(job.id).await?.expect("kept");
        assert_eq!(
            (row.state, row.attempts, row.run_after),
            (PENDING, 1, later)
        );
        assert_eq!(row.last_error.as_deref(), Some("boom"));
        // Not due before its time.
        assert!(
            store
                .claim_jobs("test.record", "w", 1, 5_000_000)
                .await?
                .is_empty()
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_job_stays_unique_under_concurrent_enqueues() {
    each_backend(async |server: &mut TestServer| {
        let store = server.store().clone();
        let results = tollgate_e2e::concurrently(20, |_| {
            let store = store.clone();
            async move {
                store
                    .enqueue(NewJob::new("test.unique", "").unique("daily-purge"))
                    .await
                    .unwrap()
                    .is_some()
            }
        })
        .await;
        assert_eq!(results.iter().filter(|r| **r).count(), 1, "{results:?}");
        assert_eq!(pending(&store, "test.unique").await, 1);
        // Running still holds the key; done frees it.
        let job = store
            .claim_jobs("test.unique", "w", 1, 5_000_000)
            .await?
            .remove(0);
        let again = || store.enqueue(NewJob::new("test.unique", "").unique("daily-purge"));
        assert_eq!(again().await?, None);
        assert!(store.complete_job(job.id, "w").await?);
        assert!(again().await?.is_some());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_releases_what_it_could_not_finish() {
    each_backend(async |server: &mut TestServer| {
        let store = server.store().clone();
        store.enqueue(NewJob::new("test.slow", "")).await?;
        let started = Arc::new(tokio::sync::Notify::new());
        let handler = {
            let started = started.clone();
            move |_job: tollgate_server::store::jobs::Job| {
                let started = started.clone();
                async move {
                    started.notify_one();
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok::<(), Failure>(())
                }
            }
        };
        let token = CancellationToken::new();
        let worker = Worker::new(store.clone(), "stopping")
            .handle("test.slow", 1, handler)
            .poll(Duration::from_millis(20));
        let run = tokio::spawn(worker.run(token.clone(), Duration::from_millis(200)));
        tokio::time::timeout(Duration::from_secs(10), started.notified())
            .await
            .expect("the job started");
        let stopping = Instant::now();
        token.cancel();
        run.await.expect("the worker stopped");
        assert!(
            stopping.elapsed() < Duration::from_secs(5),
            "the grace bounds the stop"
        );
        assert_eq!(pending(&store, "test.slow").await, 1, "pending again");
        let job = store
            .claim_jobs("test.slow", "next", 1, 5_000_000)
            .await?
            .remove(0);
        assert_eq!(job.attempts, 1, "the released attempt was not counted");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_job_is_kept_with_its_error() {
    each_backend(async |server: &mut TestServer| {
        let store = server.store().clone();
        store
            .enqueue(NewJob::new("test.dead", "").max_attempts(1))
            .await?;
        let job = store
            .claim_jobs("test.dead", "w", 1, 5_000_000)
            .await?
            .remove(0);
        assert!(
            store
                .fail_job(&job, "w", "gone", now_micros(), false)
                .await?
        );
        let row = store.job(job.id).await?.expect("kept");
        assert_eq!((row.state, row.attempts), (DEAD, 1));
        assert!(
            store
                .claim_jobs("test.dead", "w", 1, 5_000_000)
                .await?
                .is_empty()
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_replica_runs_no_job_and_a_worker_replica_serves_no_api() {
    let Some(backend) = tollgate_e2e::backends()
        .into_iter()
        .find(|b| matches!(b, tollgate_e2e::Backend::Postgres { .. }))
    else {
        return;
    };
    let mut api = TestServer::start_configured(&backend, |c| c.roles = "api".into())
        .await
        .unwrap();
    let store = api.store().clone();
    // Upkeep, as a worker would find it: the api replica never runs it.
    let id = store
        .enqueue(NewJob::new(tollgate_server::upkeep::TOKENS, "").unique("roles-test"))
        .await
        .unwrap()
        .expect("enqueued");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let row = store.job(id).await.unwrap().expect("still there");
    assert_eq!(
        (row.state, row.attempts),
        (PENDING, 0),
        "the api replica claimed it"
    );

    // A worker replica on the same database runs it, and serves no API.
    let mut worker = api
        .start_replica(|c| c.roles = "worker".into())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(15),
        "the worker ran the job",
        async || store.job(id).await.unwrap().is_none(),
    )
    .await;
    assert!(
        tokio::net::TcpStream::connect(worker.grpc_addr())
            .await
            .is_err(),
        "a worker-only replica has no API port"
    );
    // The api replica still answers.
    tollgate_e2e::fixtures::create_org(&api.admin(), "split", "Split").await;
    worker.stop().await.unwrap();
    api.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upkeep_purges_expired_tokens_and_old_dead_jobs() {
    each_backend(async |server: &mut TestServer| {
        let store = server.store().clone();
        let ctx = tollgate_server::events::WriteContext::system("test");
        let now = now_micros() / 1_000_000;
        let revoked = |jti: &str, exp: i64| tollgate::tollgate::v1::RevokedToken {
            jti: jti.into(),
            client: "organizations/root/clients/c".into(),
            expire_time: Some(prost_types::Timestamp {
                seconds: exp,
                nanos: 0,
            }),
            ..Default::default()
        };
        store
            .revoke_jti(&ctx, "root", revoked("expired", now - 10))
            .await?;
        store
            .revoke_jti(&ctx, "root", revoked("live", now + 600))
            .await?;
        assert!(store.purge_expired_tokens(1).await? >= 1);
        assert!(
            !store.is_revoked("expired").await?,
            "an expired entry is gone"
        );
        assert!(store.is_revoked("live").await?, "a live one stays");

        let id = store
            .enqueue(NewJob::new("test.purge", "").max_attempts(1))
            .await?
            .expect("enqueued");
        let job = store
            .claim_jobs("test.purge", "w", 1, 5_000_000)
            .await?
            .remove(0);
        assert!(
            store
                .fail_job(&job, "w", "gone", now_micros(), false)
                .await?
        );
        // Kept while recent, purged once old enough.
        let week = tollgate_server::upkeep::DEAD_JOBS_KEPT.as_micros() as i64;
        assert_eq!(store.purge_dead_jobs(now_micros() - week, 10).await?, 0);
        assert!(store.job(id).await?.is_some());
        assert_eq!(store.purge_dead_jobs(now_micros() + 1, 10).await?, 1);
        assert_eq!(store.job(id).await?, None);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_signing_key_rotation_runs_as_an_upkeep_job() {
    let backend = tollgate_e2e::Backend::Sqlite;
    let mut server = TestServer::start_configured(&backend, |c| {
        c.signing_key_rotation = Some(Duration::from_secs(1));
    })
    .await
    .unwrap();
    let store = server.store().clone();
    let before = store.count_signing_keys().await.unwrap();
    // The first run comes a few seconds after start; the keys made at
    // start are older than the 1 s schedule by then.
    eventually(
        Duration::from_secs(30),
        "upkeep.keys rotated the signing keys",
        async || store.count_signing_keys().await.unwrap() > before,
    )
    .await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_readyz_says_whether_it_can_claim_jobs() {
    use diesel::connection::SimpleConnection as _;
    each_backend(async |server: &mut TestServer| {
        let ready = tollgate_e2e::http::get(server.admin_addr(), "/readyz").await?;
        assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
        // The database answers, but the queue is gone: claims fail.
        server
            .store()
            .db
            .run(|conn| Ok(conn.batch_execute("DROP TABLE jobs")?))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let refused = loop {
            let r = tollgate_e2e::http::get(server.admin_addr(), "/readyz").await?;
            if r.status == 503 {
                break r;
            }
            assert!(Instant::now() < deadline, "still ready: {r:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(refused.body, "not ready: the worker cannot claim jobs\n");
        // The API still serves: only the worker is unable.
        tollgate_e2e::fixtures::create_org(&server.admin(), "still", "Still").await;
        Ok(())
    })
    .await;
}
