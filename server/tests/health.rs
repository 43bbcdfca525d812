//! Health follows the database: a TCP proxy in front of PostgreSQL is cut
//! and restored, and grpc.health.v1 and /readyz follow. Needs
//! `TOLLGATE_TEST_DATABASE_URL`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use diesel::{Connection, PgConnection, connection::SimpleConnection};
use tokio::{net::TcpListener, sync::Mutex, task::JoinHandle};
use tollgate_client::{
    Client,
    health::{HealthCheckRequest, ServingStatus},
};

/// Forwards connections to `upstream` until cut; while cut it drops every
/// connection, old and new, like a network partition.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the proxy binds an ephemeral loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (c, cs) = (cut.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue;
                }
                let upstream = upstream.clone();
                cs.lock().await.push(tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                }));
            }
        });
        Proxy { addr, cut, conns }
    }

    async fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            for c in self.conns.lock().await.drain(..) {
                c.abort();
            }
        }
    }
}

async fn wait_for(client: &Client, want: ServingStatus) {
    let mut last = None;
    for _ in 0..100 {
        let got = client
            .health()
            .check(HealthCheckRequest {
                service: "tollgate.v1.OrganizationService".into(),
            })
            .await
            .map(|r| r.into_inner().status());
        if got.as_ref().ok() == Some(&want) {
            return;
        }
        last = Some(got);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("health never became {want:?}; last: {last:?}");
}

async fn readyz(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the admin listener is up while the server runs");
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("the admin endpoint accepts the request");
    let mut out = String::new();
    s.read_to_string(&mut out)
        .await
        .expect("the admin endpoint answers in UTF-8 and closes");
    out
}

#[tokio::test]
async fn health_is_not_serving_while_postgres_is_unreachable() {
    let Ok(base) = std::env::var("TOLLGATE_TEST_DATABASE_URL") else {
        assert!(
            std::env::var("TOLLGATE_TEST_STRICT").is_err(),
            "TOLLGATE_TEST_DATABASE_URL is required under TOLLGATE_TEST_STRICT"
        );
        eprintln!("skipping PostgreSQL: TOLLGATE_TEST_DATABASE_URL is not set");
        return;
    };
    // host:port of the real server, between '@' (or "//") and the next '/'.
    let after_scheme = base.split_once("://").map(|(_, r)| r).unwrap_or(&base);
    let authority = after_scheme.split('/').next().unwrap_or_default();
    let hostport = authority.rsplit('@').next().unwrap_or_default().to_owned();
    let proxy = Proxy::start(hostport.clone()).await;

    let schema = format!("tg_health_{}", std::process::id());
    let mut admin_conn = PgConnection::establish(&base).unwrap();
    admin_conn
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!(
        "{}{sep}options=-csearch_path%3D{schema}",
        base.replacen(&hostport, &proxy.addr.to_string(), 1)
    );

    // PostgreSQL deployments bring their own key-encryption key.
    let kek = tempfile::tempdir().unwrap();
    tollgate_server::oauth::kek::Kek::create_file(&kek.path().join("kek")).unwrap();
    let config = tollgate_server::Config {
        database_url: url,
        health_interval: Duration::from_millis(100),
        db_pool_size: 4,
        key_encryption_key_file: Some(kek.path().join("kek")),
        ..Default::default()
    };
    let app = tollgate_server::prepare(config).await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, admin_addr) = (grpc.local_addr().unwrap(), admin.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tollgate_server::run(app, grpc, admin, async move {
        let _ = rx.await;
    }));
    let client = Client::builder(format!("http://{grpc_addr}"))
        .max_retries(0)
        .connect()
        .await
        .unwrap();

    wait_for(&client, ServingStatus::Serving).await;
    assert!(readyz(admin_addr).await.starts_with("HTTP/1.1 200"));

    proxy.set_cut(true).await;
    wait_for(&client, ServingStatus::NotServing).await;
    assert!(readyz(admin_addr).await.starts_with("HTTP/1.1 503"));

    // Back again: broken pooled connections are replaced.
    proxy.set_cut(false).await;
    wait_for(&client, ServingStatus::Serving).await;
    assert!(readyz(admin_addr).await.starts_with("HTTP/1.1 200"));

    let _ = tx.send(());
    server.await.unwrap().unwrap();
    admin_conn
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
}
