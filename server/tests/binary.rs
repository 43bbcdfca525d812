//! The `tollgate` binary as an operator runs it: first-start bootstrap,
//! configuration from a TOML file, JSON logs, `admin create-key`,
//! `admin recover-root`, and a
//! graceful SIGTERM that lets an in-flight call finish.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use tollgate_client::{Client, v1};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// A running `tollgate serve`, killed on drop.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn serve(dir: &Path, extra: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .current_dir(dir)
            .arg("--config")
            .arg(dir.join("tollgate.toml"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tollgate");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line matching `pred`.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no '{what}' on stderr; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Every stderr line that arrives within `quiet` of the one before.
    fn drain(&mut self, quiet: Duration) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(quiet) {
            self.seen.push(line.clone());
            out.push(line);
        }
        out
    }

    /// The gRPC address from the JSON `tollgate listening` log line.
    fn grpc_addr(&mut self) -> SocketAddr {
        let line = self.wait_for("tollgate listening", |l| l.contains("tollgate listening"));
        let json: serde_json::Value = serde_json::from_str(&line).expect("log lines are JSON");
        assert_eq!(json["level"], "INFO");
        json["fields"]["grpc_addr"]
            .as_str()
            .expect("grpc_addr field")
            .parse()
            .expect("address")
    }
}

fn write_config(dir: &Path) {
    // Settings from the file; listen addresses come from flags, which win.
    std::fs::write(
        dir.join("tollgate.toml"),
        format!(
            "database_url = \"sqlite://{}/data/tollgate.db\"\nbootstrap_key_file = \"{}/admin.key\"\nlog_format = \"json\"\nlisten = \"127.0.0.1:1\"\n",
            dir.display(),
            dir.display()
        ),
    )
    .expect("write config");
}

async fn client(addr: SocketAddr, key: &str) -> Client {
    Client::builder(format!("http://{addr}"))
        .api_key(key)
        .connect()
        .await
        .expect("connect")
}

/// Creates organization `id`; panics on failure.
async fn create_org(c: &Client, id: &str, display_name: &str) {
    c.organizations()
        .create_organization(v1::CreateOrganizationRequest {
            organization_id: id.into(),
            organization: Some(v1::Organization {
                display_name: display_name.into(),
                ..Default::default()
            }),
        })
        .await
        .expect("organization created");
}

async fn get_root(c: &Client) -> Result<v1::Organization, tonic::Status> {
    c.organizations()
        .get_organization(v1::GetOrganizationRequest {
            name: "organizations/root".into(),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn first_start_bootstraps_once_and_admin_create_key_mints_working_keys() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());

    let mut first = Proc::serve(
        dir.path(),
        &["--log-level", "info,tollgate_server::layers=debug"],
    );
    let printed = first.wait_for("admin api key", |l| l.starts_with("admin api key: "));
    let key = printed.trim_start_matches("admin api key: ").to_owned();
    assert!(key.starts_with("tg_"), "{key}");
    let addr = first.grpc_addr();

    let file = dir.path().join("admin.key");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), key);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key file must be private");

    let root = get_root(&client(addr, &key).await).await.unwrap();
    assert_eq!(root.name, "organizations/root");

    // One span per RPC, with method, principal, code and latency.
    let line = first.wait_for("rpc finished", |l| {
        l.contains("rpc finished") && l.contains("GetOrganization")
    });
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["span"]["name"], "rpc");
    assert_eq!(
        json["span"]["method"],
        "/tollgate.v1.OrganizationService/GetOrganization"
    );
    assert_eq!(
        json["span"]["principal"],
        "organizations/root/serviceAccounts/admin"
    );
    assert_eq!(json["fields"]["code"], "OK");
    assert!(json["fields"]["latency_ms"].as_f64().is_some(), "{line}");
    assert!(
        !line.contains(&key),
        "a log line must never contain the key"
    );

    // A second key, minted offline against the same database while the
    // server runs, authenticates too.
    let out = Command::new(BIN)
        .arg("admin")
        .arg("create-key")
        .arg("--database-url")
        .arg(format!(
            "sqlite://{}/data/tollgate.db",
            dir.path().display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(second.starts_with("tg_") && second != key);
    get_root(&client(addr, &second).await).await.unwrap();

    // Restart on the same database: no new bootstrap key.
    drop(first);
    let mut again = Proc::serve(dir.path(), &[]);
    let addr = again.grpc_addr();
    assert!(
        !again.seen.iter().any(|l| l.starts_with("admin api key")),
        "bootstrap must happen once"
    );
    get_root(&client(addr, &key).await).await.unwrap();
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_call_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let mut server = Proc::serve(dir.path(), &[]);
    let key = server
        .wait_for("admin api key", |l| l.starts_with("admin api key: "))
        .trim_start_matches("admin api key: ")
        .to_owned();
    let addr = server.grpc_addr();
    let c = client(addr, &key).await;
    c.users()
        .create_user(v1::CreateUserRequest {
            parent: "organizations/root".into(),
            user_id: "ops".into(),
            user: Some(v1::User {
                display_name: "Ops".into(),
                email: "ops@example.com".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();

    // SetPassword spends its time in argon2id: long enough to be in flight
    // when the signal arrives.
    let mut users = c.users();
    let call = tokio::spawn(async move {
        users
            .set_password(v1::SetPasswordRequest {
                name: "organizations/root/users/ops".into(),
                password: "a long enough password".into(),
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let user = call
        .await
        .unwrap()
        .expect("the in-flight call completes")
        .into_inner();
    assert!(user.has_password);
    server.wait_for("tollgate stopped", |l| l.contains("tollgate stopped"));
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

#[test]
fn a_bad_database_url_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--database-url", "mysql://localhost/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported database URL"), "{err}");
}

/// D10: when nobody can act as a platform admin any more (here: the only
/// admin disabled and `root` suspended behind the API's back, as an old
/// version or a hand edit could leave it), `tollgate admin recover-root`
/// gives the platform back offline, and records what it repaired.
#[tokio::test]
async fn admin_recover_root_restores_a_locked_out_platform() {
    use diesel::{Connection, RunQueryDsl, SqliteConnection, connection::SimpleConnection};

    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let db = dir.path().join("data/tollgate.db");
    let mut first = Proc::serve(dir.path(), &[]);
    let printed = first.wait_for("admin api key", |l| l.starts_with("admin api key: "));
    let key = printed.trim_start_matches("admin api key: ").to_owned();
    let addr = first.grpc_addr();
    get_root(&client(addr, &key).await).await.unwrap();
    drop(first);

    {
        let mut conn = SqliteConnection::establish(&db.display().to_string()).unwrap();
        conn.batch_execute(
            "PRAGMA busy_timeout = 10000; \
             UPDATE service_accounts SET state = 2 WHERE org_id = 'root'; \
             UPDATE organizations SET state = 2 WHERE org_id = 'root';",
        )
        .unwrap();
    }
    let mut locked = Proc::serve(dir.path(), &[]);
    let addr = locked.grpc_addr();
    let refused = get_root(&client(addr, &key).await).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    drop(locked);

    let out = Command::new(BIN)
        .args(["admin", "recover-root", "--database-url"])
        .arg(format!("sqlite://{}", db.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recovered = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(recovered.starts_with("tg_") && recovered != key);

    let mut again = Proc::serve(dir.path(), &[]);
    let addr = again.grpc_addr();
    let c = client(addr, &recovered).await;
    assert_eq!(get_root(&c).await.unwrap().state, 1, "root is active again");
    // A platform admin again: it may create tenants.
    create_org(&c, "back", "Back").await;
    // The old key works again too (its owner is active), and the repairs
    // are in the outbox under the system actor.
    get_root(&client(addr, &key).await).await.unwrap();
    drop(again);
    let mut conn = SqliteConnection::establish(&db.display().to_string()).unwrap();
    #[derive(diesel::QueryableByName)]
    struct Repair {
        #[diesel(sql_type = diesel::sql_types::Text)]
        event_type: String,
    }
    let repairs: Vec<String> = diesel::sql_query(
        "SELECT event_type FROM outbox WHERE actor = 'system' AND request_id = 'recover-root' ORDER BY id",
    )
    .load::<Repair>(&mut conn)
    .unwrap()
    .into_iter()
    .map(|r| r.event_type)
    .collect();
    assert_eq!(
        repairs,
        [
            "organization.updated",
            "serviceAccount.updated",
            "apiKey.created"
        ]
    );
}

/// A raw HTTP/1.1 endpoint reporting each request's path and
/// `webhook-id`: with `hold_first`, the first request is held unanswered
/// for ever (a delivery in flight when its worker dies); the others get
/// 200.
async fn receiver(
    hold_first: bool,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        let mut first = hold_first;
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers and the body (Content-Length), enough to report.
            let seen = loop {
                let Ok(n) = sock.read(&mut chunk).await else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                let Some((head, body)) = text.split_once("\r\n\r\n") else {
                    continue;
                };
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix(name)
                            .map(|v| v.trim().to_owned())
                    })
                };
                let len: usize = header("content-length:")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    break header("webhook-id:").map(|id| (path, id));
                }
            };
            let Some(seen) = seen else { continue };
            let _ = tx.send(seen);
            if first {
                first = false;
                held.push(sock);
            } else {
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn a_worker_process_killed_mid_delivery_has_its_job_run_again_after_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let (receiver, mut ids) = receiver(true).await;
    let flags = [
        "--webhook-allow-loopback",
        "--job-lease",
        "2s",
        "--webhook-timeout",
        "5m",
    ];
    let mut first = Proc::serve(dir.path(), &flags);
    let printed = first.wait_for("admin api key", |l| l.starts_with("admin api key: "));
    let key = printed.trim_start_matches("admin api key: ").to_owned();
    let c = client(first.grpc_addr(), &key).await;
    create_org(&c, "acme", "Acme").await;
    let hook = c
        .webhooks()
        .create_webhook(v1::CreateWebhookRequest {
            parent: "organizations/acme".into(),
            webhook_id: "crm".into(),
            webhook: Some(v1::Webhook {
                display_name: "CRM".into(),
                url: format!("http://{receiver}/hook"),
                event_types: vec!["user.created".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    c.users()
        .create_user(v1::CreateUserRequest {
            parent: "organizations/acme".into(),
            user_id: "ada".into(),
            user: Some(v1::User {
                display_name: "Ada".into(),
                email: "ada@example.com".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    // The delivery is in flight (held by the receiver): kill the process.
    let (_, sent) = tokio::time::timeout(Duration::from_secs(20), ids.recv())
        .await
        .expect("the first process sent the delivery")
        .unwrap();
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(first);

    // Another process on the same database takes the job back once its
    // lease ends, and sends the same message again.
    let started = std::time::Instant::now();
    let mut second = Proc::serve(dir.path(), &flags);
    let c = client(second.grpc_addr(), &key).await;
    let (_, again) = tokio::time::timeout(Duration::from_secs(30), ids.recv())
        .await
        .expect("the job ran again")
        .unwrap();
    assert_eq!(again, sent, "the same delivery (webhook-id) again");
    assert!(started.elapsed() < Duration::from_secs(25));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = c
            .webhooks()
            .list_deliveries(v1::ListDeliveriesRequest {
                parent: hook.name.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .deliveries;
        if list.len() == 1 && list[0].status == v1::delivery::Status::Succeeded as i32 {
            assert_eq!((list[0].attempts, list[0].last_response_code), (1, 200));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{list:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(second);
}

/// `TOLLGATE_TEST_DATABASE_URL` confined to a new schema (dropped by the
/// returned guard), or `None` when it is unset (said on stderr; a failure
/// under `TOLLGATE_TEST_STRICT=1`).
fn postgres_schema() -> Option<(String, impl Drop)> {
    use diesel::{Connection as _, PgConnection, connection::SimpleConnection as _};
    let Ok(base) = std::env::var("TOLLGATE_TEST_DATABASE_URL") else {
        assert!(
            std::env::var("TOLLGATE_TEST_STRICT").is_err(),
            "TOLLGATE_TEST_DATABASE_URL is not set"
        );
        eprintln!("SKIPPED: PostgreSQL (TOLLGATE_TEST_DATABASE_URL is not set)");
        return None;
    };
    let name = format!("tg_bin_{}", uuid::Uuid::new_v4().simple());
    PgConnection::establish(&base)
        .expect("PostgreSQL")
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .expect("create schema");
    struct Dropper(String, String);
    impl Drop for Dropper {
        fn drop(&mut self) {
            if let Ok(mut c) = PgConnection::establish(&self.0) {
                let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.1));
            }
        }
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-csearch_path%3D{name}");
    Some((url, Dropper(base, name)))
}

#[tokio::test]
async fn worker_processes_on_postgresql_deliver_every_event_exactly_once() {
    let Some((url, _schema)) = postgres_schema() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    std::fs::write(
        dir.path().join("kek"),
        "q8H4xC6l9kq0sVw2nJm3dZ7bR5tY1uE8iO0pA2sD4fE=",
    )
    .unwrap();
    let kek = dir.path().join("kek").display().to_string();
    let (receiver, mut seen) = receiver(false).await;
    let common = [
        "--database-url",
        url.as_str(),
        "--key-encryption-key-file",
        kek.as_str(),
        "--webhook-allow-loopback",
    ];
    let with = |role: &'static str| {
        let mut args = common.to_vec();
        args.extend(["--roles", role]);
        args
    };
    // One API process and two worker processes on one database.
    let mut api = Proc::serve(dir.path(), &with("api"));
    let printed = api.wait_for("admin api key", |l| l.starts_with("admin api key: "));
    let key = printed.trim_start_matches("admin api key: ").to_owned();
    let c = client(api.grpc_addr(), &key).await;
    let mut workers = [
        Proc::serve(dir.path(), &with("worker")),
        Proc::serve(dir.path(), &with("worker")),
    ];
    for w in &mut workers {
        w.wait_for("worker started", |l| {
            l.contains("tollgate listening") || l.contains("admin listening")
        });
    }
    create_org(&c, "acme", "Acme").await;
    const HOOKS: usize = 6;
    const USERS: usize = 20;
    for h in 0..HOOKS {
        c.webhooks()
            .create_webhook(v1::CreateWebhookRequest {
                parent: "organizations/acme".into(),
                webhook_id: format!("h{h}"),
                webhook: Some(v1::Webhook {
                    display_name: format!("Hook {h}"),
                    url: format!("http://{receiver}/h{h}"),
                    event_types: vec!["user.created".into()],
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    for u in 0..USERS {
        c.users()
            .create_user(v1::CreateUserRequest {
                parent: "organizations/acme".into(),
                user_id: format!("u{u}"),
                user: Some(v1::User {
                    display_name: format!("User {u}"),
                    email: format!("u{u}@example.com"),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < HOOKS * USERS {
        let next = tokio::time::timeout(Duration::from_secs(30), seen.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {} deliveries", got.len(), HOOKS * USERS))
            .unwrap();
        got.push(next);
    }
    // Nothing more comes: each was sent exactly once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    while let Ok(extra) = seen.try_recv() {
        got.push(extra);
    }
    let mut distinct = got.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        (got.len(), distinct.len()),
        (HOOKS * USERS, HOOKS * USERS),
        "every (webhook, event) once"
    );
    // In event order per webhook.
    for h in 0..HOOKS {
        let ids: Vec<u64> = got
            .iter()
            .filter(|(p, _)| *p == format!("/h{h}"))
            .map(|(_, id)| id.parse().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "h{h}: {ids:?}");
    }
}

/// The JSON log lines of `lines` on the security target with `event`.
fn security_events(lines: &[String], event: &str) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|j| j["target"] == "tollgate::security" && j["fields"]["event"] == event)
        .collect()
}

#[tokio::test]
async fn security_events_go_to_their_own_target_bounded_and_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let mut server = Proc::serve(dir.path(), &[]);
    let printed = server.wait_for("admin api key", |l| l.starts_with("admin api key: "));
    let key = printed.trim_start_matches("admin api key: ").to_owned();
    let addr = server.grpc_addr();

    // A refused credential: one line, naming the kind, never the key.
    let forged = format!("tg_{}_{}", "q".repeat(16), "Z".repeat(43));
    let refused = get_root(&client(addr, &forged).await).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let lines = server.drain(Duration::from_millis(500));
    let events = security_events(&lines, "credential_refused");
    assert_eq!(events.len(), 1, "{lines:#?}");
    assert_eq!(events[0]["fields"]["credential"], "api_key");
    assert!(
        !lines.iter().any(|l| l.contains(&forged[20..])),
        "a log line holds the key"
    );

    // A revoked key.
    let c = client(addr, &key).await;
    let minted = c
        .api_keys()
        .create_api_key(v1::CreateApiKeyRequest {
            parent: "organizations/root/serviceAccounts/admin".into(),
            api_key: Some(v1::ApiKey {
                display_name: "doomed".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    c.api_keys()
        .revoke_api_key(v1::RevokeApiKeyRequest {
            name: minted.name.clone(),
            etag: String::new(),
        })
        .await
        .unwrap();
    let lines = server.drain(Duration::from_millis(500));
    let revoked = security_events(&lines, "api_key_revoked");
    assert_eq!(revoked.len(), 1, "{lines:#?}");
    assert_eq!(revoked[0]["fields"]["key"], minted.name.as_str());
    assert_eq!(
        revoked[0]["fields"]["actor"],
        "organizations/root/serviceAccounts/admin"
    );
    assert!(!lines.iter().any(|l| l.contains(&minted.secret)));

    // A flood of bad credentials: the log stays bounded.
    let bad = client(addr, &forged).await;
    let started = std::time::Instant::now();
    for _ in 0..400 {
        let _ = get_root(&bad).await;
    }
    // The budget: a burst of 50, then 20 a second.
    let budget = 50 + (20.0 * started.elapsed().as_secs_f64()).ceil() as usize + 5;
    let lines = server.drain(Duration::from_millis(500));
    let flood = security_events(&lines, "credential_refused").len();
    assert!(
        flood >= 1 && flood <= budget.min(399),
        "{flood} lines for 400 refused calls (budget {budget})"
    );
}
