//! The signing keys on every backend, through the store and the key ring
//! directly (no server): one key per algorithm at first start even when
//! replicas race, rotation (published before it signs, old tokens verify
//! until the old key retires, then not), the schedule rotating once across
//! replicas, and refusing to start with a missing or different
//! key-encryption key. Time is a manual clock, so nothing sleeps.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{Value, json};
use tempfile::TempDir;
use tollgate::tollgate::v1::signing_key::State;
use tollgate_e2e::{Backend, PgSchema, backends, concurrently, outbox};
use tollgate_server::{
    Config,
    domain::now_micros,
    events::WriteContext,
    oauth::keys::{
        ACTIVATION_DELAY, Algorithm, Clock, Expect, Kek, KeyRing, RETIRE_AFTER, VerifyError,
    },
    store::Store,
};

const ISS: &str = "https://auth.example.com";

/// A fresh, migrated database and a key-encryption key file beside it.
struct Fresh {
    dir: TempDir,
    url: String,
    _schema: Option<PgSchema>,
}

impl Fresh {
    async fn new(backend: &Backend) -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        let (url, schema) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("tollgate.db").display()),
                None,
            ),
            Backend::Postgres { url } => {
                let schema = PgSchema::create(url).await.unwrap();
                (schema.url().to_owned(), Some(schema))
            }
        };
        Fresh {
            dir,
            url,
            _schema: schema,
        }
    }

    fn kek_path(&self) -> PathBuf {
        self.dir.path().join("kek")
    }

    fn kek(&self) -> Kek {
        let path = self.kek_path();
        if path.exists() {
            Kek::load(&path).unwrap()
        } else {
            Kek::create_file(&path).unwrap()
        }
    }

    fn config(&self) -> Config {
        Config {
            database_url: self.url.clone(),
            db_pool_size: 4,
            ..Default::default()
        }
    }

    async fn store(&self) -> Store {
        tollgate_server::open_store(&self.config()).await.unwrap()
    }
}

fn claims(sub: &str) -> Value {
    let now = now_micros() / 1_000_000;
    json!({"iss": ISS, "sub": sub, "exp": now + 600, "nbf": now, "iat": now})
}

fn expect() -> Expect<'static> {
    Expect {
        typ: "at+jwt",
        issuer: ISS,
        audience: None,
        leeway_secs: 60,
    }
}

fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

fn jwks_kids(ring: &KeyRing) -> Vec<String> {
    let doc: Value = serde_json::from_slice(&ring.jwks()).unwrap();
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn created_events(url: &str) -> Vec<outbox::Row> {
    outbox::rows_after(url, 0)
        .await
        .into_iter()
        .filter(|r| r.event_type == "signingKey.created")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_makes_one_key_per_algorithm_even_when_replicas_race() {
    for backend in backends() {
        eprintln!("=== {backend}");
        let fresh = Fresh::new(&backend).await;
        fresh.kek();
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(fresh.store().await);
        }
        let path = fresh.kek_path();
        let rings = concurrently(4, |i| {
            let store = stores[i].clone();
            let path = path.clone();
            async move {
                KeyRing::load_or_init(&store, Kek::load(&path).unwrap(), Clock::system()).await
            }
        })
        .await;
        let rings: Vec<KeyRing> = rings.into_iter().map(|r| r.unwrap()).collect();
        let store = &stores[0];
        let keys = rings[0].list(store, true).await.unwrap();
        assert_eq!(keys.len(), 3, "[{backend}] one key per algorithm: {keys:?}");
        let mut algs: Vec<&str> = keys.iter().map(|k| k.algorithm.as_str()).collect();
        algs.sort();
        assert_eq!(algs, ["ES256", "EdDSA", "RS256"]);
        assert!(keys.iter().all(|k| k.state == State::Active as i32));
        for ring in &rings {
            ring.refresh(store).await.unwrap();
            assert_eq!(
                ring.jwks(),
                rings[0].jwks(),
                "[{backend}] every replica agrees"
            );
        }
        let events = created_events(&fresh.url).await;
        assert_eq!(events.len(), 3, "[{backend}] one event per key");
        for e in &events {
            assert_eq!(e.org_id, "root");
            assert_eq!(e.actor, "system");
            assert!(e.event.resource.starts_with("signingKeys/"));
            let dump = format!("{:?}", e.event);
            assert!(!dump.contains("private"), "no private part in the event");
        }
        // A token signed by one replica verifies on another.
        let t = rings[1]
            .sign(Algorithm::RS256, "at+jwt", &claims("s"))
            .unwrap();
        rings[2].verify::<Value>(&t, &expect()).unwrap();
    }
}

/// The store's half of the race above, without key generation spreading
/// the writers out: eight writers released at once each offer a set of
/// three keys; exactly one set lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_key_writers_insert_one_set() {
    use std::sync::Arc;
    use tollgate_server::store::signing_keys::SigningKeyRow;
    for backend in backends() {
        eprintln!("=== {backend}");
        let fresh = Fresh::new(&backend).await;
        let mut stores = Vec::new();
        for _ in 0..8 {
            stores.push(fresh.store().await);
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let now = now_micros();
        let inserted = concurrently(8, |i| {
            let store = stores[i].clone();
            let barrier = barrier.clone();
            async move {
                let rows = Algorithm::ALL
                    .iter()
                    .map(|alg| SigningKeyRow {
                        kid: format!("w{i}-{alg}"),
                        algorithm: alg.as_str().into(),
                        public_jwk: "{}".into(),
                        private_key: "sealed".into(),
                        kek_id: "test".into(),
                        create_time: now,
                        activate_time: now,
                        deactivate_time: None,
                        retire_time: None,
                    })
                    .collect();
                barrier.wait().await;
                store
                    .create_first_signing_keys(rows, now)
                    .await
                    .unwrap()
                    .len()
            }
        })
        .await;
        assert_eq!(
            inserted.iter().sum::<usize>(),
            3,
            "[{backend}] {inserted:?}"
        );
        assert_eq!(stores[0].count_signing_keys().await.unwrap(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_published_before_it_signs_and_the_old_one_until_its_tokens_expire() {
    for backend in backends() {
        eprintln!("=== {backend}");
        let fresh = Fresh::new(&backend).await;
        let store = fresh.store().await;
        let clock = Clock::manual(now_micros());
        let ring = KeyRing::load_or_init(&store, fresh.kek(), clock.clone())
            .await
            .unwrap();
        // Another replica, on its own store, with the same (manual) time.
        let replica = KeyRing::load_or_init(&fresh.store().await, fresh.kek(), clock.clone())
            .await
            .unwrap();
        let old_token = ring
            .sign(Algorithm::EdDSA, "at+jwt", &claims("old"))
            .unwrap();
        let old = kid_of(&old_token);

        let ctx = WriteContext::new("organizations/root/serviceAccounts/admin", "rotate-1");
        let new = ring
            .rotate(&store, &ctx, Algorithm::EdDSA, false)
            .await
            .unwrap();
        let new_kid = new.name.strip_prefix("signingKeys/").unwrap().to_owned();
        assert_eq!(new.state, State::Pending as i32, "[{backend}]");
        assert!(jwks_kids(&ring).contains(&new_kid), "published at once");
        assert!(jwks_kids(&ring).contains(&old));
        let t = ring.sign(Algorithm::EdDSA, "at+jwt", &claims("a")).unwrap();
        assert_eq!(kid_of(&t), old, "[{backend}] the new key does not sign yet");
        replica.refresh(&store).await.unwrap();
        assert!(
            jwks_kids(&replica).contains(&new_kid),
            "other replicas publish it"
        );

        let listed = ring.list(&store, false).await.unwrap();
        let old_row = listed
            .iter()
            .find(|k| k.name == format!("signingKeys/{old}"))
            .unwrap();
        assert_eq!(old_row.state, State::Active as i32);
        assert_eq!(old_row.deactivate_time, new.activate_time);
        let rows = outbox::rows_after(&fresh.url, 0).await;
        let replaced: Vec<_> = rows
            .iter()
            .filter(|r| r.event_type == "signingKey.replaced")
            .collect();
        assert_eq!(replaced.len(), 1);
        assert_eq!(replaced[0].event.resource, format!("signingKeys/{old}"));
        assert_eq!(replaced[0].actor, ctx.actor());

        // The JWKS cache lifetime later the new key signs, without a
        // refresh, and the old one's tokens still verify.
        clock.advance(ACTIVATION_DELAY);
        let new_token = ring.sign(Algorithm::EdDSA, "at+jwt", &claims("b")).unwrap();
        assert_eq!(kid_of(&new_token), new_kid, "[{backend}]");
        replica.refresh(&store).await.unwrap();
        assert_eq!(
            kid_of(
                &replica
                    .sign(Algorithm::EdDSA, "at+jwt", &claims("c"))
                    .unwrap()
            ),
            new_kid
        );
        for r in [&ring, &replica] {
            r.verify::<Value>(&old_token, &expect()).unwrap();
            r.verify::<Value>(&new_token, &expect()).unwrap();
        }
        let states = ring.list(&store, false).await.unwrap();
        let state_of = |kid: &str| {
            states
                .iter()
                .find(|k| k.name == format!("signingKeys/{kid}"))
                .map(|k| k.state)
        };
        assert_eq!(state_of(&old), Some(State::Retiring as i32));
        assert_eq!(state_of(&new_kid), Some(State::Active as i32));

        // Just before retirement it still verifies; at retirement it is gone.
        clock.advance(RETIRE_AFTER - Duration::from_secs(1));
        ring.refresh(&store).await.unwrap();
        ring.verify::<Value>(&old_token, &expect()).unwrap();
        clock.advance(Duration::from_secs(1));
        ring.refresh(&store).await.unwrap();
        assert_eq!(
            ring.verify::<Value>(&old_token, &expect()),
            Err(VerifyError::UnknownKey),
            "[{backend}] refused after retirement"
        );
        assert!(!jwks_kids(&ring).contains(&old));
        ring.verify::<Value>(&new_token, &expect()).unwrap();
        assert!(
            ring.list(&store, false)
                .await
                .unwrap()
                .iter()
                .all(|k| k.name != format!("signingKeys/{old}"))
        );
        let all = ring.list(&store, true).await.unwrap();
        assert_eq!(
            all.iter()
                .find(|k| k.name == format!("signingKeys/{old}"))
                .map(|k| k.state),
            Some(State::Retired as i32)
        );

        // An immediate rotation signs at once.
        let before = ring.active_kid(Algorithm::ES256).unwrap();
        let now_key = ring
            .rotate(&store, &ctx, Algorithm::ES256, true)
            .await
            .unwrap();
        assert_eq!(now_key.state, State::Active as i32);
        let kid = ring.active_kid(Algorithm::ES256).unwrap();
        assert_ne!(kid, before);
        assert_eq!(format!("signingKeys/{kid}"), now_key.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_rotates_each_algorithm_once_across_replicas() {
    const EVERY: Duration = Duration::from_secs(30 * 24 * 3600);
    for backend in backends() {
        eprintln!("=== {backend}");
        let fresh = Fresh::new(&backend).await;
        let clock = Clock::manual(now_micros());
        let a_store = fresh.store().await;
        let b_store = fresh.store().await;
        let a = KeyRing::load_or_init(&a_store, fresh.kek(), clock.clone())
            .await
            .unwrap();
        let b = KeyRing::load_or_init(&b_store, fresh.kek(), clock.clone())
            .await
            .unwrap();
        assert!(
            a.rotate_due(&a_store, EVERY).await.unwrap().is_empty(),
            "not due yet"
        );
        clock.advance(EVERY + Duration::from_secs(1));
        let (ra, rb) = tokio::join!(a.rotate_due(&a_store, EVERY), b.rotate_due(&b_store, EVERY));
        let rotated = ra.unwrap().len() + rb.unwrap().len();
        assert_eq!(rotated, 3, "[{backend}] one rotation per algorithm in all");
        assert_eq!(a.list(&a_store, true).await.unwrap().len(), 6);
        assert!(a.rotate_due(&a_store, EVERY).await.unwrap().is_empty());
        assert!(b.rotate_due(&b_store, EVERY).await.unwrap().is_empty());
    }
}

fn replace_kek(path: &Path) {
    std::fs::remove_file(path).unwrap();
    Kek::create_file(path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_with_a_missing_or_different_kek_is_refused() {
    for backend in backends() {
        eprintln!("=== {backend}");
        let fresh = Fresh::new(&backend).await;
        let mut config = fresh.config();
        let kek = match backend {
            // SQLite: the default file beside the database, made at first
            // start, private.
            Backend::Sqlite => fresh.kek_path(),
            Backend::Postgres { .. } => {
                let e = tollgate_server::prepare(config.clone())
                    .await
                    .err()
                    .expect("PostgreSQL without a KEK file starts");
                assert!(
                    format!("{e:#}").contains("--key-encryption-key-file"),
                    "{e:#}"
                );
                let path = fresh.kek_path();
                config.key_encryption_key_file = Some(path.clone());
                let e = tollgate_server::prepare(config.clone())
                    .await
                    .err()
                    .expect("a KEK file that is set is never created");
                assert!(format!("{e:#}").contains("does not exist"), "{e:#}");
                Kek::create_file(&path).unwrap();
                path
            }
        };
        let app = tollgate_server::prepare(config.clone()).await.unwrap();
        assert_eq!(app.keys.jwks(), app.keys.jwks());
        drop(app);
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&kek).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "[{backend}]");
        }
        // Restarts with the same key are fine.
        drop(tollgate_server::prepare(config.clone()).await.unwrap());

        let saved = std::fs::read(&kek).unwrap();
        std::fs::remove_file(&kek).unwrap();
        let e = tollgate_server::prepare(config.clone())
            .await
            .err()
            .expect("started without its KEK");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("missing") && msg.contains("3 signing keys"),
            "[{backend}] {msg}"
        );
        assert!(
            !kek.exists(),
            "[{backend}] no new key was made in its place"
        );

        std::fs::write(&kek, &saved).unwrap();
        replace_kek(&kek);
        let e = tollgate_server::prepare(config.clone())
            .await
            .err()
            .expect("started with another KEK");
        let msg = format!("{e:#}");
        assert!(msg.contains("key-encryption key"), "[{backend}] {msg}");

        std::fs::write(&kek, &saved).unwrap();
        drop(tollgate_server::prepare(config).await.unwrap());
    }
}
