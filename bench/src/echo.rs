//! The baseline: a bare tonic unary service (`proto/echo.proto`) with no
//! layers, no state and no I/O, whose messages are the size of
//! GetOrganization's. Whatever Tollgate costs on top of this is the price of
//! its request path.
//!
//! It runs as the hidden `echo-server` subcommand of this same binary, in
//! its own process, built the way `tollgate serve` builds its server: a
//! default multi-threaded tokio runtime and `tonic::transport::Server`'s
//! default settings.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context, Result};
use tonic::{Request, Response, Status};

/// Generated from `proto/echo.proto` by `build.rs`.
pub mod pb {
    tonic::include_proto!("tollgate.bench.echo.v1");
}

use pb::{
    EchoRequest, EchoResponse, ServedRequest, ServedResponse, Stamp,
    echo_service_server::{EchoService, EchoServiceServer},
};

/// The service: answers every call with a copy of `template` named after
/// the request, as GetOrganization answers with a converted cached record.
struct Echo {
    template: EchoResponse,
    /// Echo calls answered, for `Served`. One relaxed atomic add per call
    /// is the price of checking h2load's runs (which see only HTTP
    /// statuses); Tollgate pays for the same check with its metrics.
    served: AtomicU64,
}

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let name = request.into_inner().name;
        let response = EchoResponse {
            name,
            ..self.template.clone()
        };
        self.served.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(response))
    }

    async fn served(
        &self,
        _request: Request<ServedRequest>,
    ) -> Result<Response<ServedResponse>, Status> {
        Ok(Response::new(ServedResponse {
            echoes: self.served.load(Ordering::Relaxed),
        }))
    }
}

/// An organization-shaped record: a UUID uid, a short display name, two
/// timestamps and a quoted 16-hex-digit etag, as Tollgate returns for
/// `organizations/root`.
fn template() -> EchoResponse {
    let stamp = Stamp {
        seconds: 1_767_225_600,
        nanos: 123_456_000,
    };
    EchoResponse {
        name: String::new(),
        uid: "0196f1c2-7a3b-7c4d-9e8f-0123456789ab".to_owned(),
        display_name: "Root".to_owned(),
        state: 1,
        create_time: Some(stamp),
        update_time: Some(stamp),
        etag: "\"0123456789abcdef\"".to_owned(),
    }
}

/// Entry point of `tollgate-bench echo-server`: serves until SIGTERM or
/// Ctrl-C (in practice until the bench kills it).
///
/// `tcp_nodelay` is tonic's default (`true`) unless a variant run turns it
/// off to compare with a server that accepts its own sockets.
pub fn serve(listen: SocketAddr, tcp_nodelay: bool) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        tonic::transport::Server::builder()
            .tcp_nodelay(tcp_nodelay)
            .add_service(EchoServiceServer::new(Echo {
                template: template(),
                served: AtomicU64::new(0),
            }))
            .serve_with_shutdown(listen, tollgate_server::shutdown::signal())
            .await
            .with_context(|| format!("echo server on {listen}"))
    })
}
