//! Envoy's external authorization (`envoy.service.auth.v3.Authorization`):
//! Envoy asks, for each request it proxies, whether to let it through.
//!
//! The answer authenticates the request's own credentials (API key or
//! access token, exactly as Tollgate's own layers do), applies the route's
//! permission and the caller's rate limits, and either lets the request on
//! with headers naming the caller (never the credential) or denies it with
//! the HTTP status, `WWW-Authenticate` and a JSON body in Tollgate's error
//! shape.
//!
//! Which permission a route needs, in order: the `permission` context
//! extension Envoy sends from the route's `ext_authz` per-route settings
//! (`check_settings.context_extensions`); else the `(tollgate.v1.policy)`
//! of the method when the path is one Tollgate knows (gRPC through the
//! gateway); else none: any authenticated caller passes. The context
//! extension `organization` names the organization the permission must
//! hold in (the caller's own by default), and `cost` the rate-limit cost
//! (the method's, else 1).

use std::{net::IpAddr, sync::Arc};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tollgate::envoy::{
    config::core::v3::{HeaderValue as EnvoyHeader, HeaderValueOption, header_value_option},
    service::auth::v3::{
        AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
        authorization_server::Authorization, check_response::HttpResponse,
    },
    r#type::v3::HttpStatus,
};
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        Error,
        authz::{Permission, Principal},
        scope::Scopes,
    },
    layers::authenticate::{CREDENTIALS_REQUIRED, Credentials, credential},
    policy::Policies,
    ratelimit::{Facts, RateLimiter, Verdict, headers, refusal::Refusal},
};

/// Header naming the caller's principal, added upstream.
pub const PRINCIPAL_HEADER: &str = "x-tollgate-principal";
/// Header naming the caller's organization, added upstream.
pub const ORGANIZATION_HEADER: &str = "x-tollgate-organization";
/// Header with the credential's scopes (space-separated; `*` when
/// unrestricted), added upstream.
pub const SCOPES_HEADER: &str = "x-tollgate-scopes";

/// The `Authorization` service.
pub struct ExtAuthz {
    credentials: Credentials,
    policies: Arc<Policies>,
    limiter: RateLimiter,
}

impl ExtAuthz {
    /// Answers with `credentials`, the methods' `policies` and `limiter`.
    pub fn new(credentials: Credentials, policies: Arc<Policies>, limiter: RateLimiter) -> Self {
        Self {
            credentials,
            policies,
            limiter,
        }
    }

    /// The decision, as an HTTP answer for Envoy.
    async fn decide(&self, attributes: &AttributeContext) -> CheckResponse {
        let http = attributes.request.as_ref().and_then(|r| r.http.as_ref());
        let headers = http.map(|h| header_map(&h.headers)).unwrap_or_default();
        let path = http
            .map(|h| h.path.split('?').next().unwrap_or(""))
            .unwrap_or("");
        let ext = &attributes.context_extensions;

        // Who is calling.
        let principal = match credential(&headers) {
            Err(e) => return denied(Denial::Unauthenticated(e, true)),
            Ok(None) => {
                return denied(Denial::Unauthenticated(
                    Error::Unauthenticated(CREDENTIALS_REQUIRED.into()),
                    false,
                ));
            }
            Ok(Some(token)) => match self.credentials.resolve(token).await {
                Ok(p) => p,
                Err(e @ Error::Unauthenticated(_)) => {
                    return denied(Denial::Unauthenticated(e, true));
                }
                Err(e @ Error::PermissionDenied(_)) => return denied(Denial::Forbidden(e)),
                Err(e) => return denied(Denial::Error(e)),
            },
        };

        // May it use this route?
        let policy = self.policies.get(path);
        let permission = match ext.get("permission") {
            Some(p) => match Permission::parse(p) {
                Some(p) => Some(p),
                None => {
                    return denied(Denial::Error(Error::Internal(format!(
                        "the route's ext_authz context extension permission={p:?} is not collection.verb"
                    ))));
                }
            },
            None => policy.and_then(|p| p.permission.clone()),
        };
        if let Some(permission) = &permission {
            let org = ext
                .get("organization")
                .map(|o| o.strip_prefix("organizations/").unwrap_or(o))
                .unwrap_or(&principal.org);
            if let Err(e) = principal.authorize(permission, org) {
                return denied(Denial::Forbidden(e));
            }
        }

        // How often?
        let cost = ext
            .get("cost")
            .and_then(|c| c.parse::<u64>().ok())
            .or(policy.map(|p| u64::from(p.declared.cost)))
            .unwrap_or(1);
        let verdict = if cost == 0 {
            Verdict::default()
        } else {
            let facts = Facts {
                org: None,
                principal: Some(&principal),
                method: path,
                source: source_ip(attributes),
                headers: Some(&headers),
                descriptors: None,
            };
            self.limiter.decide(&facts, cost, false).await
        };
        if !verdict.allowed() {
            return denied(Denial::Limited(verdict));
        }
        allowed(&principal, &verdict)
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let attributes = request.into_inner().attributes.unwrap_or_default();
        Ok(Response::new(self.decide(&attributes).await))
    }
}

/// Why a request is denied.
enum Denial {
    /// No or a bad credential; `true` when one was presented (the
    /// challenge then says `invalid_token`).
    Unauthenticated(Error, bool),
    Forbidden(Error),
    Limited(Verdict),
    /// Tollgate could not decide (its database is down, say).
    Error(Error),
}

fn denied(denial: Denial) -> CheckResponse {
    let mut extra = Vec::new();
    let (http, status) = match denial {
        Denial::Unauthenticated(e, presented) => {
            let challenge = if presented {
                "Bearer realm=\"tollgate\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"tollgate\""
            };
            extra.push(header("www-authenticate", challenge));
            (StatusCode::UNAUTHORIZED, Status::from(e))
        }
        Denial::Forbidden(e) => (StatusCode::FORBIDDEN, Status::from(e)),
        Denial::Limited(verdict) => {
            if let Some((policy, state)) = headers::values(&verdict) {
                extra.push(header_value(headers::RATELIMIT_POLICY, policy));
                extra.push(header_value(headers::RATELIMIT, state));
            }
            if let Some(retry) = headers::retry_after(&verdict) {
                extra.push(header_value("retry-after", retry));
            }
            let status = Status::from(Refusal::from(&verdict));
            let http = crate::api::error::http_status(status.code());
            (http, status)
        }
        Denial::Error(e) => {
            let status = Status::from(e);
            (crate::api::error::http_status(status.code()), status)
        }
    };
    let body = serde_json::to_string(&crate::http::error::status_json(&status)).unwrap_or_default();
    extra.push(header("content-type", "application/json"));
    CheckResponse {
        status: Some(crate::http::error::rpc_status(&status)),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(http.as_u16()),
            }),
            headers: extra,
            body,
        })),
        dynamic_metadata: None,
    }
}

fn allowed(principal: &Principal, verdict: &Verdict) -> CheckResponse {
    // Overwrite, never append: a client must not smuggle its own
    // x-tollgate-* values past the gateway.
    let mut upstream = vec![
        header(PRINCIPAL_HEADER, principal.name()),
        header(ORGANIZATION_HEADER, &principal.org),
        header(
            SCOPES_HEADER,
            &match &principal.scopes {
                Scopes::Unrestricted => "*".to_owned(),
                Scopes::Only(scopes) => Scopes::join(scopes),
            },
        ),
    ];
    for h in &mut upstream {
        h.append_action = header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
    }
    let mut downstream = Vec::new();
    if let Some((policy, state)) = headers::values(verdict) {
        downstream.push(header_value(headers::RATELIMIT_POLICY, policy));
        downstream.push(header_value(headers::RATELIMIT, state));
    }
    CheckResponse {
        status: Some(tollgate::google::rpc::Status {
            code: 0,
            message: String::new(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: upstream,
            response_headers_to_add: downstream,
            ..OkHttpResponse::default()
        })),
        dynamic_metadata: None,
    }
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(EnvoyHeader {
            key: key.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        ..HeaderValueOption::default()
    }
}

fn header_value(key: &str, value: HeaderValue) -> HeaderValueOption {
    header(key, value.to_str().unwrap_or(""))
}

/// Envoy's header map (lower-case names) as an `http::HeaderMap`; names
/// or values HTTP would not carry are skipped.
pub fn header_map(headers: &std::collections::HashMap<String, String>) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            out.append(k, v);
        }
    }
    out
}

fn source_ip(attributes: &AttributeContext) -> Option<IpAddr> {
    use tollgate::envoy::config::core::v3::address::Address;
    let address = attributes.source.as_ref()?.address.as_ref()?;
    match address.address.as_ref()? {
        Address::SocketAddress(s) => s.address.parse().ok(),
        _ => None,
    }
}
