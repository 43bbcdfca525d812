//! Credentials: what goes into the `authorization` header of every call, and
//! where it comes from. A fixed API key or token is checked once when the
//! client is built; a [`TokenSource`] is asked before every attempt, so a
//! source that refreshes an OAuth access token can hand out a new one
//! without rebuilding the client.

use std::{fmt, sync::Arc};

use http::HeaderValue;
use tonic::Status;

use crate::{BoxError, Error};

/// What `Debug` prints in place of a secret.
pub(crate) const REDACTED: &str = "<redacted>";

/// Where the `authorization: Bearer …` header of each call comes from.
///
/// The builder methods [`api_key`](crate::ClientBuilder::api_key),
/// [`bearer_token`](crate::ClientBuilder::bearer_token) and
/// [`token_source`](crate::ClientBuilder::token_source) make one; use the
/// enum directly only to pass a credential around.
#[derive(Clone)]
#[non_exhaustive]
pub enum Credential {
    /// The same header value on every call. Build it with
    /// [`Credential::bearer`], which checks the token and marks the value
    /// sensitive, so HTTP/2 never puts it in its header compression table.
    Static(HeaderValue),
    /// Asked for a token before every attempt (a retry asks again, so an
    /// expired token is not resent).
    Source(Arc<dyn TokenSource>),
}

// === impl Credential ===

impl Credential {
    /// A static `Bearer <token>` credential. The error says what is wrong
    /// with the token without repeating it.
    pub fn bearer(token: &str) -> Result<Self, Error> {
        bearer(token).map(Self::Static)
    }

    /// The header value for one attempt. A token source's failure becomes
    /// the call's status: a [`Status`] it returns is passed on as is (so it
    /// can choose, say, UNAVAILABLE for an identity provider that is down),
    /// any other error becomes UNAUTHENTICATED.
    pub(crate) async fn header(&self) -> Result<HeaderValue, Status> {
        match self {
            Self::Static(value) => Ok(value.clone()),
            Self::Source(source) => {
                let token =
                    source
                        .token()
                        .await
                        .map_err(|error| match error.downcast::<Status>() {
                            Ok(status) => *status,
                            Err(error) => {
                                Status::unauthenticated(format!("the token source failed: {error}"))
                            }
                        })?;
                // A bad token from the source is the source's bug; say what
                // is wrong, never what the token was.
                bearer(token.secret()).map_err(|error| {
                    Status::unauthenticated(format!("the token source returned an {error}"))
                })
            }
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static(_) => f.debug_tuple("Static").field(&REDACTED).finish(),
            // The source may hold secrets of its own (a refresh token, a
            // client secret), and need not implement `Debug` at all.
            Self::Source(_) => f.debug_tuple("Source").field(&"<token source>").finish(),
        }
    }
}

/// A provider of bearer tokens, asked before every attempt of every call
/// that does not carry its own `authorization` header.
///
/// Implement it for credentials that change while the client lives, such as
/// an OAuth access token that a background task refreshes. The client does
/// not cache: an implementation that calls a token endpoint should keep the
/// token until shortly before it expires, because `token` is on the path of
/// every call.
///
/// ```
/// use std::sync::{Arc, RwLock};
/// use tollgate_client::{BoxError, Client, Token, TokenSource, tonic};
///
/// /// Hands out whatever token a refresher task last stored.
/// struct Refreshed(Arc<RwLock<String>>);
///
/// #[tonic::async_trait]
/// impl TokenSource for Refreshed {
///     async fn token(&self) -> Result<Token, BoxError> {
///         let token = self.0.read().map_err(|_| "token lock poisoned")?;
///         Ok(Token::new(token.as_str()))
///     }
/// }
///
/// let current = Arc::new(RwLock::new("eyJhbGciOi...".to_owned()));
/// let builder = Client::builder("http://127.0.0.1:8080")
///     .token_source(Arc::new(Refreshed(current)));
/// # let _ = builder;
/// ```
#[tonic::async_trait]
pub trait TokenSource: Send + Sync + 'static {
    /// The token to send as `authorization: Bearer <token>`. An error fails
    /// the call without sending it: a [`Status`] as is, anything else as
    /// UNAUTHENTICATED with the error's message (so keep secrets out of it).
    async fn token(&self) -> Result<Token, BoxError>;
}

/// A bearer token handed out by a [`TokenSource`]. `Debug` redacts it, so
/// logging a value that holds one does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

// === impl Token ===

impl Token {
    /// Wraps a token (an API key, a JWT, an opaque access token).
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for whoever must send it.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl From<String> for Token {
    fn from(token: String) -> Self {
        Self(token)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Token").field(&REDACTED).finish()
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

    struct Fixed(&'static str);

    #[tonic::async_trait]
    impl TokenSource for Fixed {
        async fn token(&self) -> Result<Token, BoxError> {
            Ok(Token::new(self.0))
        }
    }

    struct Failing(Option<Status>);

    #[tonic::async_trait]
    impl TokenSource for Failing {
        async fn token(&self) -> Result<Token, BoxError> {
            Err(match &self.0 {
                Some(status) => status.clone().into(),
                None => "identity provider said no".into(),
            })
        }
    }

    #[test]
    fn bearer_header_is_sensitive() {
        let value = bearer(SECRET).unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value, format!("Bearer {SECRET}").as_str());
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let credentials = [
            Credential::bearer(SECRET).unwrap(),
            Credential::Source(Arc::new(Fixed(SECRET))),
        ];
        let debug = format!("{credentials:?} {:?}", Token::new(SECRET));
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(debug.contains(REDACTED), "{debug}");
    }

    #[tokio::test]
    async fn a_source_is_asked_for_a_sensitive_header() {
        let credential = Credential::Source(Arc::new(Fixed(SECRET)));
        let value = credential.header().await.unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value, format!("Bearer {SECRET}").as_str());
    }

    #[tokio::test]
    async fn a_failing_source_fails_the_call() {
        let status = Credential::Source(Arc::new(Failing(None)))
            .header()
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().contains("identity provider said no"));

        // A status of the source's own choosing is kept.
        let status = Credential::Source(Arc::new(Failing(Some(Status::unavailable("idp down")))))
            .header()
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "idp down");
    }

    #[tokio::test]
    async fn a_bad_token_from_a_source_is_not_echoed() {
        let status = Credential::Source(Arc::new(Fixed("tg_s3cr3t\nx-evil: 1")))
            .header()
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(!status.message().contains("s3cr3t"), "{status:?}");
    }
}
