//! Regressions of the hostile-client probe (`security-probe-1.md`): values
//! PostgreSQL refuses are INVALID_ARGUMENT before they reach it (D7),
//! undecodable requests are INVALID_ARGUMENT and abandoned calls CANCELLED
//! (D11), and SetPassword refuses before it hashes (D4).
//!
//! The metrics recorder is process-wide, so tests here read counters as
//! deltas and each counter is moved by one test only.

use std::{collections::HashSet, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::{Buf as _, BufMut as _};
use prost::Message as _;
use tollgate_e2e::{
    Code, TestServer, concurrently, each_backend,
    fixtures::{create_org, create_user, org_name, sa_with_key, user_name},
    http,
    rpc::RpcResult as _,
    v1::{ListUsersRequest, SetPasswordRequest},
};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};

/// Sends and receives raw message bytes, so a test can send what no
/// generated client would.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// A raw gRPC client on a connection of its own.
async fn raw_client(server: &TestServer) -> tonic::client::Grpc<Channel> {
    let channel = Channel::from_shared(server.grpc_url())
        .expect("a valid URL")
        .connect()
        .await
        .expect("connect");
    tonic::client::Grpc::new(channel)
}

/// Sends `payload` as the request of `path`, with `key` as credential.
async fn raw_call(
    server: &TestServer,
    path: &'static str,
    payload: &[u8],
    key: Option<&str>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = raw_client(server).await;
    grpc.ready().await.expect("ready");
    let mut req = tonic::Request::new(payload.to_vec());
    if let Some(key) = key {
        req.metadata_mut()
            .insert("x-api-key", key.parse().expect("an ASCII key"));
    }
    grpc.unary(req, http_path(path), Raw)
        .await
        .map(|r| r.into_inner())
}

fn http_path(path: &'static str) -> tonic::codegen::http::uri::PathAndQuery {
    tonic::codegen::http::uri::PathAndQuery::from_static(path)
}

/// The value of the first `/metrics` sample named `name` whose labels
/// contain every one of `labels`; 0 when there is none yet.
async fn metric(server: &TestServer, name: &str, labels: &[&str]) -> f64 {
    let body = http::get(server.admin_addr(), "/metrics")
        .await
        .expect("GET /metrics")
        .body;
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The pids of the server's PostgreSQL sessions (they carry its schema as
/// `application_name`), or `None` on SQLite.
async fn pg_sessions(server: &TestServer) -> Option<HashSet<String>> {
    let schema = server.pg_schema()?;
    let pids = schema
        .query_strings(&format!(
            "SELECT pid::text AS v FROM pg_stat_activity WHERE application_name = '{}'",
            schema.name()
        ))
        .await
        .expect("pg_stat_activity");
    Some(pids.into_iter().collect())
}

/// A protobuf page token with its `last_key` (field 1) replaced, keeping
/// the query hash (field 2): a forgery the server's hash check accepts.
fn forge_page_token(real: &str, last_key: &str) -> String {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Token {
        #[prost(string, tag = "1")]
        last_key: String,
        #[prost(fixed64, tag = "2")]
        query: u64,
    }
    let bytes = URL_SAFE_NO_PAD.decode(real).expect("a base64url token");
    let mut token = Token::decode(bytes.as_slice()).expect("a page token");
    token.last_key = last_key.to_owned();
    URL_SAFE_NO_PAD.encode(token.encode_to_vec())
}

// D7: a NUL is refused before the query, so it neither fails on
// PostgreSQL nor costs a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_a_filter_or_page_token_is_invalid_argument() {
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "nul", "Nul").await;
        for id in ["a", "b", "c"] {
            create_user(&admin, "nul", id, &[]).await;
        }
        let parent = org_name("nul");
        let list = |filter: &str, page_token: &str| ListUsersRequest {
            parent: parent.clone(),
            page_size: 1,
            page_token: page_token.into(),
            filter: filter.into(),
        };
        let real = admin
            .users()
            .list_users(list("", ""))
            .await
            .expect_ok()
            .next_page_token;
        let forged = forge_page_token(&real, "a\u{0}");
        // The forgery is otherwise good: the same token with a plain key
        // is accepted.
        admin
            .users()
            .list_users(list("", &forge_page_token(&real, "a")))
            .await
            .expect_ok();

        let before = pg_sessions(server).await;
        for i in 0..50 {
            if i % 2 == 0 {
                admin
                    .users()
                    .list_users(list("display_name = \"x\u{0}y\"", ""))
                    .await
                    .expect_invalid("filter");
            } else {
                admin
                    .users()
                    .list_users(list("", &forged))
                    .await
                    .expect_invalid("page_token");
            }
        }
        // Still serving, on the same sessions: a refused value must not
        // make the server drop and reopen connections.
        admin.users().list_users(list("", "")).await.expect_ok();
        if let (Some(before), Some(after)) = (before, pg_sessions(server).await) {
            let new: Vec<_> = after.difference(&before).collect();
            assert!(
                new.len() < 5,
                "50 refused calls opened {} new PostgreSQL sessions",
                new.len()
            );
        }
        Ok(())
    })
    .await;
}

// D11: bytes that are not the request message are the client's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_request_is_invalid_argument() {
    each_backend(async |server: &mut TestServer| {
        let key = server.admin_key().to_owned();
        for garbage in [&b"\xff\xff"[..], b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x05ab"] {
            let status = raw_call(
                server,
                "/tollgate.v1.OrganizationService/GetOrganization",
                garbage,
                Some(&key),
            )
            .await
            .expect_err("garbage is refused");
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(
                status.message().contains("GetOrganizationRequest"),
                "{status:?}"
            );
        }
        // A well-formed request on the same path still works.
        let ok = raw_call(
            server,
            "/tollgate.v1.OrganizationService/GetOrganization",
            &tollgate_e2e::v1::GetOrganizationRequest {
                name: org_name("root"),
            }
            .encode_to_vec(),
            Some(&key),
        )
        .await;
        assert!(ok.is_ok(), "{ok:?}");
        Ok(())
    })
    .await;
}

// D11: a client that goes away before its request arrived cancelled the
// call; the server did not fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_call_is_counted_as_cancelled() {
    const CHECK: &str = "method=\"/grpc.health.v1.Health/Check\"";
    const REQUESTS: &str = "tollgate_grpc_requests_total";
    each_backend(async |server: &mut TestServer| {
        let cancelled = metric(server, REQUESTS, &[CHECK, "code=\"CANCELLED\""]).await;
        let unknown = metric(server, REQUESTS, &[CHECK, "code=\"UNKNOWN\""]).await;
        // Headers without a body, as the probe's flood sent them; then the
        // whole connection goes away.
        let mut grpc = raw_client(server).await;
        grpc.ready().await.expect("ready");
        let call = tokio::spawn(async move {
            let body = futures::stream::pending::<Vec<u8>>();
            grpc.client_streaming(
                tonic::Request::new(body),
                http_path("/grpc.health.v1.Health/Check"),
                Raw,
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        call.abort();
        let _ = call.await;

        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while metric(server, REQUESTS, &[CHECK, "code=\"CANCELLED\""]).await <= cancelled {
            if tokio::time::Instant::now() > deadline {
                let body = http::get(server.admin_addr(), "/metrics").await?.body;
                let counted: Vec<_> = body
                    .lines()
                    .filter(|l| l.starts_with(REQUESTS) && l.contains(CHECK))
                    .collect();
                anyhow::bail!("the abandoned call was not counted as CANCELLED: {counted:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            metric(server, REQUESTS, &[CHECK, "code=\"UNKNOWN\""]).await,
            unknown,
            "the abandoned call was also counted as UNKNOWN"
        );
        Ok(())
    })
    .await;
}

// D4: SetPassword checks the target and the caller's right first, so
// refused calls cost no argon2 hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_password_refuses_before_hashing() {
    const HASHES: &str = "tollgate_password_hashes_total";
    const PASSWORD: &str = "correct horse battery staple";
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        create_org(&admin, "pw", "Passwords").await;
        let editor = server.client(&sa_with_key(&admin, "pw", "ed", &["editor"]).await);
        create_user(&admin, "pw", "boss", &["admin"]).await;
        create_user(&admin, "pw", "clerk", &["viewer"]).await;
        let set = |name: String| SetPasswordRequest {
            name,
            password: PASSWORD.into(),
        };

        let hashes = metric(server, HASHES, &[]).await;
        let denied = concurrently(20, |_| {
            let editor = editor.clone();
            let req = set(user_name("pw", "boss"));
            async move { editor.users().set_password(req).await }
        })
        .await;
        for r in denied {
            r.expect_code(Code::PermissionDenied);
        }
        let missing = concurrently(30, |i| {
            let editor = editor.clone();
            let req = set(user_name("pw", &format!("ghost-{i}")));
            async move { editor.users().set_password(req).await }
        })
        .await;
        for r in missing {
            r.expect_code(Code::NotFound);
        }
        assert_eq!(
            metric(server, HASHES, &[]).await,
            hashes,
            "refused SetPassword calls hashed"
        );

        // The counter is live: a permitted call hashes once.
        let user = editor
            .users()
            .set_password(set(user_name("pw", "clerk")))
            .await
            .expect_ok();
        assert!(user.has_password);
        assert_eq!(metric(server, HASHES, &[]).await, hashes + 1.0);
        Ok(())
    })
    .await;
}
