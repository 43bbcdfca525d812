//! A gRPC service of your own, protected by Tollgate access tokens, and a
//! caller that gets its token from Tollgate with `client_credentials`.
//!
//! The service is the standard gRPC health service behind `VerifyLayer`,
//! which verifies each call's JWT locally against Tollgate's published keys
//! and hands the claims to the handler (here an interceptor that prints
//! who called). The caller is a `tollgate_client::Client` whose credential
//! is a `ClientCredentials` token source: it fetches a token, caches it and
//! refreshes it before it expires.
//!
//! Start Tollgate, create an OAuth client allowed the `client_credentials`
//! grant (and the audience below), then:
//!
//! ```sh
//! TOLLGATE_ISSUER=http://127.0.0.1:8080 \
//! TOLLGATE_CLIENT_ID=organizations/acme/clients/billing \
//! TOLLGATE_CLIENT_SECRET=... \
//! TOLLGATE_AUDIENCE=billing \
//!     cargo run -p tollgate-client --example protected_service
//! ```
//!
//! Optional: `TOLLGATE_SCOPE` (space-separated scopes to ask for),
//! `LISTEN` (default `127.0.0.1:0`), and the argument `--serve` to keep the
//! service running after the demonstration calls (stop it with Ctrl-C).

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use tokio_stream::wrappers::TcpListenerStream;
use tollgate_client::{
    Client, ClientCredentials, VerifiedClaims, Verifier,
    health::HealthCheckRequest,
    tonic::{self, Code, Request, Status, service::interceptor::InterceptedService},
};

/// The environment variable `name`, or an error saying what to set.
fn env(name: &str, what: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("set {name} to {what}"))
}

/// Runs before the health service: the layer has verified the token, so
/// the claims are in the request's extensions.
fn log_caller(request: Request<()>) -> Result<Request<()>, Status> {
    match request.extensions().get::<VerifiedClaims>() {
        Some(claims) => println!(
            "service: call from {} (client {}, org {}, scopes {:?})",
            claims.sub,
            claims.client_id.as_deref().unwrap_or("-"),
            claims.org.as_deref().unwrap_or("-"),
            claims.scope,
        ),
        // Unreachable behind the layer; refuse rather than serve anyway.
        None => return Err(Status::unauthenticated("no verified token")),
    }
    Ok(request)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let issuer = env(
        "TOLLGATE_ISSUER",
        "Tollgate's URL, e.g. http://127.0.0.1:8080",
    )?;
    let client_id = env(
        "TOLLGATE_CLIENT_ID",
        "an OAuth client, e.g. organizations/acme/clients/billing",
    )?;
    let client_secret = env("TOLLGATE_CLIENT_SECRET", "the client's secret")?;
    let audience = std::env::var("TOLLGATE_AUDIENCE").unwrap_or_else(|_| "billing".to_owned());
    let scopes = std::env::var("TOLLGATE_SCOPE").unwrap_or_default();
    let listen: SocketAddr = std::env::var("LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:0".to_owned())
        .parse()
        .context("LISTEN must be host:port")?;
    let serve = std::env::args().any(|arg| arg == "--serve");

    // The service: tokens from `issuer` meant for `audience`. Fetching the
    // keys now makes a wrong issuer fail here, not on the first call.
    let verifier = Verifier::builder(&issuer, &audience).build()?;
    verifier
        .prefetch()
        .await
        .with_context(|| format!("fetching the signing keys of {issuer}"))?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(verifier.layer())
            .add_service(InterceptedService::new(health, log_caller))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    println!("service: listening on {address}, accepting tokens from {issuer} for {audience}");

    // The caller: a token from Tollgate for `audience`, sent on every call.
    let tokens = ClientCredentials::builder(client_id, client_secret)
        .issuer(&issuer)
        .audience(&audience)
        .scopes(scopes.split_whitespace())
        .build()?;
    let token = tokens.access_token().await.context("getting a token")?;
    println!("caller: got a token (scope {:?})", token.scope());
    let url = format!("http://{address}");
    let client = Client::builder(&url)
        .token_source(Arc::new(tokens))
        .connect()
        .await?;
    let status = client
        .health()
        .check(HealthCheckRequest::default())
        .await?
        .into_inner()
        .status();
    println!("caller: health check with the token: {status:?}");

    // Without a token the layer refuses the call itself.
    let anonymous = Client::builder(&url).connect().await?;
    match anonymous
        .health()
        .check(HealthCheckRequest::default())
        .await
    {
        Err(status) if status.code() == Code::Unauthenticated => {
            println!(
                "caller: without a token: UNAUTHENTICATED ({})",
                status.message()
            );
        }
        other => anyhow::bail!("a call without a token was not refused: {other:?}"),
    }

    if serve {
        println!("service: serving until Ctrl-C");
        tokio::select! {
            result = server => result??,
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    Ok(())
}
