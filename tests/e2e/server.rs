//! The server as a process: persistence across a graceful restart, health
//! checking, the admin listener (`/healthz`, `/readyz`, `/metrics`),
//! shutdown, and the per-test PostgreSQL schema the harness relies on.

use tollgate_client::{
    Client,
    health::{HealthCheckRequest, ServingStatus},
};
use tollgate_e2e::{
    Backend, Code, TestServer, backends, each_backend,
    fixtures::{create_key, create_org, create_sa, create_user, org_name, probe},
    http,
    rpc::RpcResult as _,
    v1::{
        GetApiKeyRequest, GetOrganizationRequest, GetServiceAccountRequest, GetUserRequest,
        ListUsersRequest, RevokeApiKeyRequest, SetPasswordRequest,
    },
};

/// The value of the Prometheus sample whose line starts with `name{` and
/// contains every label in `labels` (`key="value"`), or 0.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_admin_key_survive_a_restart() {
    each_backend(async |server: &mut TestServer| {
        assert!(
            server.minted_on_last_start(),
            "the first start mints the admin key"
        );
        let admin = server.admin();
        let org = create_org(&admin, "durable", "Durable").await;
        let user = create_user(&admin, "durable", "dora", &["editor"]).await;
        let user = admin
            .users()
            .set_password(SetPasswordRequest {
                name: user.name.clone(),
                password: "remember me please".into(),
            })
            .await
            .expect_ok();
        let sa = create_sa(&admin, "durable", "cron", &["viewer"]).await;
        let kept = create_key(&admin, &sa.name, "kept").await;
        let revoked = create_key(&admin, &sa.name, "revoked").await;
        assert_eq!(
            probe(&server.client(&revoked.secret), "durable").await,
            Code::Ok
        );
        let revoked_view = admin
            .api_keys()
            .revoke_api_key(RevokeApiKeyRequest {
                name: revoked.name.clone(),
                etag: String::new(),
            })
            .await
            .expect_ok();
        let kept_view = admin
            .api_keys()
            .get_api_key(GetApiKeyRequest {
                name: kept.name.clone(),
            })
            .await
            .expect_ok();

        let admin_key = server.admin_key().to_owned();
        server.restart().await?;
        assert_eq!(server.starts(), 2);
        assert!(
            !server.minted_on_last_start(),
            "a restart must not bootstrap again"
        );
        assert_eq!(server.admin_key(), admin_key);

        // A fresh client (the old one may be tied to the old connection).
        let admin = server.admin();
        assert_eq!(
            admin
                .organizations()
                .get_organization(GetOrganizationRequest {
                    name: org.name.clone()
                })
                .await
                .expect_ok(),
            org
        );
        assert_eq!(
            admin
                .users()
                .get_user(GetUserRequest {
                    name: user.name.clone()
                })
                .await
                .expect_ok(),
            user,
            "users survive with their password flag and etag"
        );
        assert_eq!(
            admin
                .service_accounts()
                .get_service_account(GetServiceAccountRequest {
                    name: sa.name.clone()
                })
                .await
                .expect_ok(),
            sa
        );
        assert_eq!(
            admin
                .api_keys()
                .get_api_key(GetApiKeyRequest {
                    name: kept.name.clone()
                })
                .await
                .expect_ok(),
            kept_view
        );
        // The key was used before the stop: the shutdown's usage flush
        // recorded its last use (not a change: the etag stays).
        let mut revoked_after = admin
            .api_keys()
            .get_api_key(GetApiKeyRequest {
                name: revoked.name.clone(),
            })
            .await
            .expect_ok();
        assert!(
            revoked_after.last_used_time.take().is_some(),
            "{revoked_after:?}"
        );
        assert_eq!(revoked_after, revoked_view);
        // Keys minted before the restart still authenticate (or stay
        // revoked): nothing depended on in-memory state.
        assert_eq!(
            probe(&server.client(&kept.secret), "durable").await,
            Code::Ok
        );
        assert_eq!(
            probe(&server.client(&revoked.secret), "durable").await,
            Code::Unauthenticated
        );
        // Root is still there exactly once, and the server still writes.
        let listed = admin
            .organizations()
            .list_organizations(tollgate_e2e::v1::ListOrganizationsRequest::default())
            .await
            .expect_ok();
        assert_eq!(
            listed
                .organizations
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>(),
            ["organizations/durable", "organizations/root"]
        );
        create_user(&admin, "durable", "after", &[]).await;

        // And once more, to be sure the second start left a usable state.
        server.restart().await?;
        let users = server
            .admin()
            .users()
            .list_users(ListUsersRequest {
                parent: org_name("durable"),
                ..Default::default()
            })
            .await
            .expect_ok();
        assert_eq!(users.users.len(), 2);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();

        // gRPC health, overall and per service.
        let mut health = server.anonymous().health();
        for service in [
            "",
            "tollgate.v1.OrganizationService",
            "tollgate.v1.UserService",
            "tollgate.v1.ServiceAccountService",
            "tollgate.v1.ApiKeyService",
            "tollgate.v1.RateLimitPolicyService",
        ] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .expect_ok()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
        }
        let unknown = health
            .check(HealthCheckRequest {
                service: "tollgate.v1.NoSuchService".into(),
            })
            .await
            .expect_failure();
        assert_eq!(unknown.code(), Code::NotFound);

        // Admin endpoints.
        let healthz = http::get(server.admin_addr(), "/healthz").await?;
        assert_eq!((healthz.status, healthz.body.as_str()), (200, "ok\n"));
        let readyz = http::get(server.admin_addr(), "/readyz").await?;
        assert_eq!(readyz.status, 200, "{readyz:?}");
        let missing = http::get(server.admin_addr(), "/nope").await?;
        assert_eq!(missing.status, 404);

        // Metrics count calls by method and code. The recorder is shared by
        // every server in this process, so compare before and after.
        const GET: &str = "method=\"/tollgate.v1.OrganizationService/GetOrganization\"";
        const REQUESTS: &str = "tollgate_grpc_requests_total";
        let before = http::get(server.admin_addr(), "/metrics").await?.body;
        for _ in 0..3 {
            assert_eq!(probe(&admin, "root").await, Code::Ok);
        }
        assert_eq!(probe(&admin, "missing").await, Code::NotFound);
        assert_eq!(
            probe(&server.anonymous(), "root").await,
            Code::Unauthenticated
        );
        let metrics = http::get(server.admin_addr(), "/metrics").await?;
        assert_eq!(metrics.status, 200);
        assert!(
            metrics
                .header("content-type")
                .is_some_and(|c| c.starts_with("text/plain")),
            "{:?}",
            metrics.headers
        );
        let after = metrics.body;
        assert!(
            after
                .lines()
                .any(|l| l.starts_with(&format!("{REQUESTS}{{")) && l.contains(GET)),
            "no {REQUESTS} sample with a method label in:\n{after}"
        );
        let delta =
            |labels: &[&str]| sample(&after, REQUESTS, labels) - sample(&before, REQUESTS, labels);
        assert!(
            delta(&[GET, "code=\"OK\""]) >= 3.0,
            "OK calls counted:\n{after}"
        );
        assert!(
            delta(&[GET, "code=\"NOT_FOUND\""]) >= 1.0,
            "errors counted by code:\n{after}"
        );
        assert!(
            delta(&[GET, "code=\"UNAUTHENTICATED\""]) >= 1.0,
            "refused calls are counted too:\n{after}"
        );
        assert!(
            sample(
                &after,
                "tollgate_grpc_errors_total",
                &[GET, "code=\"NOT_FOUND\""]
            ) >= 1.0,
            "errors total:\n{after}"
        );
        assert!(
            after.contains("# TYPE tollgate_grpc_requests_total counter"),
            "{after}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_both_listeners() {
    for backend in backends() {
        let mut server = TestServer::start(&backend).await.expect("start");
        let admin: Client = server.admin();
        assert_eq!(probe(&admin, "root").await, Code::Ok);
        assert!(server.is_running());
        server.stop().await.expect("a clean stop");
        assert!(!server.is_running());
        let refused = tokio::net::TcpStream::connect(server.grpc_addr()).await;
        assert!(
            refused.is_err(),
            "[{backend}] gRPC port still accepts after stop"
        );
        assert!(
            http::get(server.admin_addr(), "/readyz").await.is_err(),
            "[{backend}] admin port still answers after stop"
        );
        let code = probe(&admin, "root").await;
        assert_eq!(
            code,
            Code::Unavailable,
            "[{backend}] a call to a stopped server"
        );
        // Stopping twice is harmless.
        server.stop().await.expect("a second stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_postgres_server_gets_its_own_schema() {
    for backend in backends() {
        let Backend::Postgres { url } = &backend else {
            continue;
        };
        let a = TestServer::start(&backend).await.expect("start a");
        let b = TestServer::start(&backend).await.expect("start b");
        let (schema_a, schema_b) = (
            a.pg_schema().expect("a pg schema"),
            b.pg_schema().expect("a pg schema"),
        );
        assert_ne!(schema_a.name(), schema_b.name());

        // Migrations, including diesel's bookkeeping, land in the schema.
        let tables = schema_a
            .query_strings(&format!(
                "SELECT table_name::text AS v FROM information_schema.tables \
                 WHERE table_schema = '{}' ORDER BY 1",
                schema_a.name()
            ))
            .await
            .expect("tables");
        for table in [
            "__diesel_schema_migrations",
            "api_keys",
            "organizations",
            "outbox",
            "service_accounts",
            "users",
        ] {
            assert!(
                tables.iter().any(|t| t == table),
                "{table} not in {}: {tables:?}",
                schema_a.name()
            );
        }

        // Each server sees only its own rows.
        create_org(&a.admin(), "only-in-a", "A").await;
        let in_a = schema_a
            .query_strings(&format!(
                "SELECT org_id AS v FROM {}.organizations ORDER BY 1",
                schema_a.name()
            ))
            .await
            .expect("rows of a");
        assert_eq!(in_a, ["only-in-a", "root"]);
        let in_b = schema_b
            .query_strings(&format!(
                "SELECT org_id AS v FROM {}.organizations ORDER BY 1",
                schema_b.name()
            ))
            .await
            .expect("rows of b");
        assert_eq!(in_b, ["root"]);
        b.admin()
            .organizations()
            .get_organization(GetOrganizationRequest {
                name: org_name("only-in-a"),
            })
            .await
            .expect_code(Code::NotFound);
        // Each bootstrapped its own admin key, valid only there.
        assert_ne!(a.admin_key(), b.admin_key());
        assert_eq!(
            probe(&b.client(a.admin_key()), "root").await,
            Code::Unauthenticated
        );

        // Dropping a server drops its schema.
        let name = schema_a.name().to_owned();
        assert!(
            tollgate_e2e::PgSchema::exists(url, &name)
                .await
                .expect("exists")
        );
        drop(a);
        assert!(
            !tollgate_e2e::PgSchema::exists(url, &name)
                .await
                .expect("exists"),
            "schema {name} left behind"
        );
        drop(b);
    }
}

/// SQLite only. A start must wait while another connection briefly holds
/// the database lock (another process, a backup, or the previous server's
/// last connection checkpointing as it closes during a restart): the server
/// sets `PRAGMA busy_timeout = 10000` for exactly that. It must not fail
/// with "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_start_waits_for_a_locked_database() {
    use diesel::{Connection as _, SqliteConnection, connection::SimpleConnection as _};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("tollgate.db");
    let mut holder =
        SqliteConnection::establish(&path.to_string_lossy()).expect("open the database");
    holder
        .batch_execute(
            "CREATE TABLE e2e_lock (x INTEGER); BEGIN EXCLUSIVE; INSERT INTO e2e_lock VALUES (1);",
        )
        .expect("take the lock");
    let hold = Duration::from_millis(500);
    let release = std::thread::spawn(move || {
        std::thread::sleep(hold);
        holder.batch_execute("COMMIT").expect("release the lock");
    });

    let started = Instant::now();
    let prepared = tollgate_server::prepare(tollgate_server::Config {
        database_url: format!("sqlite://{}", path.display()),
        ..Default::default()
    })
    .await;
    let took = started.elapsed();
    release.join().expect("the lock holder");
    let app = prepared.unwrap_or_else(|e| {
        panic!(
            "the start failed after {took:?} instead of waiting for a lock held for {hold:?}: {e:#}"
        )
    });
    assert!(app.bootstrap_key.is_some(), "the waiting start bootstraps");
    assert!(
        took >= hold - Duration::from_millis(50),
        "it did wait: {took:?}"
    );
}
