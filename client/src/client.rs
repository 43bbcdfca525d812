//! [`Client`] and its [`ClientBuilder`]: turn a URL, a credential and a few
//! settings into typed clients that share one [`Transport`].

use std::{fmt, time::Duration};

use http::{HeaderValue, Uri};
use tonic::transport::{Channel, Endpoint};

use crate::{
    Error,
    retry::Backoff,
    transport::{CallPolicy, TollgateChannel},
    v1::{
        api_key_service_client::ApiKeyServiceClient,
        organization_service_client::OrganizationServiceClient,
        service_account_service_client::ServiceAccountServiceClient,
        user_service_client::UserServiceClient,
    },
};
use tonic_health::pb::health_client::HealthClient;

/// What `Debug` prints in place of a secret.
pub(crate) const REDACTED: &str = "<redacted>";

/// This crate's part of the `user-agent` header; tonic appends its own.
const USER_AGENT: &str = concat!("tollgate-client/", env!("CARGO_PKG_VERSION"));

/// The transport under every typed client a [`Client`] hands out. Name it
/// when you store a typed client: `OrganizationServiceClient<Transport>`.
pub type Transport = TollgateChannel;

/// A connection to one Tollgate server, with its credential and call
/// settings. Build one with [`Client::builder`].
///
/// Cloning is cheap and every clone, and every typed client it hands out,
/// shares the same HTTP/2 connection, so make one per server and pass it
/// around.
#[derive(Clone)]
pub struct Client {
    transport: Transport,
}

// === impl Client ===

impl Client {
    /// Starts building a client for the server at `url`, e.g.
    /// `http://127.0.0.1:8080`. Nothing is checked until
    /// [`ClientBuilder::connect`] or [`ClientBuilder::connect_lazy`].
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    /// The same as [`Client::builder`]; it reads well in a chain such as
    /// `Client::connect(url).api_key(key).connect().await?`.
    pub fn connect(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    /// The shared transport, to build typed clients this crate has no
    /// accessor for (for example ones generated from your own protos served
    /// by the same endpoint).
    pub fn transport(&self) -> Transport {
        self.transport.clone()
    }

    /// `tollgate.v1.OrganizationService`.
    pub fn organizations(&self) -> OrganizationServiceClient<Transport> {
        OrganizationServiceClient::new(self.transport())
    }

    /// `tollgate.v1.UserService`.
    pub fn users(&self) -> UserServiceClient<Transport> {
        UserServiceClient::new(self.transport())
    }

    /// `tollgate.v1.ServiceAccountService`.
    pub fn service_accounts(&self) -> ServiceAccountServiceClient<Transport> {
        ServiceAccountServiceClient::new(self.transport())
    }

    /// `tollgate.v1.ApiKeyService`.
    pub fn api_keys(&self) -> ApiKeyServiceClient<Transport> {
        ApiKeyServiceClient::new(self.transport())
    }

    /// `grpc.health.v1.Health`: `check` with an empty service name asks
    /// about the server as a whole. `Check` is retried like a read.
    pub fn health(&self) -> HealthClient<Transport> {
        HealthClient::new(self.transport())
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("transport", &self.transport)
            .finish()
    }
}

/// Settings for a [`Client`]; every one has a default except the URL.
///
/// ```no_run
/// # async fn run() -> Result<(), tollgate_client::Error> {
/// use std::time::Duration;
/// use tollgate_client::Client;
///
/// let client = Client::builder("http://127.0.0.1:8080")
///     .api_key("tg_...")
///     .timeout(Duration::from_secs(3))
///     .connect()
///     .await?;
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    url: String,
    credential: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
    max_retries: u32,
    backoff_initial: Duration,
    backoff_max: Duration,
    user_agent: Option<String>,
}

// === impl ClientBuilder ===

impl ClientBuilder {
    /// Default bound on one call, retries included.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default bound on opening the TCP connection.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default number of retries of an idempotent read (so up to 4 attempts).
    pub const DEFAULT_MAX_RETRIES: u32 = 3;
    /// Default longest wait before the first retry.
    pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(50);
    /// Default cap on the wait before any retry.
    pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(2);

    /// Same as [`Client::builder`].
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            credential: None,
            timeout: Self::DEFAULT_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            max_retries: Self::DEFAULT_MAX_RETRIES,
            backoff_initial: Self::DEFAULT_BACKOFF_INITIAL,
            backoff_max: Self::DEFAULT_BACKOFF_MAX,
            user_agent: None,
        }
    }

    /// Authenticates every call with a Tollgate API key (`tg_…`), sent as
    /// `authorization: Bearer <key>`. Replaces any earlier credential.
    pub fn api_key(self, key: impl Into<String>) -> Self {
        self.bearer_token(key)
    }

    /// Authenticates every call with any bearer token (an API key, or an
    /// access token from the token endpoint), sent as
    /// `authorization: Bearer <token>`. Replaces any earlier credential.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.credential = Some(token.into());
        self
    }

    /// Bounds each call, from the first attempt until the response head
    /// arrives, retries and backoff included. The server is told the time
    /// left through `grpc-timeout`. A `tonic::Request::set_timeout` shorter
    /// than this wins for that call. Default 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Bounds opening a connection (TCP connect and HTTP/2 handshake).
    /// Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many times an idempotent read that failed with UNAVAILABLE or a
    /// transport error is sent again; 0 turns retries off. Default 3.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// The backoff between retries: before retry `n` (from 0) the client
    /// waits a random time between zero and `min(max, initial * 2^n)`
    /// ("full jitter"). Default 50 ms and 2 s.
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// Names your application in the `user-agent` header, before
    /// `tollgate-client/x.y.z tonic/x.y.z`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// Checks the settings and connects now, so a wrong address or a server
    /// that is down fails here rather than on the first call.
    pub async fn connect(self) -> Result<Client, Error> {
        let (endpoint, transport) = self.prepare()?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| Error::Transport {
                url: self.url.clone(),
                source,
            })?;
        Ok(transport.build(channel))
    }

    /// Checks the settings but connects only on the first call (and
    /// reconnects whenever needed), so the client can be made before the
    /// server is up. Must be called inside a Tokio runtime.
    pub fn connect_lazy(self) -> Result<Client, Error> {
        let (endpoint, transport) = self.prepare()?;
        // The channel spawns its worker task right away; without a runtime
        // tonic would panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        Ok(transport.build(endpoint.connect_lazy()))
    }

    /// Validates everything that can be validated without a network.
    fn prepare(&self) -> Result<(Endpoint, TransportParts), Error> {
        let invalid_url = |reason: &str| Error::InvalidUrl {
            url: self.url.clone(),
            reason: reason.to_owned(),
        };
        let uri: Uri = self
            .url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid_url(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid_url(
                    "https needs TLS, which this build of tollgate-client does not include; \
                     use http:// or terminate TLS in a sidecar",
                ));
            }
            Some(_) => return Err(invalid_url("the scheme must be http")),
            None => return Err(invalid_url("expected http://host:port")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid_url("the URL has no host"));
        }

        let user_agent = match &self.user_agent {
            Some(app) => format!("{app} {USER_AGENT}"),
            None => USER_AGENT.to_owned(),
        };
        let endpoint = Endpoint::from(uri)
            .connect_timeout(self.connect_timeout)
            .user_agent(user_agent)
            .map_err(|_| Error::InvalidUserAgent {
                user_agent: self.user_agent.clone().unwrap_or_default(),
            })?;

        let credential = self.credential.as_deref().map(bearer).transpose()?;
        let policy = CallPolicy {
            timeout: self.timeout,
            max_retries: self.max_retries,
            backoff: Backoff::new(self.backoff_initial, self.backoff_max),
        };
        Ok((endpoint, TransportParts { credential, policy }))
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("credential", &self.credential.as_ref().map(|_| REDACTED))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_retries", &self.max_retries)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

/// What the transport needs besides the channel.
struct TransportParts {
    credential: Option<HeaderValue>,
    policy: CallPolicy,
}

impl TransportParts {
    fn build(self, channel: Channel) -> Client {
        Client {
            transport: TollgateChannel::new(channel, self.credential, self.policy),
        }
    }
}

/// The `authorization` header value for `token`, marked sensitive so that
/// HTTP/2 never puts it in its header compression table and `Debug` hides
/// it. The error says what is wrong without repeating the token.
fn bearer(token: &str) -> Result<HeaderValue, Error> {
    if token.is_empty() {
        return Err(Error::InvalidCredential {
            reason: "the credential is empty",
        });
    }
    if token.trim() != token {
        return Err(Error::InvalidCredential {
            reason: "the credential starts or ends with whitespace",
        });
    }
    let mut value =
        HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| Error::InvalidCredential {
            reason: "the credential holds characters not allowed in an HTTP header",
        })?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "tg_s3cr3t_do_not_log";

    #[test]
    fn debug_never_shows_the_credential() {
        let builder = Client::builder("http://127.0.0.1:1").api_key(SECRET);
        let debug = format!("{builder:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(debug.contains(REDACTED), "{debug}");
    }

    #[tokio::test]
    async fn client_debug_never_shows_the_credential() {
        let client = Client::builder("http://127.0.0.1:1")
            .bearer_token(SECRET)
            .connect_lazy()
            .unwrap();
        let debug = format!("{client:?} {:?}", client.organizations());
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }

    #[test]
    fn bearer_header_is_sensitive() {
        let value = bearer(SECRET).unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value, format!("Bearer {SECRET}").as_str());
    }

    #[test]
    fn invalid_credentials_are_rejected_without_echoing_them() {
        for bad in [
            "",
            "tg_key\n",
            " tg_key",
            "tg_\u{7f}key",
            "tg_key\r\nx-evil: 1",
        ] {
            let error = Client::builder("http://127.0.0.1:1")
                .api_key(bad)
                .prepare()
                .err()
                .unwrap_or_else(|| panic!("{bad:?} was accepted"));
            assert!(
                matches!(error, Error::InvalidCredential { .. }),
                "{bad:?}: {error:?}"
            );
            if !bad.trim().is_empty() {
                assert!(!error.to_string().contains(bad.trim()), "{error}");
            }
        }
    }

    #[test]
    fn invalid_urls_are_rejected() {
        for bad in [
            "",
            "127.0.0.1:8080",
            "not a url",
            "ftp://127.0.0.1:8080",
            "https://tollgate.example",
            "http://",
        ] {
            let error = Client::builder(bad).prepare().err();
            assert!(
                matches!(error, Some(Error::InvalidUrl { .. })),
                "{bad:?}: {error:?}"
            );
        }
        assert!(Client::builder("http://127.0.0.1:8080").prepare().is_ok());
        assert!(Client::builder("http://localhost").prepare().is_ok());
    }

    #[test]
    fn invalid_user_agent_is_rejected() {
        let error = Client::builder("http://127.0.0.1:8080")
            .user_agent("app\n")
            .prepare()
            .err();
        assert!(
            matches!(error, Some(Error::InvalidUserAgent { .. })),
            "{error:?}"
        );
    }

    #[test]
    fn connect_lazy_outside_a_runtime_is_an_error() {
        let error = Client::builder("http://127.0.0.1:8080")
            .connect_lazy()
            .err();
        assert!(matches!(error, Some(Error::NoRuntime)), "{error:?}");
    }

    #[test]
    fn defaults_match_the_documentation() {
        let builder = Client::builder("http://127.0.0.1:8080");
        assert_eq!(builder.timeout, Duration::from_secs(10));
        assert_eq!(builder.connect_timeout, Duration::from_secs(5));
        assert_eq!(builder.max_retries, 3);
        assert_eq!(builder.backoff_initial, Duration::from_millis(50));
        assert_eq!(builder.backoff_max, Duration::from_secs(2));
    }
}
