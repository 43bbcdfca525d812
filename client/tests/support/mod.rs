//! A scripted `OrganizationService` on a real tonic server at
//! `127.0.0.1:0`, shared by the client's test binaries: it counts attempts,
//! can fail the first ones with UNAVAILABLE, can be slow, checks the
//! credential it receives, and can serve over TLS.
// Each test binary uses a different part of this module; `expect` would
// fail in the binaries that do use all of it.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{net::TcpListener, sync::oneshot};
use tokio_stream::wrappers::TcpListenerStream;
use tollgate_client::{
    Client, ClientBuilder,
    tonic::{self, Request, Response, Status, transport::Server},
    v1::{
        CreateOrganizationRequest, DeleteOrganizationRequest, GetOrganizationRequest,
        ListOrganizationsRequest, ListOrganizationsResponse, Organization,
        UpdateOrganizationRequest,
        organization_service_server::{OrganizationService, OrganizationServiceServer},
    },
};

pub const KEY: &str = "tg_test_key_0123456789";

/// How the fake server behaves.
#[derive(Clone, Default)]
pub struct Script {
    /// Answer UNAVAILABLE to this many calls before answering normally.
    pub fail_first: usize,
    /// Sleep this long before answering.
    pub delay: Duration,
    /// Refuse calls whose `authorization` header differs from this.
    pub expect_authorization: Option<String>,
}

/// What the fake server saw.
#[derive(Default)]
pub struct Seen {
    pub attempts: AtomicUsize,
    pub authorization: Mutex<Vec<Option<String>>>,
    pub grpc_timeout: Mutex<Vec<Option<String>>>,
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
            .expect("held only to push, which cannot panic and poison it")
            .push(authorization.clone());
        self.seen
            .grpc_timeout
            .lock()
            .expect("held only to push, which cannot panic and poison it")
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

pub fn organization(name: &str) -> Organization {
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
pub struct TestServer {
    pub url: String,
    pub seen: Arc<Seen>,
    _shutdown: oneshot::Sender<()>,
}

impl TestServer {
    pub fn attempts(&self) -> usize {
        self.seen.attempts.load(Ordering::SeqCst)
    }

    /// A builder for this server with the test key and a quick backoff.
    pub fn client(&self) -> ClientBuilder {
        Client::builder(&self.url)
            .api_key(KEY)
            .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
    }
}

pub async fn serve(script: Script) -> anyhow::Result<TestServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok(serve_on(listener, addr, script))
}

pub fn serve_on(listener: TcpListener, addr: SocketAddr, script: Script) -> TestServer {
    start(
        listener,
        Server::builder(),
        format!("http://{addr}"),
        script,
    )
}

/// Serves over TLS with the certificate `cert_pem` and its key; the URL is
/// `https://{host}:{port}`, so the client checks the certificate against
/// `host`.
#[cfg(feature = "tls")]
pub async fn serve_tls(
    script: Script,
    host: &str,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<TestServer> {
    use tonic::transport::{Identity, ServerTlsConfig};

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem)))?;
    Ok(start(
        listener,
        server,
        format!("https://{host}:{port}"),
        script,
    ))
}

fn start(listener: TcpListener, mut server: Server, url: String, script: Script) -> TestServer {
    let seen = Arc::new(Seen::default());
    let (health_reporter, health) = tonic_health::server::health_reporter();
    drop(health_reporter);
    let service = OrganizationServiceServer::new(FakeOrganizations {
        script,
        seen: Arc::clone(&seen),
    });
    let (shutdown, stop) = oneshot::channel::<()>();
    tokio::spawn(
        server
            .add_service(service)
            .add_service(health)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop.await;
            }),
    );
    TestServer {
        url,
        seen,
        _shutdown: shutdown,
    }
}

pub fn get(name: &str) -> GetOrganizationRequest {
    GetOrganizationRequest {
        name: name.to_owned(),
    }
}

pub fn create(id: &str) -> CreateOrganizationRequest {
    CreateOrganizationRequest {
        organization: Some(organization("")),
        organization_id: id.to_owned(),
    }
}
