//! [`HttpClient`]: the small HTTP/1.1 client behind the OAuth parts of this
//! crate (the token endpoint, discovery and JWKS).
//!
//! These requests are rare (a token once per lifetime, a key set every few
//! minutes) and small, so each one opens its own connection on hyper's
//! connection API instead of keeping a pool: nothing to go stale between
//! refreshes, and no dependency beyond the hyper that tonic already brings.
//! `https://` goes through rustls with the ring provider and the Mozilla
//! roots, exactly as the gRPC channel does, and needs the `tls` feature.

#[cfg(feature = "tls")]
use std::sync::Arc;
use std::{fmt, time::Duration};

use bytes::Bytes;
use http::{Request, Response, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The largest response body read (a token response or a key set is a few
/// kilobytes); anything longer is refused rather than buffered.
const MAX_BODY: usize = 1024 * 1024;

/// This crate's `user-agent` on OAuth requests.
const USER_AGENT: &str = concat!("tollgate-client/", env!("CARGO_PKG_VERSION"));

/// An HTTP client for the token endpoint, discovery and JWKS, shared by
/// [`ClientCredentials`](crate::ClientCredentials) and
/// [`VerifyLayer`](crate::VerifyLayer). Cloning is cheap.
///
/// `http://` always works; `https://` needs the `tls` feature (on by
/// default) and then trusts the Mozilla roots, or only the CAs given to
/// [`HttpClient::ca_certificate`].
#[derive(Clone)]
pub struct HttpClient {
    timeout: Duration,
    #[cfg(feature = "tls")]
    tls: Result<Arc<rustls::ClientConfig>, String>,
}

/// Why an OAuth HTTP request failed before an HTTP status came back.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The URL cannot be used (no host, a scheme other than http or https,
    /// or https in a build without the `tls` feature).
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS settings cannot be used (a CA certificate that is not PEM).
    #[error("invalid TLS settings: {0}")]
    InvalidTls(String),
    /// Connecting, the TLS handshake, or the exchange failed. Worth a retry.
    #[error("{url}: {reason}")]
    Transport {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// No complete response within the client's timeout. Worth a retry.
    #[error("{url}: no response within {timeout:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
}

impl HttpError {
    /// Whether sending the request again may succeed (a network problem,
    /// not a configuration one).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transport { .. } | Self::Timeout { .. })
    }
}

// === impl HttpClient ===

impl HttpClient {
    /// Default bound on one request: connect, handshake, response and body.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// A client with the default timeout, trusting the public roots.
    pub fn new() -> Self {
        Self {
            timeout: Self::DEFAULT_TIMEOUT,
            #[cfg(feature = "tls")]
            tls: tls_config(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            }),
        }
    }

    /// Bounds each request, from connecting until the whole body is read.
    /// Default 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Trusts only the CA certificates in `pem` (one or more PEM
    /// `CERTIFICATE` blocks) for `https://`, instead of the public roots:
    /// for an issuer behind a private CA.
    #[cfg(feature = "tls")]
    pub fn ca_certificate(mut self, pem: impl AsRef<[u8]>) -> Result<Self, HttpError> {
        use rustls::pki_types::{CertificateDer, pem::PemObject as _};

        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_ref()) {
            let cert = cert.map_err(|e| HttpError::InvalidTls(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| HttpError::InvalidTls(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(HttpError::InvalidTls(
                "the CA certificate holds no PEM `BEGIN CERTIFICATE` block".to_owned(),
            ));
        }
        self.tls = tls_config(roots);
        Ok(self)
    }

    /// Checks that `url` can be requested by this build: absolute, with a
    /// host, `http` or (with the `tls` feature) `https`.
    pub(crate) fn check_url(url: &str) -> Result<Uri, HttpError> {
        let invalid = |reason: &str| HttpError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        crate::client::uses_tls(uri.scheme_str(), cfg!(feature = "tls")).map_err(invalid)?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("the URL has no host"));
        }
        Ok(uri)
    }

    /// Sends `request` and reads the whole response body, within the
    /// timeout. Redirects are not followed: a token endpoint that redirects
    /// would receive the credentials a second time somewhere else.
    pub(crate) async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Bytes>, HttpError> {
        let url = request.uri().to_string();
        match tokio::time::timeout(self.timeout, self.send_inner(request)).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout {
                url,
                timeout: self.timeout,
            }),
        }
    }

    /// A GET for `url` accepting JSON.
    pub(crate) async fn get_json(&self, url: &str) -> Result<Response<Bytes>, HttpError> {
        let request = Request::get(Self::check_url(url)?)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| HttpError::InvalidUrl {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        self.send(request).await
    }

    async fn send_inner(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Bytes>, HttpError> {
        let url = request.uri().to_string();
        let transport = |reason: String| HttpError::Transport {
            url: url.clone(),
            reason,
        };
        let uri = request.uri().clone();
        let https =
            crate::client::uses_tls(uri.scheme_str(), cfg!(feature = "tls")).map_err(|reason| {
                HttpError::InvalidUrl {
                    url: url.clone(),
                    reason: reason.to_owned(),
                }
            })?;
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        // `Uri::host` keeps the brackets of an IPv6 literal; connect wants
        // them off.
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');

        let tcp = TcpStream::connect((bare_host, port))
            .await
            .map_err(|e| transport(format!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);

        // HTTP/1.1 sends the origin form (path and query) and a Host header.
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()
            .map_err(|e| transport(e.to_string()))?;
        *request.uri_mut() = path;
        let headers = request.headers_mut();
        headers.insert(
            header::HOST,
            authority
                .parse()
                .map_err(|_| transport("the host cannot be sent in a header".to_owned()))?,
        );
        headers.insert(
            header::USER_AGENT,
            header::HeaderValue::from_static(USER_AGENT),
        );

        let response = if https {
            self.send_tls(tcp, bare_host, request).await
        } else {
            send_on(TokioIo::new(tcp), request).await
        }
        .map_err(transport)?;

        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| transport(format!("reading the response: {e}")))?
            .to_bytes();
        Ok(Response::from_parts(parts, body))
    }

    #[cfg(feature = "tls")]
    async fn send_tls(
        &self,
        tcp: TcpStream,
        host: &str,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<hyper::body::Incoming>, String> {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("invalid TLS server name: {e}"))?;
        let config = self
            .tls
            .clone()
            .map_err(|e| format!("TLS is unavailable: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        send_on(TokioIo::new(stream), request).await
    }

    /// Unreachable: `uses_tls` refuses `https` without the feature.
    #[cfg(not(feature = "tls"))]
    async fn send_tls(
        &self,
        _tcp: TcpStream,
        _host: &str,
        _request: Request<Full<Bytes>>,
    ) -> Result<Response<hyper::body::Incoming>, String> {
        Err("https needs the `tls` feature".to_owned())
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// rustls with ring, as the gRPC channel uses, trusting `roots`. Fails
/// only if ring lacked every safe protocol version, which it does not; the
/// error is then reported by the first `https://` request.
#[cfg(feature = "tls")]
fn tls_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One HTTP/1.1 exchange on an open connection.
async fn send_on<T>(
    io: T,
    request: Request<Full<Bytes>>,
) -> Result<Response<hyper::body::Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    // The connection is driven until the response body is read, then ends
    // with the sender.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))
}

#[cfg(test)]
#[cfg(feature = "tls")]
mod tests {
    use super::*;

    /// An HTTPS server with a self-signed certificate for `localhost`,
    /// answering every request with `hello`. Returns its port and the
    /// certificate's PEM.
    async fn https_server() -> (u16, String) {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(|_request| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"hello"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        (port, certified.cert.pem())
    }

    #[tokio::test]
    async fn https_goes_through_rustls_and_checks_the_certificate() {
        let (port, ca) = https_server().await;
        let url = format!("https://localhost:{port}/jwks");

        let trusting = HttpClient::new().ca_certificate(&ca).unwrap();
        let response = trusting.get_json(&url).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(response.body().as_ref(), b"hello");

        // The public roots do not vouch for a self-signed certificate.
        let error = HttpClient::new().get_json(&url).await.unwrap_err();
        assert!(
            matches!(&error, HttpError::Transport { reason, .. } if reason.contains("TLS")),
            "{error:?}"
        );
    }

    #[test]
    fn a_ca_certificate_must_be_pem() {
        let error = HttpClient::new().ca_certificate("not a certificate").err();
        assert!(matches!(error, Some(HttpError::InvalidTls(_))), "{error:?}");
    }
}
