//! The client against a real tonic server on `127.0.0.1:0`: a scripted
//! `OrganizationService` that counts attempts, can fail the first ones with
//! UNAVAILABLE, can be slow, and checks the credential it receives.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{net::TcpListener, sync::oneshot};
use tokio_stream::wrappers::TcpListenerStream;
use tollgate_client::{
    Client, ClientBuilder,
    health::{HealthCheckRequest, ServingStatus},
    tonic::{self, Code, Request, Response, Status, transport::Server},
    v1::{
        CreateOrganizationRequest, DeleteOrganizationRequest, GetOrganizationRequest,
        ListOrganizationsRequest, ListOrganizationsResponse, Organization,
        UpdateOrganizationRequest,
        organization_service_server::{OrganizationService, OrganizationServiceServer},
    },
};

const KEY: &str = "tg_test_key_0123456789";

/// How the fake server behaves.
#[derive(Clone, Default)]
struct Script {
    /// Answer UNAVAILABLE to this many calls before answering normally.
    fail_first: usize,
    /// Sleep this long before answering.
    delay: Duration,
    /// Refuse calls whose `authorization` header differs from this.
    expect_authorization: Option<String>,
}

/// What the fake server saw.
#[derive(Default)]
struct Seen {
    attempts: AtomicUsize,
    authorization: Mutex<Vec<Option<String>>>,
    grpc_timeout: Mutex<Vec<Option<String>>>,
}

struct FakeOrganizations {
    script: Script,
    seen: Arc<Seen>,
}

impl FakeOrganizations {
    /// Records the call, then applies the script.
    async fn handle<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let attempt = self.seen.attempts.fetch_add(1, Ordering::SeqCst);
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let authorization = header("authorization");
        self.seen
            .authorization
            .lock()
            .unwrap()
            .push(authorization.clone());
        self.seen
            .grpc_timeout
            .lock()
            .unwrap()
            .push(header("grpc-timeout"));
        if let Some(expected) = &self.script.expect_authorization
            && authorization.as_deref() != Some(expected)
        {
            return Err(Status::unauthenticated(format!(
                "expected {expected:?}, got {authorization:?}"
            )));
        }
        if attempt < self.script.fail_first {
            return Err(Status::unavailable("scripted outage"));
        }
        tokio::time::sleep(self.script.delay).await;
        Ok(())
    }
}

fn organization(name: &str) -> Organization {
    Organization {
        name: name.to_owned(),
        display_name: "Acme".to_owned(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl OrganizationService for FakeOrganizations {
    async fn create_organization(
        &self,
        request: Request<CreateOrganizationRequest>,
    ) -> Result<Response<Organization>, Status> {
        self.handle(&request).await?;
        let id = request.into_inner().organization_id;
        Ok(Response::new(organization(&format!("organizations/{id}"))))
    }

    async fn get_organization(
        &self,
        request: Request<GetOrganizationRequest>,
    ) -> Result<Response<Organization>, Status> {
        self.handle(&request).await?;
        Ok(Response::new(organization(&request.into_inner().name)))
    }

    async fn list_organizations(
        &self,
        request: Request<ListOrganizationsRequest>,
    ) -> Result<Response<ListOrganizationsResponse>, Status> {
        self.handle(&request).await?;
        Ok(Response::new(ListOrganizationsResponse {
            organizations: vec![organization("organizations/acme")],
            next_page_token: String::new(),
        }))
    }

    async fn update_organization(
        &self,
        _: Request<UpdateOrganizationRequest>,
    ) -> Result<Response<Organization>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn delete_organization(
        &self,
        _: Request<DeleteOrganizationRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// A running fake server; dropping it shuts the server down.
struct TestServer {
    url: String,
    seen: Arc<Seen>,
    _shutdown: oneshot::Sender<()>,
}

impl TestServer {
    fn attempts(&self) -> usize {
        self.seen.attempts.load(Ordering::SeqCst)
    }

    /// A builder for this server with the test key and a quick backoff.
    fn client(&self) -> ClientBuilder {
        Client::builder(&self.url)
            .api_key(KEY)
            .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
    }
}

async fn serve(script: Script) -> anyhow::Result<TestServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok(serve_on(listener, addr, script))
}

fn serve_on(listener: TcpListener, addr: SocketAddr, script: Script) -> TestServer {
    let seen = Arc::new(Seen::default());
    let (health_reporter, health) = tonic_health::server::health_reporter();
    drop(health_reporter);
    let service = OrganizationServiceServer::new(FakeOrganizations {
        script,
        seen: Arc::clone(&seen),
    });
    let (shutdown, stop) = oneshot::channel::<()>();
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .add_service(health)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop.await;
            }),
    );
    TestServer {
        url: format!("http://{addr}"),
        seen,
        _shutdown: shutdown,
    }
}

fn get(name: &str) -> GetOrganizationRequest {
    GetOrganizationRequest {
        name: name.to_owned(),
    }
}

fn create(id: &str) -> CreateOrganizationRequest {
    CreateOrganizationRequest {
        organization: Some(organization("")),
        organization_id: id.to_owned(),
    }
}

#[tokio::test]
async fn credential_header_arrives_on_every_call() -> anyhow::Result<()> {
    let server = serve(Script {
        expect_authorization: Some(format!("Bearer {KEY}")),
        ..Script::default()
    })
    .await?;
    let client = server.client().connect().await?;

    let org = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await?
        .into_inner();
    assert_eq!(org.name, "organizations/acme");
    client
        .organizations()
        .create_organization(create("acme"))
        .await?;
    client
        .organizations()
        .list_organizations(ListOrganizationsRequest::default())
        .await?;

    let seen = server.seen.authorization.lock().unwrap().clone();
    assert_eq!(seen, vec![Some(format!("Bearer {KEY}")); 3]);
    Ok(())
}

#[tokio::test]
async fn bearer_token_is_sent_the_same_way() -> anyhow::Result<()> {
    let server = serve(Script {
        expect_authorization: Some("Bearer eyJhbGciOi.jwt.sig".to_owned()),
        ..Script::default()
    })
    .await?;
    let client = Client::builder(&server.url)
        .bearer_token("eyJhbGciOi.jwt.sig")
        .connect()
        .await?;
    client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_call_may_bring_its_own_authorization() -> anyhow::Result<()> {
    let server = serve(Script::default()).await?;
    let client = server.client().connect().await?;
    let mut request = Request::new(get("organizations/acme"));
    request
        .metadata_mut()
        .insert("authorization", "Bearer tg_other".parse()?);
    client.organizations().get_organization(request).await?;
    assert_eq!(
        *server.seen.authorization.lock().unwrap(),
        vec![Some("Bearer tg_other".to_owned())]
    );
    Ok(())
}

#[tokio::test]
async fn without_a_credential_no_header_is_sent() -> anyhow::Result<()> {
    let server = serve(Script::default()).await?;
    let client = Client::builder(&server.url).connect().await?;
    client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await?;
    assert_eq!(*server.seen.authorization.lock().unwrap(), vec![None]);
    Ok(())
}

#[tokio::test]
async fn get_is_retried_on_unavailable_until_it_succeeds() -> anyhow::Result<()> {
    let server = serve(Script {
        fail_first: 2,
        ..Script::default()
    })
    .await?;
    let client = server.client().connect().await?;

    let org = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await?
        .into_inner();

    assert_eq!(org.name, "organizations/acme");
    assert_eq!(server.attempts(), 3);
    // Every attempt carried the credential, not only the first.
    assert_eq!(
        *server.seen.authorization.lock().unwrap(),
        vec![Some(format!("Bearer {KEY}")); 3]
    );
    Ok(())
}

#[tokio::test]
async fn list_is_retried_on_unavailable() -> anyhow::Result<()> {
    let server = serve(Script {
        fail_first: 1,
        ..Script::default()
    })
    .await?;
    let client = server.client().connect().await?;
    let page = client
        .organizations()
        .list_organizations(ListOrganizationsRequest::default())
        .await?
        .into_inner();
    assert_eq!(page.organizations.len(), 1);
    assert_eq!(server.attempts(), 2);
    Ok(())
}

#[tokio::test]
async fn create_is_never_retried() -> anyhow::Result<()> {
    let server = serve(Script {
        fail_first: 1,
        ..Script::default()
    })
    .await?;
    let client = server.client().max_retries(5).connect().await?;

    let status = client
        .organizations()
        .create_organization(create("acme"))
        .await
        .expect_err("the server said UNAVAILABLE");

    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "scripted outage");
    assert_eq!(server.attempts(), 1);
    Ok(())
}

#[tokio::test]
async fn retries_stop_after_max_retries() -> anyhow::Result<()> {
    for max_retries in [0, 1, 2, 3] {
        let server = serve(Script {
            fail_first: usize::MAX,
            ..Script::default()
        })
        .await?;
        let client = server.client().max_retries(max_retries).connect().await?;

        let status = client
            .organizations()
            .get_organization(get("organizations/acme"))
            .await
            .expect_err("the server is always UNAVAILABLE");

        // The caller sees the server's own last answer.
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "scripted outage");
        assert_eq!(server.attempts(), max_retries as usize + 1);
    }
    Ok(())
}

#[tokio::test]
async fn default_max_retries_is_three() -> anyhow::Result<()> {
    let server = serve(Script {
        fail_first: usize::MAX,
        ..Script::default()
    })
    .await?;
    let client = server.client().connect().await?;
    let _ = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await;
    assert_eq!(server.attempts(), 4);
    Ok(())
}

#[tokio::test]
async fn other_errors_are_not_retried() -> anyhow::Result<()> {
    let server = serve(Script {
        expect_authorization: Some("Bearer someone-else".to_owned()),
        ..Script::default()
    })
    .await?;
    let client = server.client().connect().await?;
    let status = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await
        .expect_err("wrong credential");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(server.attempts(), 1);
    Ok(())
}

#[tokio::test]
async fn slow_server_hits_the_timeout() -> anyhow::Result<()> {
    let server = serve(Script {
        delay: Duration::from_secs(5),
        ..Script::default()
    })
    .await?;
    let client = server
        .client()
        .timeout(Duration::from_millis(200))
        .connect()
        .await?;

    let started = Instant::now();
    let status = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await
        .expect_err("the server is too slow");
    let elapsed = started.elapsed();

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    // A timeout is not retried: the deadline covers the whole call.
    assert_eq!(server.attempts(), 1);
    // The server was told how long it had.
    let sent = server.seen.grpc_timeout.lock().unwrap().clone();
    let sent = sent[0].as_deref().expect("grpc-timeout header");
    assert!(sent.ends_with('u') || sent.ends_with('n'), "{sent}");
    Ok(())
}

#[tokio::test]
async fn a_shorter_request_timeout_wins() -> anyhow::Result<()> {
    let server = serve(Script {
        delay: Duration::from_secs(5),
        ..Script::default()
    })
    .await?;
    let client = server.client().connect().await?; // 10 s default
    let mut request = Request::new(get("organizations/acme"));
    request.set_timeout(Duration::from_millis(200));

    let started = Instant::now();
    let status = client
        .organizations()
        .get_organization(request)
        .await
        .expect_err("the server is too slow");

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    Ok(())
}

#[tokio::test]
async fn retries_never_run_past_the_deadline() -> anyhow::Result<()> {
    let server = serve(Script {
        fail_first: usize::MAX,
        ..Script::default()
    })
    .await?;
    let client = Client::builder(&server.url)
        .timeout(Duration::from_millis(300))
        .max_retries(1000)
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .connect()
        .await?;

    let started = Instant::now();
    let status = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await
        .expect_err("the server is always UNAVAILABLE");

    assert!(
        matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(server.attempts() > 1);
    assert!(server.attempts() < 1000);
    Ok(())
}

#[tokio::test]
async fn reads_are_retried_over_connection_errors() -> anyhow::Result<()> {
    // Reserve a port, then leave it closed so the first attempts are refused.
    let reserved = TcpListener::bind("127.0.0.1:0").await?;
    let addr = reserved.local_addr()?;
    drop(reserved);

    let client = Client::builder(format!("http://{addr}"))
        .max_retries(50)
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(40))
        .connect_lazy()?;
    let call = tokio::spawn(async move {
        client
            .organizations()
            .get_organization(get("organizations/acme"))
            .await
    });

    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = serve_on(TcpListener::bind(addr).await?, addr, Script::default());

    let org = call.await??.into_inner();
    assert_eq!(org.name, "organizations/acme");
    assert_eq!(server.attempts(), 1);
    Ok(())
}

#[tokio::test]
async fn writes_are_not_retried_over_connection_errors() -> anyhow::Result<()> {
    let reserved = TcpListener::bind("127.0.0.1:0").await?;
    let addr = reserved.local_addr()?;
    drop(reserved);

    // A backoff this long would show up in the elapsed time if the call
    // were retried even once.
    let client = Client::builder(format!("http://{addr}"))
        .retry_backoff(Duration::from_secs(5), Duration::from_secs(5))
        .connect_lazy()?;
    let started = Instant::now();
    let status = client
        .organizations()
        .create_organization(create("acme"))
        .await
        .expect_err("nothing listens");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    Ok(())
}

#[tokio::test]
async fn eager_connect_to_a_closed_port_fails() -> anyhow::Result<()> {
    let reserved = TcpListener::bind("127.0.0.1:0").await?;
    let addr = reserved.local_addr()?;
    drop(reserved);
    let error = Client::builder(format!("http://{addr}"))
        .connect()
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(error, tollgate_client::Error::Transport { .. }),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn health_check_goes_through_the_same_transport() -> anyhow::Result<()> {
    let server = serve(Script::default()).await?;
    let client = server.client().connect().await?;
    let response = client
        .health()
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(response.status(), ServingStatus::Serving);
    Ok(())
}

#[tokio::test]
async fn clones_share_one_client() -> anyhow::Result<()> {
    let server = serve(Script::default()).await?;
    let client = Client::connect(&server.url).api_key(KEY).connect().await?;
    let calls = (0..8).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .organizations()
                .get_organization(get(&format!("organizations/org-{i}")))
                .await
        })
    });
    for call in calls {
        call.await??;
    }
    assert_eq!(server.attempts(), 8);
    Ok(())
}

#[tokio::test]
async fn extreme_settings_do_not_panic() -> anyhow::Result<()> {
    let server = serve(Script {
        fail_first: 1,
        ..Script::default()
    })
    .await?;
    // A zero backoff retries at once; huge timeouts and backoffs saturate.
    let client = Client::builder(&server.url)
        .timeout(Duration::MAX)
        .connect_timeout(Duration::MAX)
        .max_retries(u32::MAX)
        .retry_backoff(Duration::ZERO, Duration::ZERO)
        .connect()
        .await?;
    client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await?;
    assert_eq!(server.attempts(), 2);

    // With a backoff longer than the deadline the first failure is final.
    let client = Client::builder(&server.url)
        .timeout(Duration::MAX)
        .retry_backoff(Duration::MAX, Duration::MAX)
        .connect_lazy()?;
    client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await?;
    Ok(())
}
