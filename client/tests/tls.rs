//! `https://` end to end: the scripted server of `support` behind TLS, with
//! a self-signed certificate made for each test, so nothing depends on
//! files or on the machine's certificate store.
//!
//! Needs the `tls` feature, which is on by default, so `cargo test
//! --workspace` runs these.
#![cfg(feature = "tls")]

mod support;

use std::time::Duration;

use support::{KEY, Script, get, serve_tls};
use tollgate_client::{
    Client, Error,
    health::{HealthCheckRequest, ServingStatus},
    tonic::Code,
};

/// A self-signed certificate for `names` and its key, both PEM.
fn self_signed(names: &[&str]) -> anyhow::Result<(String, String)> {
    let names: Vec<String> = names.iter().map(|&name| name.to_owned()).collect();
    let certified = rcgen::generate_simple_self_signed(names)?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

#[tokio::test]
async fn https_with_a_custom_ca_carries_credential_and_retries() -> anyhow::Result<()> {
    let (cert, key) = self_signed(&["localhost"])?;
    let server = serve_tls(
        Script {
            fail_first: 1,
            expect_authorization: Some(format!("Bearer {KEY}")),
            ..Script::default()
        },
        "localhost",
        &cert,
        &key,
    )
    .await?;
    assert!(
        server.url.starts_with("https://localhost:"),
        "{}",
        server.url
    );

    let client = Client::builder(&server.url)
        .ca_certificate(&cert)
        .api_key(KEY)
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .connect()
        .await?;

    let org = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await?
        .into_inner();
    assert_eq!(org.name, "organizations/acme");
    // The scripted UNAVAILABLE was retried over the TLS connection.
    assert_eq!(server.attempts(), 2);

    let health = client
        .health()
        .check(HealthCheckRequest::default())
        .await?
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
    Ok(())
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() -> anyhow::Result<()> {
    let (cert, key) = self_signed(&["localhost"])?;
    let server = serve_tls(Script::default(), "localhost", &cert, &key).await?;

    // Only the public roots are trusted, and they did not sign this one.
    let error = Client::builder(&server.url)
        .api_key(KEY)
        .connect()
        .await
        .expect_err("a self-signed certificate is not trusted by default");
    assert!(matches!(error, Error::Transport { .. }), "{error:?}");

    // Trusting another CA does not help either.
    let (other, _) = self_signed(&["localhost"])?;
    let client = Client::builder(&server.url)
        .ca_certificate(other)
        .connect_lazy()?;
    let status = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await
        .expect_err("signed by a CA we do not trust");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(server.attempts(), 0);
    Ok(())
}

#[tokio::test]
async fn the_certificate_must_name_the_url_host() -> anyhow::Result<()> {
    // Trusted, but issued for another name than the URL's host.
    let (cert, key) = self_signed(&["tollgate.internal"])?;
    let server = serve_tls(Script::default(), "localhost", &cert, &key).await?;
    let error = Client::builder(&server.url)
        .ca_certificate(&cert)
        .connect()
        .await
        .expect_err("the certificate is for tollgate.internal");
    assert!(matches!(error, Error::Transport { .. }), "{error:?}");

    // The same server reached by an IP address the certificate names.
    let (cert, key) = self_signed(&["127.0.0.1"])?;
    let server = serve_tls(Script::default(), "127.0.0.1", &cert, &key).await?;
    let client = Client::builder(&server.url)
        .ca_certificate(&cert)
        .connect()
        .await?;
    client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await?;
    assert_eq!(server.attempts(), 1);
    Ok(())
}
