//! Traces, end to end, into a real OTLP receiver (`support::otlp`): a
//! service's span → Tollgate's server span → its database spans, over gRPC
//! through the client crate and over HTTP/JSON, Connect and the OAuth
//! endpoints with a `traceparent` sent by curl; and the JSON log line of a
//! traced call carrying the exported trace's id.
//!
//! The tracer is process-wide, so every server here exports to the one
//! receiver [`receiver`] starts (on a runtime of its own: each test has its
//! own runtime, the receiver must outlive them).

use std::{sync::OnceLock, time::Duration};

use opentelemetry::{
    Context,
    trace::{TraceContextExt, Tracer, TracerProvider as _},
};
use opentelemetry_sdk::Resource;
use tollgate_client::v1::{CreateOrganizationRequest, Organization};
use tollgate_e2e::{
    Backend, TestServer, curl,
    curl::Version,
    otlp::{CLIENT, Receiver, SERVER, Span},
};
use tollgate_server::config::OtlpProtocol;

/// The receiver every server in this binary exports to.
fn receiver() -> &'static Receiver {
    static RECEIVER: OnceLock<&'static Receiver> = OnceLock::new();
    RECEIVER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("receiver runtime");
            let receiver = rt.block_on(Receiver::start()).expect("receiver");
            tx.send(&*Box::leak(Box::new(receiver))).expect("send");
            // Keep the runtime (and the receiver's tasks) for the process.
            rt.block_on(std::future::pending::<()>());
        });
        rx.recv().expect("receiver started")
    })
}

/// A server exporting its traces to [`receiver`], sampling everything.
async fn traced_server() -> TestServer {
    let endpoint = receiver().grpc_url();
    TestServer::start_configured(&Backend::Sqlite, move |c| {
        c.otlp_endpoint = Some(endpoint.clone());
        c.trace_sample_ratio = Some(1.0);
    })
    .await
    .expect("start")
}

/// Sends what Tollgate has ended so far.
async fn flush() {
    tollgate_server::otel::flush(Duration::from_secs(5)).await;
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// The one span of `spans` that `pick` selects, with a useful failure.
fn one<'a>(spans: &'a [Span], what: &str, pick: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}\nin {spans:#?}");
    found[0]
}

fn no_secret_in(spans: &[Span], secret: &str) {
    for s in spans {
        for (k, v) in &s.attributes {
            assert!(!v.contains(secret), "{k} of {} carries the key", s.name);
        }
    }
}

#[tokio::test]
async fn a_service_span_is_the_parent_of_tollgates_server_span_and_its_database_spans() {
    let server = traced_server().await;
    // The calling service: its own tracer provider, exporting to the same
    // receiver under its own name (what a user's service does).
    let provider = tollgate_server::otel::export::provider(
        &receiver().grpc_url(),
        OtlpProtocol::Grpc,
        None,
        Resource::builder().with_service_name("checkout").build(),
    )
    .expect("client tracer");
    let tracer = provider.tracer("checkout");
    let cx = Context::new().with_span(tracer.start("place-order"));
    let trace_id = cx.span().span_context().trace_id().to_string();

    let client = server.admin();
    let created: Organization = opentelemetry::context::FutureExt::with_context(
        client
            .organizations()
            .create_organization(CreateOrganizationRequest {
                organization_id: "traced".into(),
                organization: Some(Organization {
                    display_name: "Traced".into(),
                    ..Default::default()
                }),
            }),
        cx.clone(),
    )
    .await
    .expect("create")
    .into_inner();
    assert_eq!(created.name, "organizations/traced");
    cx.span().end();
    tokio::task::spawn_blocking(move || provider.force_flush())
        .await
        .expect("join")
        .expect("flush the client's span");
    flush().await;

    let spans = receiver()
        .trace(&trace_id, Duration::from_secs(10), |s| {
            s.iter().any(|s| s.service == "checkout")
                && s.iter().any(|s| s.kind == SERVER)
                && s.iter()
                    .any(|s| s.kind == CLIENT && s.service == "tollgate")
        })
        .await;
    let client_span = one(&spans, "the service's span", |s| s.service == "checkout");
    assert_eq!(client_span.name, "place-order");
    let server_span = one(&spans, "Tollgate's server span", |s| s.kind == SERVER);
    assert_eq!(server_span.service, "tollgate");
    assert_eq!(server_span.parent_span_id, client_span.span_id);
    assert_eq!(
        server_span.name,
        "tollgate.v1.OrganizationService/CreateOrganization"
    );
    assert_eq!(server_span.attr("rpc.system"), Some("grpc"));
    assert_eq!(
        server_span.attr("rpc.service"),
        Some("tollgate.v1.OrganizationService")
    );
    assert_eq!(server_span.attr("rpc.method"), Some("CreateOrganization"));
    assert_eq!(server_span.attr("rpc.grpc.status_code"), Some("0"));
    assert_eq!(server_span.attr("tollgate.protocol"), Some("grpc"));
    assert_eq!(server_span.status, 0, "OK is not an error");
    // The credential's lookups, as events on the call's span.
    let lookups: Vec<_> = server_span
        .events
        .iter()
        .filter(|(name, _)| name == "cache.lookup")
        .collect();
    assert!(
        lookups
            .iter()
            .any(|(_, a)| a.get("tollgate.cache.name").is_some()
                && a.get("tollgate.cache.hit")
                    .is_some_and(|h| h == "true" || h == "false")),
        "cache lookups on the server span: {server_span:#?}"
    );

    let db: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == CLIENT && s.service == "tollgate")
        .collect();
    assert!(
        db.iter().all(|s| s.parent_span_id == server_span.span_id),
        "database spans are the server span's children: {db:#?}"
    );
    assert!(
        db.iter()
            .all(|s| s.attr("db.system.name") == Some("sqlite")),
        "{db:#?}"
    );
    let insert = db
        .iter()
        .find(|s| s.name == "INSERT organizations")
        .unwrap_or_else(|| panic!("an INSERT organizations span: {db:#?}"));
    assert_eq!(insert.attr("db.operation.name"), Some("INSERT"));
    assert_eq!(insert.attr("db.collection.name"), Some("organizations"));
    no_secret_in(&spans, server.admin_key());
}

#[tokio::test]
async fn http_json_connect_and_oauth_calls_continue_the_callers_trace() {
    let server = traced_server().await;
    let key = format!("x-api-key: {}", server.admin_key());
    let base = format!("http://{}", server.grpc_addr());

    // HTTP/JSON: a read and a miss.
    let (trace, parent) = (random_hex(16), random_hex(8));
    let traceparent = format!("traceparent: 00-{trace}-{parent}-01");
    let ok = curl::request(
        Version::Http1,
        &format!("{base}/v1/organizations/root"),
        &["-H", &key, "-H", &traceparent],
    )
    .await
    .expect("curl");
    assert_eq!(ok.status, 200, "{}", ok.text());
    let (missing_trace, missing_parent) = (random_hex(16), random_hex(8));
    let missing = curl::request(
        Version::Http1,
        &format!("{base}/v1/organizations/nope"),
        &[
            "-H",
            &key,
            "-H",
            &format!("traceparent: 00-{missing_trace}-{missing_parent}-01"),
        ],
    )
    .await
    .expect("curl");
    assert_eq!(missing.status, 404);

    // Connect, unary JSON.
    let (connect_trace, connect_parent) = (random_hex(16), random_hex(8));
    let connect = curl::request(
        Version::Http1,
        &format!("{base}/tollgate.v1.OrganizationService/GetOrganization"),
        &[
            "-H",
            &key,
            "-H",
            "content-type: application/json",
            "-H",
            &format!("traceparent: 00-{connect_trace}-{connect_parent}-01"),
            "--data-binary",
            r#"{"name":"organizations/root"}"#,
        ],
    )
    .await
    .expect("curl");
    assert_eq!(connect.status, 200, "{}", connect.text());

    // An OAuth 2 / OIDC endpoint (plain HTTP, outside the gRPC layers).
    let (oidc_trace, oidc_parent) = (random_hex(16), random_hex(8));
    let discovery = curl::request(
        Version::Http1,
        &format!("{base}/.well-known/openid-configuration"),
        &[
            "-H",
            &format!("traceparent: 00-{oidc_trace}-{oidc_parent}-01"),
        ],
    )
    .await
    .expect("curl");
    assert_eq!(discovery.status, 200);
    flush().await;

    let has_server = |s: &[Span]| s.iter().any(|s| s.kind == SERVER);
    let spans = receiver()
        .trace(&trace, Duration::from_secs(10), |s| {
            has_server(s) && s.iter().any(|s| s.kind == CLIENT)
        })
        .await;
    let server_span = one(&spans, "the HTTP/JSON call's server span", |s| {
        s.kind == SERVER
    });
    assert_eq!(server_span.parent_span_id, parent, "the caller's span");
    assert_eq!(
        server_span.name,
        "tollgate.v1.OrganizationService/GetOrganization"
    );
    assert_eq!(server_span.attr("tollgate.protocol"), Some("http"));
    assert_eq!(server_span.attr("http.request.method"), Some("GET"));
    assert_eq!(server_span.attr("url.path"), Some("/v1/organizations/root"));
    assert_eq!(server_span.attr("http.response.status_code"), Some("200"));
    assert_eq!(server_span.attr("rpc.grpc.status_code"), Some("0"));
    assert!(
        spans
            .iter()
            .any(|s| s.kind == CLIENT && s.parent_span_id == server_span.span_id),
        "a database span under the server span: {spans:#?}"
    );
    no_secret_in(&spans, server.admin_key());

    let spans = receiver()
        .trace(&missing_trace, Duration::from_secs(10), has_server)
        .await;
    let span = one(&spans, "the miss's server span", |s| s.kind == SERVER);
    assert_eq!(span.attr("http.response.status_code"), Some("404"));
    assert_eq!(span.attr("rpc.grpc.status_code"), Some("5"));
    assert_eq!(span.status, 0, "a client's miss is not the server's error");

    let spans = receiver()
        .trace(&connect_trace, Duration::from_secs(10), has_server)
        .await;
    let span = one(&spans, "the Connect call's server span", |s| {
        s.kind == SERVER
    });
    assert_eq!(span.parent_span_id, connect_parent);
    assert_eq!(span.attr("tollgate.protocol"), Some("connect"));

    let spans = receiver()
        .trace(&oidc_trace, Duration::from_secs(10), has_server)
        .await;
    let span = one(&spans, "the discovery request's server span", |s| {
        s.kind == SERVER
    });
    assert_eq!(span.parent_span_id, oidc_parent);
    assert_eq!(span.name, "GET /.well-known/openid-configuration");
    assert_eq!(span.attr("http.response.status_code"), Some("200"));

    // A path no endpoint serves does not become a span name.
    let (stray_trace, stray_parent) = (random_hex(16), random_hex(8));
    let stray = curl::request(
        Version::Http1,
        &format!("{base}/oauth2/{}", random_hex(8)),
        &[
            "-H",
            &format!("traceparent: 00-{stray_trace}-{stray_parent}-01"),
        ],
    )
    .await
    .expect("curl");
    assert_eq!(stray.status, 404);
    flush().await;
    let spans = receiver()
        .trace(&stray_trace, Duration::from_secs(10), has_server)
        .await;
    let span = one(&spans, "the stray request's server span", |s| {
        s.kind == SERVER
    });
    assert_eq!(span.name, "GET other");
    assert_eq!(span.attr("http.response.status_code"), Some("404"));

    // The RED metrics tell the protocols apart.
    let metrics = tollgate_e2e::http::get(server.admin_addr(), "/metrics")
        .await
        .expect("metrics")
        .body;
    for protocol in ["grpc", "http", "connect"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("tollgate_grpc_requests_total{")
                    && l.contains(&format!("protocol=\"{protocol}\""))),
            "no {protocol} series"
        );
    }
}

#[tokio::test]
async fn an_event_and_its_webhook_delivery_carry_the_changes_trace() {
    use tollgate_client::v1::{
        CreateUserRequest, CreateWebhookRequest, ListEventsRequest, User, Webhook,
    };
    let hooks = tollgate_e2e::receiver::Receiver::start().await;
    let endpoint = receiver().grpc_url();
    let server = TestServer::start_configured(&Backend::Sqlite, move |c| {
        c.otlp_endpoint = Some(endpoint.clone());
        c.trace_sample_ratio = Some(1.0);
        c.webhook_allow_loopback = true;
    })
    .await
    .expect("start");
    let admin = server.admin();
    tollgate_e2e::fixtures::create_org(&admin, "hooked", "Hooked").await;
    admin
        .webhooks()
        .create_webhook(CreateWebhookRequest {
            parent: "organizations/hooked".into(),
            webhook_id: "crm".into(),
            webhook: Some(Webhook {
                display_name: "CRM".into(),
                url: hooks.url(),
                event_types: vec!["user.created".into()],
                ..Default::default()
            }),
        })
        .await
        .expect("webhook");

    // The change, made inside a trace of the caller's.
    let (trace, parent) = (random_hex(16), random_hex(8));
    admin
        .users()
        .create_user(tollgate_e2e::fixtures::with_header(
            CreateUserRequest {
                parent: "organizations/hooked".into(),
                user_id: "ann".into(),
                user: Some(User {
                    display_name: "Ann".into(),
                    email: "ann@example.com".into(),
                    roles: vec!["viewer".into()],
                    ..Default::default()
                }),
            },
            "traceparent",
            &format!("00-{trace}-{parent}-01"),
        ))
        .await
        .expect("create user");
    let delivered = hooks.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(delivered.len(), 1);
    flush().await;

    let spans = receiver()
        .trace(&trace, Duration::from_secs(10), |s| {
            s.iter().any(|s| s.kind == SERVER)
        })
        .await;
    let server_span = one(&spans, "the change's server span", |s| s.kind == SERVER);
    assert_eq!(server_span.name, "tollgate.v1.UserService/CreateUser");

    // The event names the call that made it.
    let events = admin
        .events()
        .list_events(ListEventsRequest {
            parent: "organizations/hooked".into(),
            filter: "type = \"user.created\"".into(),
            ..Default::default()
        })
        .await
        .expect("events")
        .into_inner()
        .events;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].trace_parent,
        format!("00-{trace}-{}-01", server_span.span_id)
    );

    // The delivery: a client span of its own trace (the job's), linked to
    // the change, and the request carries that span's context.
    let sent = delivered[0].header("traceparent").to_owned();
    let mut parts = sent.split('-');
    let (_, delivery_trace, delivery_span) = (parts.next(), parts.next(), parts.next());
    let (delivery_trace, delivery_span) = (
        delivery_trace.expect("a traceparent").to_owned(),
        delivery_span.expect("a span id").to_owned(),
    );
    let spans = receiver()
        .trace(&delivery_trace, Duration::from_secs(10), |s| {
            s.iter().any(|s| s.span_id == delivery_span)
                && s.iter().any(|s| s.name == "job webhook.deliver")
        })
        .await;
    let post = one(&spans, "the delivery's span", |s| {
        s.span_id == delivery_span
    });
    assert_eq!((post.name.as_str(), post.kind), ("POST", CLIENT));
    assert_eq!(post.attr("http.response.status_code"), Some("200"));
    assert_eq!(post.attr("server.address"), Some("127.0.0.1"));
    assert!(
        post.links
            .contains(&(trace.clone(), server_span.span_id.clone())),
        "linked to the change: {post:?}"
    );
    let job = one(&spans, "the pump job's span", |s| {
        s.name == "job webhook.deliver"
    });
    assert_eq!(post.parent_span_id, job.span_id);
}

#[tokio::test]
async fn a_log_line_of_a_traced_call_has_the_exported_traces_id() {
    use tracing_subscriber::prelude::*;
    let _ = tracing_subscriber::registry()
        .with(
            tollgate_server::telemetry::json_layer(|| tollgate_e2e::logs::Capture).with_filter(
                tracing_subscriber::EnvFilter::new("tollgate::security=info"),
            ),
        )
        .try_init();
    let server = traced_server().await;

    // A refused credential: a security log line, inside the call.
    let (trace, parent) = (random_hex(16), random_hex(8));
    let refused = curl::request(
        Version::Http1,
        &format!("http://{}/v1/organizations/root", server.grpc_addr()),
        &[
            "-H",
            "x-api-key: tg_aaaaaaaaaaaaaaaa_notarealkeynotarealkeynotarealkeynotareal0",
            "-H",
            &format!("traceparent: 00-{trace}-{parent}-01"),
        ],
    )
    .await
    .expect("curl");
    assert_eq!(refused.status, 401);
    flush().await;

    let spans = receiver()
        .trace(&trace, Duration::from_secs(10), |s| {
            s.iter().any(|s| s.kind == SERVER)
        })
        .await;
    let server_span = one(&spans, "the refused call's server span", |s| {
        s.kind == SERVER
    });
    assert_eq!(server_span.attr("rpc.grpc.status_code"), Some("16"));

    let logs = tollgate_e2e::logs::captured();
    let line = logs
        .lines()
        .find(|l| l.contains(&trace))
        .unwrap_or_else(|| panic!("no log line with trace {trace}:\n{logs}"));
    let json: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(json["trace_id"], server_span.trace_id.as_str());
    assert_eq!(json["span_id"], server_span.span_id.as_str());
    assert_eq!(json["target"], "tollgate::security");
    assert!(
        !line.contains("notarealkey"),
        "the credential is logged: {line}"
    );
}
