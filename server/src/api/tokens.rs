//! `tollgate.v1.TokenService`: the OAuth token endpoints over gRPC (and so
//! over HTTP/JSON and Connect), with the same grants, checks and RFC error
//! codes as `/oauth2/token`, `/oauth2/introspect` and `/oauth2/revoke`; and
//! the signing keys.

use tollgate::tollgate::v1::{
    IntrospectTokenRequest, IntrospectTokenResponse, IssueTokenRequest, IssueTokenResponse,
    ListSigningKeysRequest, ListSigningKeysResponse, RevokeTokenRequest, RevokeTokenResponse,
    RotateSigningKeyRequest, SigningKey, token_service_server::TokenService,
};
use tonic::{Request, Response, Status};

use super::{caller, signing_keys::SigningKeys};
use crate::oauth::{
    error::OAuthError,
    provider::{Provider, TokenRequest, Viewer},
};

/// The `TokenService` implementation.
pub struct Tokens {
    provider: Provider,
    signing_keys: SigningKeys,
}

impl Tokens {
    /// Serves tokens from `provider` and keys through `signing_keys`.
    pub fn new(provider: Provider, signing_keys: SigningKeys) -> Self {
        Self {
            provider,
            signing_keys,
        }
    }
}

fn source<T>(req: &Request<T>) -> Option<std::net::IpAddr> {
    crate::listener::Arrival::peer_ip(req.extensions())
}

fn some(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl TokenService for Tokens {
    async fn issue_token(
        &self,
        req: Request<IssueTokenRequest>,
    ) -> Result<Response<IssueTokenResponse>, Status> {
        let ip = source(&req);
        let request_id = request_id(&req);
        let r = req.into_inner();
        let token = self
            .provider
            .token(
                TokenRequest {
                    request_id,
                    grant_type: r.grant_type,
                    client_id: r.client_id,
                    client_secret: some(r.client_secret),
                    scope: some(r.scope),
                    audiences: r
                        .audience
                        .split(' ')
                        .filter(|a| !a.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    code: some(r.code),
                    redirect_uri: some(r.redirect_uri),
                    code_verifier: some(r.code_verifier),
                    refresh_token: some(r.refresh_token),
                    subject_token: some(r.subject_token),
                    subject_token_type: some(r.subject_token_type),
                    requested_token_type: some(r.requested_token_type),
                },
                ip,
            )
            .await?;
        Ok(Response::new(IssueTokenResponse {
            access_token: token.access_token,
            token_type: token.token_type.to_owned(),
            expires_in: token.expires_in,
            refresh_token: token.refresh_token.unwrap_or_default(),
            id_token: token.id_token.unwrap_or_default(),
            scope: token.scope,
            issued_token_type: token.issued_token_type.unwrap_or_default().to_owned(),
        }))
    }

    async fn introspect_token(
        &self,
        mut req: Request<IntrospectTokenRequest>,
    ) -> Result<Response<IntrospectTokenResponse>, Status> {
        let caller = caller(&mut req)?;
        let me = caller.authorize_own()?.clone();
        Ok(Response::new(
            self.provider
                .introspect(&Viewer::Principal(me), &req.get_ref().token)
                .await,
        ))
    }

    async fn revoke_token(
        &self,
        req: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        let ip = source(&req);
        let request_id = request_id(&req);
        let r = req.into_inner();
        if r.token.is_empty() {
            return Err(OAuthError::invalid_request("token is required").into());
        }
        let client = self
            .provider
            .authenticate_client(&r.client_id, some(r.client_secret).as_deref(), ip)
            .await?;
        self.provider.revoke(&client, &r.token, &request_id).await?;
        Ok(Response::new(RevokeTokenResponse {}))
    }

    async fn list_signing_keys(
        &self,
        req: Request<ListSigningKeysRequest>,
    ) -> Result<Response<ListSigningKeysResponse>, Status> {
        self.signing_keys.list(req).await
    }

    async fn rotate_signing_key(
        &self,
        req: Request<RotateSigningKeyRequest>,
    ) -> Result<Response<SigningKey>, Status> {
        self.signing_keys.rotate(req).await
    }
}

/// The call's request id (set by the trace layer), for the events of what
/// it changes.
fn request_id<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<std::sync::Arc<crate::layers::call::Call>>()
        .map_or_else(
            || crate::layers::request_id::RequestId::assign().to_string(),
            |call| call.request_id().to_string(),
        )
}
