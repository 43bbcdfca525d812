//! The relay on the real NATS JetStream (`TOLLGATE_TEST_NATS_URL`), read
//! back by an independent consumer (nats-py, `tests/peers/nats_consume.py`,
//! which shares no code with the relay): every event once, in id order per
//! organization, through a broker outage and a republish; and two replicas
//! on one PostgreSQL: one relay, handed over when it stops, and a key
//! revoked on one replica refused by the other within a second.
//!
//! Each server publishes under a subject prefix and stream of its own, so
//! parallel tests never see each other's events (JetStream streams may not
//! share subjects).

use std::{
    collections::{BTreeMap, HashSet},
    net::{SocketAddr, ToSocketAddrs as _},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use tollgate_e2e::{
    Backend, Client, Code, TestServer, backends,
    fixtures::{create_key, create_oauth_client, create_org, create_sa, probe, sa_with_key},
    outbox, peers,
    proxy::{Mode, Proxy},
    rpc::RpcResult as _,
    v1::{
        GetUserRequest, IssueTokenRequest, ListEventsRequest, RevokeApiKeyRequest,
        RevokeTokenRequest, WatchEventsRequest,
    },
};

/// One message as the consumer printed it.
#[derive(Debug, serde::Deserialize)]
struct Seen {
    seq: u64,
    subject: String,
    msg_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    size: usize,
}

/// A stream and subject prefix of one test server.
struct Stream {
    name: String,
    prefix: String,
}

impl Stream {
    fn unique() -> Self {
        let tag = format!("{:016x}", rand::random::<u64>());
        Self {
            name: format!("TG_TEST_{tag}"),
            prefix: format!("tgtest.{tag}"),
        }
    }

    fn configure(
        &self,
        url: &str,
    ) -> impl Fn(&mut tollgate_server::Config) + Send + Sync + 'static {
        let (url, name, prefix) = (url.to_owned(), self.name.clone(), self.prefix.clone());
        move |c| {
            c.nats_url = Some(url.clone());
            c.nats_stream = name.clone();
            c.nats_subject_prefix = prefix.clone();
        }
    }
}

fn nats_addr(url: &str) -> SocketAddr {
    let host = url.trim_start_matches("nats://");
    host.to_socket_addrs()
        .expect("a NATS host:port")
        .next()
        .expect("an address")
}

/// Runs the independent consumer over `stream`; deletes it when `delete`.
async fn consume(url: &str, stream: &str, delete: bool) -> anyhow::Result<Vec<Seen>> {
    let Some(python) = peers::venv_tool("the nats-py consumer", "python3") else {
        bail!("no Python virtualenv with nats-py");
    };
    let script = peers::workspace_root().join("tests/peers/nats_consume.py");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(script).arg(url).arg(stream);
    if delete {
        cmd.arg("--delete");
    }
    // The script gives up on its own when messages stop arriving.
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    ensure!(
        out.status.success(),
        "the consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)?
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("consumer line {l}")))
        .collect()
}

/// Waits until the relay marked every outbox row relayed.
async fn drained(server: &TestServer, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let left = outbox::unrelayed(server.database_url()).await;
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} events still unrelayed after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks that `seen` holds every outbox row of `server` exactly once,
/// each under its organization's subject with its type, in id order per
/// organization; returns how many.
async fn check_stream(server: &TestServer, prefix: &str, seen: &[Seen]) -> anyhow::Result<usize> {
    let rows = outbox::rows_after(server.database_url(), 0).await;
    let mut ids = HashSet::new();
    let mut per_org: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut last_seq = 0;
    for m in seen {
        ensure!(m.seq > last_seq, "stream sequence out of order at {m:?}");
        last_seq = m.seq;
        ensure!(m.size > 0, "an empty payload: {m:?}");
        let id: i64 = m
            .msg_id
            .as_deref()
            .context("a message without Nats-Msg-Id")?
            .parse()?;
        ensure!(ids.insert(id), "event {id} delivered twice");
        let rest = m
            .subject
            .strip_prefix(&format!("{prefix}."))
            .with_context(|| format!("subject {} outside {prefix}", m.subject))?;
        let (org, kind) = rest.split_once('.').context("subject without a type")?;
        ensure!(m.kind.as_deref() == Some(kind), "header type of {m:?}");
        per_org.entry(org.to_owned()).or_default().push(id);
    }
    let mut expected: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for row in &rows {
        expected.entry(row.org_id.clone()).or_default().push(row.id);
    }
    ensure!(
        per_org == expected,
        "per organization, the stream holds {per_org:?} but the outbox {expected:?}"
    );
    Ok(rows.len())
}

/// Creates three organizations and writes `per_org` service accounts in
/// each, the organizations concurrently.
async fn write_across_orgs(admin: &Client, tag: &str, per_org: usize) {
    let orgs: Vec<String> = (0..3).map(|i| format!("{tag}-o{i}")).collect();
    for org in &orgs {
        create_org(admin, org, org).await;
    }
    let tasks: Vec<_> = orgs
        .into_iter()
        .map(|org| {
            let admin = admin.clone();
            tokio::spawn(async move {
                for n in 0..per_org {
                    create_sa(&admin, &org, &format!("sa{n}"), &[]).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a writer panicked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_once_in_order_per_organization() {
    let Some(url) = peers::nats_url() else {
        return;
    };
    for backend in backends() {
        let stream = Stream::unique();
        let mut server = TestServer::start_configured(&backend, stream.configure(&url))
            .await
            .unwrap();
        let admin = server.admin();
        write_across_orgs(&admin, "ord", 20).await;
        drained(&server, Duration::from_secs(20)).await.unwrap();
        let seen = consume(&url, &stream.name, true).await.unwrap();
        let n = check_stream(&server, &stream.prefix, &seen)
            .await
            .unwrap_or_else(|e| panic!("[{backend}] {e:#}"));
        assert!(n >= 63, "[{backend}] only {n} events");
        assert!(
            server.relay().is_leader(),
            "[{backend}] the only server leads"
        );
        assert_eq!(server.relay().lag(), Duration::ZERO);
        server.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_loses_and_duplicates_nothing() {
    let Some(url) = peers::nats_url() else {
        return;
    };
    for backend in backends() {
        let proxy = Proxy::start(nats_addr(&url)).await.unwrap();
        let stream = Stream::unique();
        let mut server = TestServer::start_configured(
            &backend,
            stream.configure(&format!("nats://{}", proxy.addr)),
        )
        .await
        .unwrap();
        let admin = server.admin();
        write_across_orgs(&admin, "pre", 5).await;
        drained(&server, Duration::from_secs(20)).await.unwrap();
        // A watcher of this replica, whose hub is fed through NATS.
        create_org(&admin, "followed", "Followed").await;
        let mut watcher = admin
            .events()
            .watch_events(WatchEventsRequest {
                parent: "organizations/followed".into(),
                cursor: "0".into(),
                ..Default::default()
            })
            .await
            .expect_ok();

        proxy.set(Mode::Cut);
        // The API keeps answering while NATS is away.
        write_across_orgs(&admin, "cut", 5).await;
        create_sa(&admin, "followed", "during", &[]).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            outbox::unrelayed(server.database_url()).await >= 18,
            "[{backend}] events were marked relayed while NATS was cut"
        );
        let lag = server.relay().lag();
        assert!(
            lag >= Duration::from_secs(1),
            "[{backend}] the lag did not rise while cut: {lag:?}"
        );

        proxy.set(Mode::Open);
        write_across_orgs(&admin, "post", 3).await;
        create_sa(&admin, "followed", "after", &[]).await;
        drained(&server, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("[{backend}] {e:#}"));
        // The watcher missed nothing and saw nothing twice.
        let expected = admin
            .events()
            .list_events(ListEventsRequest {
                parent: "organizations/followed".into(),
                ..Default::default()
            })
            .await
            .expect_ok()
            .events;
        assert_eq!(expected.len(), 3, "[{backend}] {expected:?}");
        let mut watched = Vec::new();
        while watched.len() < expected.len() {
            match tokio::time::timeout(Duration::from_secs(10), watcher.message()).await {
                Ok(Ok(Some(r))) => watched.push(r.event.unwrap()),
                other => panic!("[{backend}] the watcher stopped at {watched:?}: {other:?}"),
            }
        }
        assert_eq!(watched, expected, "[{backend}]");
        let seen = consume(&url, &stream.name, true).await.unwrap();
        check_stream(&server, &stream.prefix, &seen)
            .await
            .unwrap_or_else(|e| panic!("[{backend}] {e:#}"));
        server.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republish_is_deduplicated_by_jetstream() {
    let Some(url) = peers::nats_url() else {
        return;
    };
    for backend in backends() {
        let stream = Stream::unique();
        let mut server = TestServer::start_configured(&backend, stream.configure(&url))
            .await
            .unwrap();
        write_across_orgs(&server.admin(), "dup", 4).await;
        drained(&server, Duration::from_secs(20)).await.unwrap();
        // The relay died after publishing these and before marking them.
        let again = outbox::unmark_last(server.database_url(), 6).await;
        assert_eq!(again.len(), 6);
        // A restart finds them unrelayed and publishes them again.
        server.restart().await.unwrap();
        drained(&server, Duration::from_secs(20)).await.unwrap();
        let seen = consume(&url, &stream.name, true).await.unwrap();
        check_stream(&server, &stream.prefix, &seen)
            .await
            .unwrap_or_else(|e| panic!("[{backend}] {e:#}"));
        server.stop().await.unwrap();
    }
}

/// Waits until exactly one of `servers` leads; returns its index.
async fn one_leader(servers: &[&TestServer], within: Duration) -> anyhow::Result<usize> {
    let deadline = Instant::now() + within;
    loop {
        let leaders: Vec<usize> = (0..servers.len())
            .filter(|&i| servers[i].is_running() && servers[i].relay().is_leader())
            .collect();
        match leaders.as_slice() {
            [one] => return Ok(*one),
            [] if Instant::now() < deadline => {}
            [] => bail!("no replica leads after {within:?}"),
            many => bail!("several replicas lead: {many:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_relay_and_revocation_within_a_second() {
    let Some(url) = peers::nats_url() else {
        return;
    };
    let Some(backend) = backends()
        .into_iter()
        .find(|b| matches!(b, Backend::Postgres { .. }))
    else {
        // backends() already reported the missing PostgreSQL.
        return;
    };
    let stream = Stream::unique();
    let mut first = TestServer::start_configured(&backend, stream.configure(&url))
        .await
        .unwrap();
    // Behind one load balancer, replicas share the issuer.
    let issuer = format!("http://{}", first.grpc_addr());
    let configure = stream.configure(&url);
    let mut second = first
        .start_replica(move |c| {
            configure(c);
            c.issuer = issuer.clone();
        })
        .await
        .unwrap();
    let leader = one_leader(&[&first, &second], Duration::from_secs(5))
        .await
        .unwrap();
    // Still exactly one a while later: the other keeps failing to lock.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        one_leader(&[&first, &second], Duration::ZERO)
            .await
            .unwrap(),
        leader
    );

    // A key used through the second replica, so it is cached there.
    let admin = first.admin();
    create_org(&admin, "acme", "Acme").await;
    let sa = create_sa(&admin, "acme", "deploy", &["viewer"]).await;
    let key = create_key(&admin, &sa.name, "deploy").await;
    let on_second = second.client(&key.secret);
    assert_eq!(probe(&on_second, "acme").await, Code::Ok);
    assert_eq!(probe(&on_second, "acme").await, Code::Ok);
    // A watcher of the second replica sees the first's changes.
    let mut watcher = second
        .admin()
        .events()
        .watch_events(WatchEventsRequest {
            parent: "organizations/acme".into(),
            ..Default::default()
        })
        .await
        .expect_ok();

    // Revoked through the first, refused by the second within a second
    // (its cache TTL is 30 s: only the bus can explain it).
    admin
        .api_keys()
        .revoke_api_key(RevokeApiKeyRequest {
            name: key.name.clone(),
            etag: key.etag.clone(),
        })
        .await
        .expect_ok();
    let revoked = Instant::now();
    loop {
        let code = probe(&on_second, "acme").await;
        if code == Code::Unauthenticated {
            break;
        }
        assert_eq!(code, Code::Ok, "unexpected refusal");
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "the second replica still accepts the revoked key after {:?}",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let watched = tokio::time::timeout(Duration::from_secs(1), watcher.message())
        .await
        .expect("the revocation reaches the other replica's watcher within a second")
        .expect("the watch goes on")
        .and_then(|r| r.event)
        .expect("an event");
    assert_eq!(watched.r#type, "apiKey.revoked");
    assert_eq!(watched.resource, key.name);

    // An access token revoked through the first is refused by the second
    // within a second: its `token.revoked` event reaches the second's
    // verifier (the database poll alone takes 5 s).
    let oauth = create_oauth_client(&admin, "acme", "svc", false, Some(&sa.name)).await;
    let token = first
        .anonymous()
        .tokens()
        .issue_token(IssueTokenRequest {
            grant_type: "client_credentials".into(),
            client_id: oauth.name.clone(),
            client_secret: oauth.secret.clone(),
            scope: "users.get".into(),
            ..Default::default()
        })
        .await
        .expect_ok()
        .access_token;
    let with_token = second
        .builder()
        .bearer_token(&token)
        .connect_lazy()
        .unwrap();
    let read = async || {
        with_token
            .users()
            .get_user(GetUserRequest {
                name: "organizations/acme/users/nobody".into(),
            })
            .await
            .map(drop)
            .map_err(|s| s.code())
    };
    assert_eq!(read().await, Err(Code::NotFound), "accepted before");
    first
        .anonymous()
        .tokens()
        .revoke_token(RevokeTokenRequest {
            token: token.clone(),
            client_id: oauth.name.clone(),
            client_secret: oauth.secret.clone(),
            ..Default::default()
        })
        .await
        .expect_ok();
    let revoked = Instant::now();
    loop {
        match read().await {
            Err(Code::Unauthenticated) => break,
            other => assert_eq!(other, Err(Code::NotFound), "unexpected answer"),
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "the second replica still accepts the revoked token after {:?}",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Stopping the leader hands the relay to the other within seconds,
    // and events keep flowing.
    let stopped = Instant::now();
    let (survivor, gone) = if leader == 0 {
        first.stop().await.unwrap();
        (&second, &first)
    } else {
        second.stop().await.unwrap();
        (&first, &second)
    };
    assert!(!gone.is_running());
    let new = one_leader(&[&first, &second], Duration::from_secs(5))
        .await
        .unwrap();
    assert_ne!(new, leader, "the stopped replica cannot lead");
    eprintln!("relay handed over in {:?}", stopped.elapsed());
    let other_key = sa_with_key(&survivor.admin(), "acme", "after", &[]).await;
    assert!(other_key.starts_with("tg_"));
    drained(survivor, Duration::from_secs(10)).await.unwrap();
    let seen = consume(&url, &stream.name, true).await.unwrap();
    check_stream(survivor, &stream.prefix, &seen).await.unwrap();
    second.stop().await.unwrap();
    first.stop().await.unwrap();
}
