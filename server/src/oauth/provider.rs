//! The token endpoint's logic, shared by `/oauth2/token` (form-encoded,
//! RFC 6749) and `TokenService.IssueToken` (gRPC): client authentication,
//! the four grants, and minting access, ID and refresh tokens; plus
//! introspection (RFC 7662) and revocation (RFC 7009).
//!
//! OAuth 2.1 rules: no implicit or password grant; PKCE S256 required for
//! public clients and checked for any client that sent a challenge;
//! redirect URIs compared exactly; refresh tokens rotate and a reused one
//! revokes its family.

use std::{net::IpAddr, sync::Arc, time::Duration};

use base64::Engine as _;
use sha2::Digest as _;
use tollgate::tollgate::v1::{IntrospectTokenResponse, RevokedToken};

use super::{
    claims::{ACCESS_TOKEN_TYP, AccessClaims, Actor, Audience, ID_TOKEN_TYP, IdClaims, at_hash},
    error::{ErrorCode, OAuthError},
    keys::{Algorithm, Expect, KeyRing, LEEWAY},
    throttle::Throttle,
};
use crate::{
    domain::{
        Error,
        authz::Principal,
        names::{PrincipalKind, PrincipalName},
        now_micros,
        scope::{Scope, Scopes},
    },
    events::WriteContext,
    layers::authenticate::Credentials,
    store::{
        Store,
        oauth_clients::{ClientAuthError, OAuthClientRow},
        tokens::{self, GrantRefusal, NewCode, NewFamily},
    },
};

/// `grant_type` values.
pub mod grant {
    /// RFC 6749 section 4.1.
    pub const AUTHORIZATION_CODE: &str = "authorization_code";
    /// RFC 6749 section 4.4.
    pub const CLIENT_CREDENTIALS: &str = "client_credentials";
    /// RFC 6749 section 6.
    pub const REFRESH_TOKEN: &str = "refresh_token";
    /// RFC 8693.
    pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
}

/// RFC 8693's token type of access tokens.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A token request, as either surface parsed it.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// `grant_type`.
    pub grant_type: String,
    /// The client, from Basic auth or the body.
    pub client_id: String,
    /// Its secret, when it has one.
    pub client_secret: Option<String>,
    /// Requested scopes, space-separated; `None` when absent.
    pub scope: Option<String>,
    /// Requested audiences (`audience` and RFC 8707 `resource`).
    pub audiences: Vec<String>,
    /// authorization_code: the code.
    pub code: Option<String>,
    /// authorization_code: the redirect URI of the authorization request.
    pub redirect_uri: Option<String>,
    /// authorization_code: the PKCE verifier.
    pub code_verifier: Option<String>,
    /// refresh_token: the token.
    pub refresh_token: Option<String>,
    /// token-exchange: the subject token and its type.
    pub subject_token: Option<String>,
    /// token-exchange: the subject token's type.
    pub subject_token_type: Option<String>,
    /// token-exchange: the wanted token type.
    pub requested_token_type: Option<String>,
    /// The request's id (`x-request-id`), for the events of what the
    /// grant changes (a reused refresh token revokes its family).
    pub request_id: String,
}

/// A successful token response (RFC 6749 section 5.1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenResponse {
    /// The JWT.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: &'static str,
    /// Seconds.
    pub expires_in: i64,
    /// When the grant issues one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// With scope `openid` on user grants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// Granted scopes.
    pub scope: String,
    /// Token exchange only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

/// What the authorize endpoint hands over to have a code issued.
#[derive(Debug, Clone)]
pub struct CodeGrant {
    /// The client (checked by the authorize endpoint).
    pub client: Arc<OAuthClientRow>,
    /// The user who signed in (in the client's organization).
    pub user_id: String,
    /// The exact redirect URI.
    pub redirect_uri: String,
    /// Granted scopes.
    pub scope: Vec<Scope>,
    /// Requested audiences.
    pub audiences: Vec<String>,
    /// OIDC nonce.
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: Option<String>,
    /// When the user signed in (seconds).
    pub auth_time: i64,
}

/// Who asks an introspection, which decides what it may learn: tokens of
/// its own organization (every organization's, for a platform admin).
#[derive(Debug, Clone)]
pub enum Viewer {
    /// A caller with a credential of its own.
    Principal(Arc<Principal>),
    /// A confidential client of this organization.
    Organization(String),
}

/// The OAuth provider: cheap to clone.
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    keys: KeyRing,
    issuer: String,
    credentials: Credentials,
    throttle: Throttle,
}

/// Tollgate's own audience: what `aud` must hold for a call to Tollgate.
/// The issuer URL, so a deployment has one name for itself.
pub fn own_audience(issuer: &str) -> &str {
    issuer
}

fn secs(micros: i64) -> i64 {
    micros.div_euclid(1_000_000)
}

/// 128 random bits, base64url: 22 characters (the token travels in a
/// header on every call, so every byte counts).
fn jti() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

impl Provider {
    /// A provider issuing as `issuer` with `keys`, locking out failed
    /// sign-ins and client authentications with `throttle`.
    pub fn new(
        store: Store,
        keys: KeyRing,
        issuer: String,
        credentials: Credentials,
        throttle: Throttle,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                keys,
                issuer,
                credentials,
                throttle,
            }),
        }
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The signing keys.
    pub fn keys(&self) -> &KeyRing {
        &self.inner.keys
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The brute-force throttle of sign-ins and client authentication.
    pub fn throttle(&self) -> &Throttle {
        &self.inner.throttle
    }

    /// Authenticates a client, throttling failures per client and per
    /// source address: past the limit every attempt is refused with
    /// `slow_down` until the window passes, right secret or not.
    pub async fn authenticate_client(
        &self,
        client_id: &str,
        secret: Option<&str>,
        source: Option<IpAddr>,
    ) -> Result<Arc<OAuthClientRow>, OAuthError> {
        let throttle = &self.inner.throttle;
        let keys = || {
            [
                format!("client:{client_id}"),
                source.map_or_else(String::new, |ip| format!("ip:{ip}")),
            ]
        };
        if !throttle.quiet() && keys().iter().any(|k| !k.is_empty() && throttle.blocked(k)) {
            return Err(OAuthError::new(
                ErrorCode::SlowDown,
                "too many failed client authentications; try again later",
            ));
        }
        match self
            .inner
            .store
            .authenticate_client(client_id, secret)
            .await
        {
            Ok(client) => Ok(client),
            Err(ClientAuthError::InvalidClient) => {
                for k in keys().iter().filter(|k| !k.is_empty()) {
                    throttle.fail(k);
                }
                tracing::warn!(
                    target: "tollgate::security",
                    event = "client_auth_failed",
                    client_id,
                    source = ?source,
                    "client authentication failed"
                );
                Err(OAuthError::invalid_client())
            }
            Err(ClientAuthError::Storage(e)) => Err(e.into()),
        }
    }

    /// Serves a token request.
    pub async fn token(
        &self,
        req: TokenRequest,
        source: Option<IpAddr>,
    ) -> Result<TokenResponse, OAuthError> {
        if req.client_id.is_empty() {
            return Err(OAuthError::new(
                ErrorCode::InvalidClient,
                "client_id is required",
            ));
        }
        let known = [
            grant::AUTHORIZATION_CODE,
            grant::CLIENT_CREDENTIALS,
            grant::REFRESH_TOKEN,
            grant::TOKEN_EXCHANGE,
        ];
        if !known.contains(&req.grant_type.as_str()) {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                if req.grant_type.is_empty() {
                    "grant_type is required".to_owned()
                } else {
                    format!(
                        "grant type '{}' is not supported (no implicit or password grant in OAuth 2.1)",
                        req.grant_type.chars().take(100).collect::<String>()
                    )
                },
            ));
        }
        let client = self
            .authenticate_client(&req.client_id, req.client_secret.as_deref(), source)
            .await?;
        if !client.allows_grant(&req.grant_type) {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                format!("the client may not use the {} grant", req.grant_type),
            ));
        }
        match req.grant_type.as_str() {
            grant::CLIENT_CREDENTIALS => self.client_credentials(&client, &req).await,
            grant::AUTHORIZATION_CODE => self.authorization_code(&client, &req).await,
            grant::REFRESH_TOKEN => self.refresh(&client, &req).await,
            _ => self.exchange(&client, &req).await,
        }
    }

    /// The scopes a request gets: the client's allowed ones when none are
    /// asked for, else each asked one if the client may have it.
    fn grant_scopes(
        &self,
        client: &OAuthClientRow,
        asked: Option<&str>,
        within: Option<&Scopes>,
    ) -> Result<Vec<Scope>, OAuthError> {
        let allowed = Scopes::Only(client.allowed_scopes());
        let scopes = match asked {
            None => match within {
                // A refresh without `scope` keeps what it had.
                Some(Scopes::Only(held)) => held.clone(),
                _ => client.allowed_scopes(),
            },
            Some(s) => {
                Scopes::parse("scope", s).map_err(|v| OAuthError::invalid_scope(v.description))?
            }
        };
        for s in &scopes {
            if !allowed.permits(s) {
                return Err(OAuthError::invalid_scope(format!(
                    "the client may not ask for scope '{s}'"
                )));
            }
            if let Some(within) = within
                && !within.permits(s)
            {
                return Err(OAuthError::invalid_scope(format!(
                    "scope '{s}' was not granted originally"
                )));
            }
        }
        Ok(scopes)
    }

    /// The audiences of a token: Tollgate's own when none are asked, else
    /// each asked one if it is Tollgate's or the client's.
    fn audiences(
        &self,
        client: &OAuthClientRow,
        asked: &[String],
    ) -> Result<Vec<String>, OAuthError> {
        let own = own_audience(&self.inner.issuer);
        if asked.is_empty() {
            return Ok(vec![own.to_owned()]);
        }
        let mut out: Vec<String> = Vec::new();
        for a in asked {
            if a != own && !client.audiences().any(|c| c == a) {
                return Err(OAuthError::new(
                    ErrorCode::InvalidTarget,
                    format!(
                        "the client may not ask for audience '{}'",
                        a.chars().take(200).collect::<String>()
                    ),
                ));
            }
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        Ok(out)
    }

    /// The principal a token is for, when it may act now.
    async fn subject(&self, name: PrincipalName) -> Result<(Arc<Principal>, String), OAuthError> {
        let Some(record) = self.inner.store.principal_record(name.clone()).await? else {
            return Err(OAuthError::invalid_grant(format!("{name} does not exist")));
        };
        match self.inner.credentials.principal(name).await? {
            Ok(p) => Ok((p, record.uid.clone())),
            Err(reason) => Err(OAuthError::invalid_grant(reason)),
        }
    }

    fn algorithm(client: &OAuthClientRow) -> Algorithm {
        Algorithm::parse(client.signing_algorithm()).unwrap_or(Algorithm::EdDSA)
    }

    /// Signs an access token; returns it with its lifetime in seconds.
    #[expect(clippy::too_many_arguments, reason = "every claim has its source")]
    fn mint_access(
        &self,
        client: &OAuthClientRow,
        principal: &Principal,
        uid: String,
        scopes: &[Scope],
        audiences: Vec<String>,
        auth_time: Option<i64>,
        act: Option<Actor>,
    ) -> Result<(String, i64), OAuthError> {
        let now = secs(now_micros());
        let ttl = i64::try_from(client.access_token_ttl().as_secs()).unwrap_or(900);
        let claims = AccessClaims {
            iss: self.inner.issuer.clone(),
            sub: principal.name().to_owned(),
            aud: Audience::from_list(audiences),
            exp: now + ttl,
            iat: now,
            nbf: now,
            jti: jti(),
            client_id: client.name().to_string(),
            scope: Scopes::join(scopes),
            org: principal.org.clone(),
            roles: principal.roles.names().map(str::to_owned).collect(),
            uid,
            auth_time,
            act,
        };
        let token = self
            .inner
            .keys
            .sign(Self::algorithm(client), ACCESS_TOKEN_TYP, &claims)?;
        Ok((token, ttl))
    }

    /// Signs an ID token for `user` of `client`.
    async fn mint_id(
        &self,
        client: &OAuthClientRow,
        user: &PrincipalName,
        scopes: &[Scope],
        access_token: &str,
        auth_time: i64,
        nonce: Option<String>,
    ) -> Result<String, OAuthError> {
        let now = secs(now_micros());
        let ttl = i64::try_from(client.access_token_ttl().as_secs()).unwrap_or(900);
        let alg = Self::algorithm(client);
        let wants = |s: &str| {
            scopes
                .iter()
                .any(|x| matches!(x, Scope::Oidc(o) if *o == s))
        };
        let (name, email) = if wants("profile") || wants("email") {
            let row = self.inner.store.get_user(user).await?;
            (
                wants("profile").then(|| row.display_name.clone()),
                wants("email").then(|| row.email.clone()),
            )
        } else {
            (None, None)
        };
        let claims = IdClaims {
            iss: self.inner.issuer.clone(),
            sub: user.to_string(),
            aud: client.name().to_string(),
            exp: now + ttl,
            iat: now,
            auth_time,
            nonce,
            at_hash: Some(at_hash(access_token, alg == Algorithm::EdDSA)),
            azp: client.name().to_string(),
            email_verified: email.as_ref().map(|_| false),
            name,
            email,
        };
        Ok(self.inner.keys.sign(alg, ID_TOKEN_TYP, &claims)?)
    }

    async fn client_credentials(
        &self,
        client: &OAuthClientRow,
        req: &TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let Some(sa) = client.service_account() else {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "the client acts as no service account",
            ));
        };
        let scopes = self.grant_scopes(client, req.scope.as_deref(), None)?;
        if scopes.iter().any(|s| matches!(s, Scope::Oidc(_))) {
            return Err(OAuthError::invalid_scope(
                "OpenID Connect scopes need a user: use the authorization_code grant",
            ));
        }
        let audiences = self.audiences(client, &req.audiences)?;
        let (principal, uid) = self.subject(sa).await?;
        let (access_token, expires_in) =
            self.mint_access(client, &principal, uid, &scopes, audiences, None, None)?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in,
            refresh_token: None,
            id_token: None,
            scope: Scopes::join(&scopes),
            issued_token_type: None,
        })
    }

    /// Issues an authorization code for a completed sign-in and consent.
    pub async fn issue_code(&self, grant: CodeGrant) -> Result<String, OAuthError> {
        let code = self
            .inner
            .store
            .create_authorization_code(NewCode {
                org_id: grant.client.org_id.clone(),
                client_id: grant.client.client_id.clone(),
                user_id: grant.user_id,
                redirect_uri: grant.redirect_uri,
                scope: Scopes::join(&grant.scope),
                audience: grant.audiences.join(" "),
                nonce: grant.nonce,
                code_challenge: grant.code_challenge,
                auth_time: grant.auth_time,
            })
            .await?;
        Ok(code.expose().to_owned())
    }

    async fn authorization_code(
        &self,
        client: &OAuthClientRow,
        req: &TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let code = req
            .code
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("code is required"))?;
        let row = match self
            .inner
            .store
            .redeem_authorization_code(
                &write_context(client, &req.request_id),
                code,
                &client.org_id,
                &client.client_id,
            )
            .await?
        {
            Ok(row) => row,
            Err(refusal) => {
                if refusal == GrantRefusal::Reused {
                    tracing::warn!(
                        target: "tollgate::security",
                        event = "code_reused",
                        client_id = %client.name(),
                        "an authorization code was presented twice; its tokens are revoked"
                    );
                }
                return Err(OAuthError::invalid_grant(format!(
                    "the authorization code is invalid: {refusal}"
                )));
            }
        };
        // RFC 6749 4.1.3: the same redirect URI as the authorization request.
        if req.redirect_uri.as_deref() != Some(row.redirect_uri.as_str()) {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        match (&row.code_challenge, &req.code_verifier) {
            (Some(challenge), Some(verifier)) => {
                if !pkce_matches(challenge, verifier) {
                    return Err(OAuthError::invalid_grant(
                        "the PKCE code_verifier does not match",
                    ));
                }
            }
            (Some(_), None) => {
                return Err(OAuthError::invalid_grant("code_verifier is required"));
            }
            (None, Some(_)) => {
                return Err(OAuthError::invalid_grant(
                    "code_verifier sent but the authorization request had no code_challenge",
                ));
            }
            (None, None) => {
                // The authorize endpoint requires PKCE of public clients,
                // so this is a confidential client that chose not to.
            }
        }
        let scopes = Scopes::parse("scope", &row.scope)
            .map_err(|v| OAuthError::invalid_scope(v.description))?;
        let audiences: Vec<String> = row
            .audience
            .split(' ')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        let audiences = self.audiences(client, &audiences)?;
        let user = PrincipalName {
            org: row.org_id.clone(),
            kind: PrincipalKind::User,
            id: row.user_id.clone(),
        };
        let (principal, uid) = self.subject(user.clone()).await?;
        let (access_token, expires_in) = self.mint_access(
            client,
            &principal,
            uid,
            &scopes,
            audiences.clone(),
            Some(row.auth_time),
            None,
        )?;
        let id_token = if scopes.contains(&Scope::Oidc("openid")) {
            Some(
                self.mint_id(
                    client,
                    &user,
                    &scopes,
                    &access_token,
                    row.auth_time,
                    row.nonce.clone(),
                )
                .await?,
            )
        } else {
            None
        };
        let refresh_token = if client.allows_grant(grant::REFRESH_TOKEN) {
            let ttl = i64::try_from(client.refresh_token_ttl().as_micros()).unwrap_or(i64::MAX);
            Some(
                self.inner
                    .store
                    .start_family(
                        NewFamily {
                            org_id: row.org_id.clone(),
                            client_id: row.client_id.clone(),
                            subject_kind: PrincipalKind::User,
                            subject_id: row.user_id.clone(),
                            scope: row.scope.clone(),
                            audience: audiences.join(" "),
                            nonce: row.nonce.clone(),
                            auth_time: row.auth_time,
                            expire_time: now_micros().saturating_add(ttl),
                        },
                        Some(row.digest.clone()),
                    )
                    .await?
                    .expose()
                    .to_owned(),
            )
        } else {
            None
        };
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in,
            refresh_token,
            id_token,
            scope: Scopes::join(&scopes),
            issued_token_type: None,
        })
    }

    async fn refresh(
        &self,
        client: &OAuthClientRow,
        req: &TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let token = req
            .refresh_token
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
        // The scope check needs the family's scopes, which only the row
        // has: peek first, then rotate with the narrowed scope.
        let Some(current) = self.inner.store.peek_refresh_token(token).await? else {
            // Unknown, expired, revoked or used: rotate to learn which
            // (a used one revokes its family there).
            let refusal = match self
                .inner
                .store
                .rotate_refresh_token(
                    &write_context(client, &req.request_id),
                    token,
                    &client.org_id,
                    &client.client_id,
                    String::new(),
                )
                .await?
            {
                Ok(_) => GrantRefusal::Unknown,
                Err(r) => r,
            };
            if refusal == GrantRefusal::Reused {
                tracing::warn!(
                    target: "tollgate::security",
                    event = "refresh_token_reused",
                    client_id = %client.name(),
                    "a used refresh token was presented; its family is revoked"
                );
            }
            return Err(OAuthError::invalid_grant(format!(
                "the refresh token is invalid: {refusal}"
            )));
        };
        let held = Scopes::Only(
            Scopes::parse("scope", &current.scope)
                .map_err(|v| OAuthError::invalid_scope(v.description))?,
        );
        let scopes = self.grant_scopes(client, req.scope.as_deref(), Some(&held))?;
        let (row, next) = match self
            .inner
            .store
            .rotate_refresh_token(
                &write_context(client, &req.request_id),
                token,
                &client.org_id,
                &client.client_id,
                Scopes::join(&scopes),
            )
            .await?
        {
            Ok(pair) => pair,
            Err(refusal) => {
                return Err(OAuthError::invalid_grant(format!(
                    "the refresh token is invalid: {refusal}"
                )));
            }
        };
        let kind = row
            .subject_kind()
            .ok_or_else(|| OAuthError::new(ErrorCode::ServerError, "internal error"))?;
        let subject = PrincipalName {
            org: row.org_id.clone(),
            kind,
            id: row.subject_id.clone(),
        };
        let (principal, uid) = self.subject(subject.clone()).await?;
        let audiences: Vec<String> = row
            .audience
            .split(' ')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        let (access_token, expires_in) = self.mint_access(
            client,
            &principal,
            uid,
            &scopes,
            audiences,
            Some(row.auth_time),
            None,
        )?;
        // OIDC Core 12.2: a refreshed ID token carries the original
        // auth_time and no nonce.
        let id_token = if scopes.contains(&Scope::Oidc("openid")) && kind == PrincipalKind::User {
            Some(
                self.mint_id(
                    client,
                    &subject,
                    &scopes,
                    &access_token,
                    row.auth_time,
                    None,
                )
                .await?,
            )
        } else {
            None
        };
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in,
            refresh_token: Some(next.expose().to_owned()),
            id_token,
            scope: Scopes::join(&scopes),
            issued_token_type: None,
        })
    }

    /// Verifies one of Tollgate's access tokens, without the revocation
    /// and principal checks of the authenticate layer.
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, Error> {
        Ok(self.inner.keys.verify(
            token,
            &Expect {
                typ: ACCESS_TOKEN_TYP,
                issuer: &self.inner.issuer,
                audience: None,
                leeway_secs: LEEWAY.as_secs(),
            },
        )?)
    }

    async fn exchange(
        &self,
        client: &OAuthClientRow,
        req: &TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let subject_token = req
            .subject_token
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("subject_token is required"))?;
        if req.subject_token_type.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type must be {ACCESS_TOKEN_TYPE}"
            )));
        }
        if let Some(t) = req.requested_token_type.as_deref()
            && t != ACCESS_TOKEN_TYPE
        {
            return Err(OAuthError::invalid_request(format!(
                "requested_token_type must be {ACCESS_TOKEN_TYPE}"
            )));
        }
        let Some(actor) = client.service_account() else {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "the client acts as no service account",
            ));
        };
        let subject = self
            .inner
            .credentials
            .verify_access_token(subject_token)
            .await
            .map_err(|e| OAuthError::invalid_grant(format!("the subject_token is invalid: {e}")))?;
        // The subject must be meant for Tollgate or for this client.
        let own = own_audience(&self.inner.issuer);
        let client_name = client.name().to_string();
        if !subject.claims.aud.contains(own)
            && !subject.claims.aud.contains(&client_name)
            && !client.audiences().any(|a| subject.claims.aud.contains(a))
        {
            return Err(OAuthError::invalid_grant(
                "the subject_token is not meant for this client",
            ));
        }
        // A tenant's client acts only for its own tenant's users.
        if subject.principal.org != client.org_id {
            return Err(OAuthError::invalid_grant(
                "the subject belongs to another organization",
            ));
        }
        let held = Scopes::Only(
            Scopes::parse("scope", &subject.claims.scope)
                .map_err(|v| OAuthError::invalid_scope(v.description))?,
        );
        let scopes = self.grant_scopes(client, req.scope.as_deref(), Some(&held))?;
        let audiences = self.audiences(client, &req.audiences)?;
        let act = Actor {
            sub: actor.to_string(),
            client_id: Some(client_name),
            act: subject.claims.act.clone().map(Box::new),
        };
        let principal = Principal::new(
            subject.principal.org.clone(),
            subject.principal.kind,
            subject.principal.id.clone(),
            subject.principal.roles.clone(),
        );
        let (access_token, expires_in) = self.mint_access(
            client,
            &principal,
            subject.claims.uid.clone(),
            &scopes,
            audiences,
            subject.claims.auth_time,
            Some(act),
        )?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in,
            refresh_token: None,
            id_token: None,
            scope: Scopes::join(&scopes),
            issued_token_type: Some(ACCESS_TOKEN_TYPE),
        })
    }

    /// RFC 7662: what `token` is. Callers outside the token's organization
    /// (other than platform admins) learn only `active: false`.
    pub async fn introspect(&self, viewer: &Viewer, token: &str) -> IntrospectTokenResponse {
        let inactive = IntrospectTokenResponse::default();
        let visible = |org: &str| match viewer {
            Viewer::Principal(p) => p.is_platform_admin() || p.org == org,
            Viewer::Organization(own) => own == org,
        };
        if token.starts_with(crate::domain::secret::REFRESH_PREFIX) {
            return match self.inner.store.peek_refresh_token(token).await {
                Ok(Some(row)) if visible(&row.org_id) => IntrospectTokenResponse {
                    active: true,
                    scope: row.scope.clone(),
                    client_id: format!("organizations/{}/clients/{}", row.org_id, row.client_id),
                    sub: row
                        .subject_kind()
                        .map(|kind| {
                            PrincipalName {
                                org: row.org_id.clone(),
                                kind,
                                id: row.subject_id.clone(),
                            }
                            .to_string()
                        })
                        .unwrap_or_default(),
                    token_type: "refresh_token".into(),
                    exp: secs(row.expire_time),
                    iat: secs(row.create_time),
                    organization: format!("organizations/{}", row.org_id),
                    ..inactive
                },
                _ => inactive,
            };
        }
        if crate::oauth::verifier::looks_like_jwt(token) {
            // Any audience: a resource server asks about tokens meant for it.
            return match self.inner.credentials.verify_access_token(token).await {
                Ok(verified) if visible(&verified.principal.org) => {
                    let (c, principal) = (&verified.claims, &verified.principal);
                    IntrospectTokenResponse {
                        active: true,
                        scope: c.scope.clone(),
                        client_id: c.client_id.clone(),
                        sub: c.sub.clone(),
                        username: String::new(),
                        token_type: "Bearer".into(),
                        exp: c.exp,
                        iat: c.iat,
                        nbf: c.nbf,
                        aud: c.aud.to_vec(),
                        iss: c.iss.clone(),
                        jti: c.jti.clone(),
                        organization: format!("organizations/{}", principal.org),
                        roles: principal.roles.names().map(str::to_owned).collect(),
                        act: c.act.as_ref().and_then(struct_of),
                    }
                }
                _ => inactive,
            };
        }
        match self.inner.credentials.resolve(token).await {
            // An API key.
            Ok(principal) if visible(&principal.org) => IntrospectTokenResponse {
                active: true,
                sub: principal.name().to_owned(),
                token_type: "api_key".into(),
                scope: match &principal.scopes {
                    Scopes::Unrestricted => String::new(),
                    Scopes::Only(s) => Scopes::join(s),
                },
                organization: format!("organizations/{}", principal.org),
                roles: principal.roles.names().map(str::to_owned).collect(),
                ..inactive
            },
            _ => inactive,
        }
    }

    /// RFC 7009: revokes `token` for the client that holds it, for
    /// request `request_id`. Unknown tokens succeed; another client's
    /// token is `unauthorized_client`.
    pub async fn revoke(
        &self,
        client: &OAuthClientRow,
        token: &str,
        request_id: &str,
    ) -> Result<(), OAuthError> {
        let ctx = write_context(client, request_id);
        if token.starts_with(crate::domain::secret::REFRESH_PREFIX) {
            return match self
                .inner
                .store
                .revoke_refresh_token(&ctx, token, &client.org_id, &client.client_id)
                .await?
            {
                Ok(_) => Ok(()),
                Err(_) => Err(OAuthError::new(
                    ErrorCode::UnauthorizedClient,
                    "the token was issued to another client",
                )),
            };
        }
        // An access token: only its own client may revoke it; an invalid
        // or expired one needs no revoking.
        let Ok(claims) = self.verify_access(token) else {
            return Ok(());
        };
        if claims.client_id != client.name().to_string() {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "the token was issued to another client",
            ));
        }
        let revoked = RevokedToken {
            token_type: tokens::ACCESS_TOKEN_TYPE.into(),
            jti: claims.jti.clone(),
            client: claims.client_id.clone(),
            subject: claims.sub.clone(),
            expire_time: Some(prost_types::Timestamp {
                seconds: claims.exp,
                nanos: 0,
            }),
            reason: tokens::REVOKED.into(),
            ..RevokedToken::default()
        };
        self.inner
            .credentials
            .revoke_access_token(&ctx, &client.org_id, revoked)
            .await?;
        tracing::info!(
            target: "tollgate::security",
            event = "token_revoked",
            client_id = %claims.client_id,
            jti = %claims.jti,
            "access token revoked"
        );
        Ok(())
    }
}

/// The write context of what `client`'s request `request_id` changes:
/// the client is the actor.
fn write_context(client: &OAuthClientRow, request_id: &str) -> WriteContext {
    WriteContext::new(client.name().to_string(), request_id)
}

/// RFC 7636 S256: `BASE64URL(SHA256(verifier)) == challenge`, after
/// checking the verifier's form (43 to 128 unreserved characters).
pub fn pkce_matches(challenge: &str, verifier: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return false;
    }
    let digest = sha2::Sha256::digest(verifier.as_bytes());
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    subtle::ConstantTimeEq::ct_eq(computed.as_bytes(), challenge.as_bytes()).into()
}

/// A JSON-able value as a `google.protobuf.Struct`.
fn struct_of<T: serde::Serialize>(value: &T) -> Option<prost_types::Struct> {
    let serde_json::Value::Object(map) = serde_json::to_value(value).ok()? else {
        return None;
    };
    Some(prost_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, value_of(v))).collect(),
    })
}

fn value_of(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(value_of).collect(),
        }),
        serde_json::Value::Object(m) => Kind::StructValue(prost_types::Struct {
            fields: m.into_iter().map(|(k, v)| (k, value_of(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// How long a failed-attempt window lasts, for documentation and tests.
pub const THROTTLE_WINDOW: Duration = super::throttle::WINDOW;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_per_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(challenge, verifier));
        assert!(!pkce_matches(challenge, &verifier.replace('d', "e")));
        assert!(!pkce_matches(challenge, "short"));
    }
}
