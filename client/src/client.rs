//! [`Client`], its [`ClientBuilder`] and the per-call [`Settings`]: turn a
//! URL (or a channel of your own), a credential and a few settings into
//! typed clients that share one [`TollgateChannel`].

use std::{fmt, sync::Arc, time::Duration};

use http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::{
    Credential, Error, TokenSource,
    credential::REDACTED,
    retry::Backoff,
    transport::{CallPolicy, TollgateChannel},
    v1::{
        api_key_service_client::ApiKeyServiceClient,
        authorization_service_client::AuthorizationServiceClient,
        event_service_client::EventServiceClient,
        o_auth_client_service_client::OAuthClientServiceClient,
        organization_service_client::OrganizationServiceClient,
        rate_limit_policy_service_client::RateLimitPolicyServiceClient,
        service_account_service_client::ServiceAccountServiceClient,
        token_service_client::TokenServiceClient, user_service_client::UserServiceClient,
        webhook_service_client::WebhookServiceClient,
    },
};
use tonic_health::pb::health_client::HealthClient;

/// This crate's part of the `user-agent` header; tonic appends its own.
const USER_AGENT: &str = concat!("tollgate-client/", env!("CARGO_PKG_VERSION"));

/// A connection to one Tollgate server, with its credential and call
/// settings. Build one with [`Client::builder`], or wrap a channel you
/// configured yourself with [`Client::from_channel`].
///
/// Cloning is cheap and every clone, and every typed client it hands out,
/// shares the same HTTP/2 connection, so make one per server and pass it
/// around.
#[derive(Clone)]
pub struct Client {
    channel: TollgateChannel,
}

// === impl Client ===

impl Client {
    /// Starts building a client for the server at `url`, e.g.
    /// `http://127.0.0.1:8080` or `https://tollgate.example.com` (with the
    /// `tls` feature, on by default). Nothing is checked until
    /// [`ClientBuilder::connect`] or [`ClientBuilder::connect_lazy`].
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            connect_timeout: ClientBuilder::DEFAULT_CONNECT_TIMEOUT,
            user_agent: None,
            #[cfg(feature = "tls")]
            ca_certificates: Vec::new(),
            settings: Settings::default(),
        }
    }

    /// Wraps a tonic [`Channel`] you built yourself, for what the builder
    /// does not cover: your own TLS setup (client certificates, other
    /// roots), a Unix socket or custom connector
    /// (`Endpoint::connect_with_connector`), `Channel::balance_list`, or
    /// endpoint settings such as keep-alives. The credential, the deadline
    /// and the retries of `settings` still apply to every call on top of
    /// it; connecting, TLS and the `user-agent` are the channel's business.
    ///
    /// Fails only if the credential in `settings` cannot be sent in a
    /// header.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tollgate_client::{Client, Settings, tonic::transport::Endpoint};
    ///
    /// let channel = Endpoint::from_static("http://127.0.0.1:8080")
    ///     .http2_keep_alive_interval(Duration::from_secs(30))
    ///     .connect()
    ///     .await?;
    /// let client = Client::from_channel(channel, Settings::new().api_key("tg_..."))?;
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_channel(channel: Channel, settings: Settings) -> Result<Self, Error> {
        let (credential, policy) = settings.into_parts()?;
        Ok(Self::new(channel, credential, policy))
    }

    fn new(channel: Channel, credential: Option<Credential>, policy: CallPolicy) -> Self {
        Self {
            channel: TollgateChannel::new(channel, credential, policy),
        }
    }

    /// The shared channel, to build typed clients this crate has no
    /// accessor for (for example ones generated from your own protos served
    /// by the same endpoint). Their calls get the credential and deadline;
    /// retries apply only to the methods this crate knows to be safe.
    pub fn channel(&self) -> TollgateChannel {
        self.channel.clone()
    }

    /// `tollgate.v1.OrganizationService`.
    pub fn organizations(&self) -> OrganizationServiceClient<TollgateChannel> {
        OrganizationServiceClient::new(self.channel())
    }

    /// `tollgate.v1.UserService`.
    pub fn users(&self) -> UserServiceClient<TollgateChannel> {
        UserServiceClient::new(self.channel())
    }

    /// `tollgate.v1.ServiceAccountService`.
    pub fn service_accounts(&self) -> ServiceAccountServiceClient<TollgateChannel> {
        ServiceAccountServiceClient::new(self.channel())
    }

    /// `tollgate.v1.ApiKeyService`.
    pub fn api_keys(&self) -> ApiKeyServiceClient<TollgateChannel> {
        ApiKeyServiceClient::new(self.channel())
    }

    /// `tollgate.v1.OAuthClientService`.
    pub fn oauth_clients(&self) -> OAuthClientServiceClient<TollgateChannel> {
        OAuthClientServiceClient::new(self.channel())
    }

    /// `tollgate.v1.RateLimitPolicyService`: the organization's rate
    /// limits and quotas, as data.
    pub fn rate_limit_policies(&self) -> RateLimitPolicyServiceClient<TollgateChannel> {
        RateLimitPolicyServiceClient::new(self.channel())
    }

    /// `tollgate.v1.EventService`: the audit log.
    pub fn events(&self) -> EventServiceClient<TollgateChannel> {
        EventServiceClient::new(self.channel())
    }

    /// `tollgate.v1.WebhookService`: the organization's webhooks and
    /// their deliveries.
    pub fn webhooks(&self) -> WebhookServiceClient<TollgateChannel> {
        WebhookServiceClient::new(self.channel())
    }

    /// `tollgate.v1.TokenService`: the OAuth token endpoints over gRPC.
    pub fn tokens(&self) -> TokenServiceClient<TollgateChannel> {
        TokenServiceClient::new(self.channel())
    }

    /// `tollgate.v1.AuthorizationService`: ask whether a principal may do
    /// something.
    pub fn authorization(&self) -> AuthorizationServiceClient<TollgateChannel> {
        AuthorizationServiceClient::new(self.channel())
    }

    /// `grpc.health.v1.Health`: `check` with an empty service name asks
    /// about the server as a whole. `Check` is retried like a read.
    pub fn health(&self) -> HealthClient<TollgateChannel> {
        HealthClient::new(self.channel())
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("channel", &self.channel)
            .finish()
    }
}

/// What every call gets on top of the channel: the credential, the
/// deadline and the retry policy. [`ClientBuilder`] has the same methods;
/// build a `Settings` yourself only for [`Client::from_channel`].
#[derive(Clone)]
pub struct Settings {
    credential: Option<CredentialSetting>,
    timeout: Duration,
    max_retries: u32,
    backoff_initial: Duration,
    backoff_max: Duration,
}

/// A credential as given, checked when the client is built so that a
/// builder never fails half-way through a chain.
#[derive(Clone)]
enum CredentialSetting {
    Token(String),
    Source(Arc<dyn TokenSource>),
}

// === impl Settings ===

impl Settings {
    /// Default bound on one call, retries included.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default number of retries of an idempotent read (so up to 4 attempts).
    pub const DEFAULT_MAX_RETRIES: u32 = 3;
    /// Default longest wait before the first retry.
    pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(50);
    /// Default cap on the wait before any retry.
    pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(2);

    /// No credential, and every other setting at its default.
    pub fn new() -> Self {
        Self {
            credential: None,
            timeout: Self::DEFAULT_TIMEOUT,
            max_retries: Self::DEFAULT_MAX_RETRIES,
            backoff_initial: Self::DEFAULT_BACKOFF_INITIAL,
            backoff_max: Self::DEFAULT_BACKOFF_MAX,
        }
    }

    /// Authenticates every call with a Tollgate API key (`tg_…`), sent as
    /// `authorization: Bearer <key>`. Replaces any earlier credential.
    pub fn api_key(self, key: impl Into<String>) -> Self {
        self.bearer_token(key)
    }

    /// Authenticates every call with any fixed bearer token (an API key, or
    /// an access token from the token endpoint), sent as
    /// `authorization: Bearer <token>`. Replaces any earlier credential.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.credential = Some(CredentialSetting::Token(token.into()));
        self
    }

    /// Authenticates every call with a token that `source` hands out,
    /// asked before every attempt, for tokens that change while the client
    /// lives (OAuth access tokens). Replaces any earlier credential.
    pub fn token_source(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.credential = Some(CredentialSetting::Source(source));
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

    /// How many times a call that failed with UNAVAILABLE or a transport
    /// error is sent again, for the methods the protos declare free of side
    /// effects; 0 turns retries off. Default 3.
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

    /// Checks the credential and splits the settings into what the
    /// transport keeps.
    fn into_parts(self) -> Result<(Option<Credential>, CallPolicy), Error> {
        let credential = match self.credential {
            None => None,
            Some(CredentialSetting::Token(token)) => Some(Credential::bearer(&token)?),
            Some(CredentialSetting::Source(source)) => Some(Credential::Source(source)),
        };
        let policy = CallPolicy {
            timeout: self.timeout,
            max_retries: self.max_retries,
            backoff: Backoff::new(self.backoff_initial, self.backoff_max),
        };
        Ok((credential, policy))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credential = self.credential.as_ref().map(|credential| match credential {
            CredentialSetting::Token(_) => REDACTED,
            CredentialSetting::Source(_) => "<token source>",
        });
        f.debug_struct("Settings")
            .field("credential", &credential)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
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
    connect_timeout: Duration,
    user_agent: Option<String>,
    /// PEM certificates to trust instead of the built-in public roots.
    #[cfg(feature = "tls")]
    ca_certificates: Vec<Vec<u8>>,
    settings: Settings,
}

// === impl ClientBuilder ===

impl ClientBuilder {
    /// Default bound on opening the TCP connection.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    /// Authenticates every call with a Tollgate API key (`tg_…`); see
    /// [`Settings::api_key`].
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.settings = self.settings.api_key(key);
        self
    }

    /// Authenticates every call with a fixed bearer token; see
    /// [`Settings::bearer_token`].
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.settings = self.settings.bearer_token(token);
        self
    }

    /// Authenticates every call with tokens from `source`, asked before
    /// every attempt; see [`Settings::token_source`].
    pub fn token_source(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.settings = self.settings.token_source(source);
        self
    }

    /// Bounds each call, retries included; see [`Settings::timeout`].
    /// Default 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings = self.settings.timeout(timeout);
        self
    }

    /// Bounds opening a connection (TCP connect and HTTP/2 handshake).
    /// Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many times a failed read is sent again; see
    /// [`Settings::max_retries`]. Default 3.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.settings = self.settings.max_retries(retries);
        self
    }

    /// The backoff between retries; see [`Settings::retry_backoff`].
    /// Default 50 ms and 2 s.
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.settings = self.settings.retry_backoff(initial, max);
        self
    }

    /// Names your application in the `user-agent` header, before
    /// `tollgate-client/x.y.z tonic/x.y.z`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// Trusts the CA certificate in `pem` for an `https://` URL, in place of
    /// the built-in public (Mozilla) roots; call it again to trust several.
    /// For a private CA or a self-signed server certificate. The server's
    /// certificate must name the URL's host.
    #[cfg(feature = "tls")]
    pub fn ca_certificate(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.ca_certificates.push(pem.as_ref().to_vec());
        self
    }

    /// Checks the settings and connects now, so a wrong address or a server
    /// that is down fails here rather than on the first call.
    pub async fn connect(self) -> Result<Client, Error> {
        let (endpoint, credential, policy) = self.prepare()?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| Error::Transport {
                url: self.url.clone(),
                source,
            })?;
        Ok(Client::new(channel, credential, policy))
    }

    /// Checks the settings but connects only on the first call (and
    /// reconnects whenever needed), so the client can be made before the
    /// server is up. Must be called inside a Tokio runtime.
    pub fn connect_lazy(self) -> Result<Client, Error> {
        let (endpoint, credential, policy) = self.prepare()?;
        // The channel spawns its worker task right away; without a runtime
        // tonic would panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        Ok(Client::new(endpoint.connect_lazy(), credential, policy))
    }

    /// Validates everything that can be validated without a network.
    fn prepare(&self) -> Result<(Endpoint, Option<Credential>, CallPolicy), Error> {
        let invalid_url = |reason: &str| Error::InvalidUrl {
            url: self.url.clone(),
            reason: reason.to_owned(),
        };
        let uri: Uri = self
            .url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid_url(&e.to_string()))?;
        let https = uses_tls(uri.scheme_str(), cfg!(feature = "tls")).map_err(invalid_url)?;
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
        let endpoint = self.tls(endpoint, https)?;
        let (credential, policy) = self.settings.clone().into_parts()?;
        Ok((endpoint, credential, policy))
    }

    /// Sets up TLS for an `https://` URL. The name checked against the
    /// server's certificate is the URL's host, which tonic takes from the
    /// endpoint's URI.
    #[cfg(feature = "tls")]
    fn tls(&self, endpoint: Endpoint, https: bool) -> Result<Endpoint, Error> {
        use tonic::transport::{Certificate, ClientTlsConfig};

        if !https {
            if !self.ca_certificates.is_empty() {
                // Otherwise a typo in the scheme would quietly send the
                // credential in clear text to a server meant to be private.
                return Err(Error::InvalidUrl {
                    url: self.url.clone(),
                    reason: "a CA certificate was given for an http:// URL; use https://"
                        .to_owned(),
                });
            }
            return Ok(endpoint);
        }
        let invalid_tls = |reason: String| Error::InvalidTls {
            url: self.url.clone(),
            reason,
        };
        // rustls skips whatever is not a PEM certificate, so a wrong file
        // (a key, a DER file) would leave nothing trusted and fail every
        // handshake with a vague error; say so here instead.
        const PEM_CERTIFICATE: &[u8] = b"-----BEGIN CERTIFICATE-----";
        if self.ca_certificates.iter().any(|pem| {
            !pem.windows(PEM_CERTIFICATE.len())
                .any(|w| w == PEM_CERTIFICATE)
        }) {
            return Err(invalid_tls(
                "a CA certificate holds no PEM `BEGIN CERTIFICATE` block".to_owned(),
            ));
        }
        let config = if self.ca_certificates.is_empty() {
            ClientTlsConfig::new().with_webpki_roots()
        } else {
            ClientTlsConfig::new()
                .ca_certificates(self.ca_certificates.iter().map(Certificate::from_pem))
        };
        endpoint
            .tls_config(config)
            .map_err(|error| invalid_tls(error_chain(&error)))
    }

    /// Without the `tls` feature `uses_tls` has refused `https://` already.
    #[cfg(not(feature = "tls"))]
    fn tls(&self, endpoint: Endpoint, _https: bool) -> Result<Endpoint, Error> {
        Ok(endpoint)
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("ClientBuilder");
        debug
            .field("url", &self.url)
            .field("connect_timeout", &self.connect_timeout)
            .field("user_agent", &self.user_agent);
        #[cfg(feature = "tls")]
        debug.field("ca_certificates", &self.ca_certificates.len());
        debug.field("settings", &self.settings).finish()
    }
}

/// `error` and its sources, joined, because tonic's own message for a bad
/// certificate is only "transport error".
#[cfg(feature = "tls")]
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(error) = source {
        message.push_str(": ");
        message.push_str(&error.to_string());
        source = error.source();
    }
    message
}

/// Whether a URL with `scheme` needs TLS, or why it cannot be used by a
/// build with (`tls_built_in`) or without the `tls` feature. A plain
/// function of the flag, so both answers are tested in every build.
pub(crate) fn uses_tls(scheme: Option<&str>, tls_built_in: bool) -> Result<bool, &'static str> {
    match scheme {
        Some("http") => Ok(false),
        Some("https") if tls_built_in => Ok(true),
        Some("https") => Err(
            "https:// needs TLS, which this build of tollgate-client leaves out: enable its \
             `tls` feature (on by default, off with `default-features = false`), or pass a \
             channel of your own to Client::from_channel",
        ),
        Some(_) => Err("the scheme must be http or https"),
        None => Err("expected http://host:port or https://host"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "tg_s3cr3t_do_not_log";

    #[test]
    fn debug_never_shows_the_credential() {
        let builder = Client::builder("http://127.0.0.1:1").api_key(SECRET);
        let debug = format!("{builder:?} {:?}", Settings::new().bearer_token(SECRET));
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

    #[tokio::test]
    async fn from_channel_checks_the_credential_too() {
        let channel = Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let error = Client::from_channel(channel, Settings::new().api_key("tg_key\n")).err();
        assert!(
            matches!(error, Some(Error::InvalidCredential { .. })),
            "{error:?}"
        );
    }

    #[test]
    fn invalid_urls_are_rejected() {
        for bad in [
            "",
            "127.0.0.1:8080",
            "not a url",
            "ftp://127.0.0.1:8080",
            "http://",
            "https://",
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
    fn https_needs_the_tls_feature() {
        assert_eq!(uses_tls(Some("http"), false), Ok(false));
        assert_eq!(uses_tls(Some("http"), true), Ok(false));
        assert_eq!(uses_tls(Some("https"), true), Ok(true));
        let refused = uses_tls(Some("https"), false).unwrap_err();
        assert!(refused.contains("`tls` feature"), "{refused}");

        // And this build answers as its feature says.
        let built = Client::builder("https://tollgate.example").prepare();
        if cfg!(feature = "tls") {
            assert!(built.is_ok(), "{:?}", built.err());
        } else {
            let error = built.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains("`tls` feature"), "{error}");
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn a_ca_certificate_needs_https() {
        let error = Client::builder("http://127.0.0.1:8080")
            .ca_certificate("-----BEGIN CERTIFICATE-----")
            .prepare()
            .err();
        assert!(matches!(error, Some(Error::InvalidUrl { .. })), "{error:?}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn a_ca_certificate_that_is_not_pem_is_rejected() {
        for bad in [
            "not a certificate",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        ] {
            let error = Client::builder("https://127.0.0.1:8443")
                .ca_certificate(bad)
                .prepare()
                .err();
            assert!(
                matches!(error, Some(Error::InvalidTls { .. })),
                "{bad:?}: {error:?}"
            );
        }
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
        assert_eq!(builder.connect_timeout, Duration::from_secs(5));
        let settings = builder.settings;
        assert_eq!(settings.timeout, Duration::from_secs(10));
        assert_eq!(settings.max_retries, 3);
        assert_eq!(settings.backoff_initial, Duration::from_millis(50));
        assert_eq!(settings.backoff_max, Duration::from_secs(2));
    }
}
