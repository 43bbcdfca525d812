//! `tollgate.v1.AuthorizationService`: other services ask whether a
//! principal (or the holder of a credential) may use a permission on a
//! resource, and get Tollgate's own answer: the same role table and scope
//! rules the authorize layer applies to Tollgate's methods.

use std::sync::Arc;

use tollgate::tollgate::v1::{
    BatchCheckRequest, BatchCheckResponse, CheckRequest, CheckResponse,
    authorization_service_server::AuthorizationService, check_request::Subject,
};
use tonic::{Request, Response, Status};

use super::caller;
use crate::{
    domain::{
        Error, FieldViolation, Result,
        authz::{Permission, Principal},
        names::{OrgName, PrincipalName},
    },
    layers::{Caller, authenticate::Credentials},
};

/// Most checks in one BatchCheck.
pub const MAX_BATCH: usize = 100;

/// The `AuthorizationService` implementation.
pub struct Authorization {
    credentials: Credentials,
}

impl Authorization {
    /// Answers from the principals and credentials `credentials` resolves.
    pub fn new(credentials: Credentials) -> Self {
        Self { credentials }
    }

    /// One check; `prefix` is the field path of the check in the request
    /// (`""` or `checks[3].`), so a violation names the right field.
    async fn check(
        &self,
        caller: &Caller,
        req: &CheckRequest,
        prefix: &str,
    ) -> Result<CheckResponse> {
        let field = |f: &str| format!("{prefix}{f}");
        let permission = Permission::parse(&req.permission).ok_or_else(|| {
            Error::from(FieldViolation::new(
                field("permission"),
                "must be collection.verb, such as users.get",
            ))
        })?;
        let org = OrgName::of_resource(&field("resource"), &req.resource)?;
        // The caller must be entitled to ask about this organization: a
        // tenant learns nothing about another's principals.
        caller.authorize(&org.org)?;
        let principal: Arc<Principal> = match &req.subject {
            None => {
                return Err(
                    FieldViolation::new(field("principal"), "set principal or token").into(),
                );
            }
            Some(Subject::Principal(name)) => {
                let name = PrincipalName::parse_any(&field("principal"), name)?;
                match self.credentials.principal(name).await? {
                    Ok(p) => p,
                    Err(reason) => return Ok(denied(reason)),
                }
            }
            Some(Subject::Token(token)) => match self.credentials.resolve(token).await {
                Ok(p) => p,
                Err(Error::Unauthenticated(m) | Error::PermissionDenied(m)) => {
                    return Ok(denied(format!("the credential is not valid: {m}")));
                }
                Err(e) => return Err(e),
            },
        };
        Ok(match principal.authorize(&permission, &org.org) {
            Ok(()) => CheckResponse {
                allowed: true,
                reason: grant_reason(&principal, &permission, &org.org),
            },
            Err(Error::PermissionDenied(m)) => denied(m),
            Err(e) => return Err(e),
        })
    }
}

fn denied(reason: impl Into<String>) -> CheckResponse {
    CheckResponse {
        allowed: false,
        reason: reason.into(),
    }
}

/// Which role granted it, for the answer's reason.
fn grant_reason(principal: &Principal, permission: &Permission, org: &str) -> String {
    if principal.is_platform_admin() && principal.org != org {
        return format!("{} is a platform admin", principal.name());
    }
    let role = principal
        .roles
        .iter()
        .find(|r| r.grants(permission))
        .map_or("admin", |r| r.as_str());
    format!(
        "{} holds role {role} in organizations/{org}, which grants {permission}",
        principal.name()
    )
}

#[tonic::async_trait]
impl AuthorizationService for Authorization {
    async fn check(
        &self,
        mut req: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let caller = caller(&mut req)?;
        Ok(Response::new(
            Authorization::check(self, &caller, req.get_ref(), "").await?,
        ))
    }

    async fn batch_check(
        &self,
        mut req: Request<BatchCheckRequest>,
    ) -> Result<Response<BatchCheckResponse>, Status> {
        let caller = caller(&mut req)?;
        let checks = &req.get_ref().checks;
        if checks.is_empty() || checks.len() > MAX_BATCH {
            return Err(Error::from(FieldViolation::new(
                "checks",
                format!("must hold 1 to {MAX_BATCH} checks"),
            ))
            .into());
        }
        let mut results = Vec::with_capacity(checks.len());
        for (i, check) in checks.iter().enumerate() {
            results
                .push(Authorization::check(self, &caller, check, &format!("checks[{i}].")).await?);
        }
        Ok(Response::new(BatchCheckResponse { results }))
    }
}
