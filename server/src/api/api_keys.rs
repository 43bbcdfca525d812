//! `tollgate.v1.ApiKeyService`.

use tollgate::tollgate::v1::{
    ApiKey, CreateApiKeyRequest, GetApiKeyRequest, ListApiKeysRequest, ListApiKeysResponse,
    RevokeApiKeyRequest, api_key_service_server::ApiKeyService,
};
use tonic::{Request, Response, Status};

use super::{caller, list_params, manage_guard, micros};
use crate::{
    domain::{
        Error, Violations,
        names::{ApiKeyName, PrincipalName},
        now_micros,
        scope::Scopes,
        validate::{self, MAX_DISPLAY_NAME},
    },
    store::{
        Store,
        api_keys::{FILTERS, NewApiKey},
    },
};

/// The `ApiKeyService` implementation.
pub struct ApiKeys {
    store: Store,
}

impl ApiKeys {
    /// Serves API keys from `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl ApiKeyService for ApiKeys {
    async fn create_api_key(
        &self,
        mut req: Request<CreateApiKeyRequest>,
    ) -> Result<Response<ApiKey>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let owner = PrincipalName::parse_any("parent", &req.parent).map_err(Error::from)?;
        let me = caller.authorize(&owner.org)?;
        let key = req.api_key.unwrap_or_default();
        let mut v = Violations::default();
        v.check(validate::bounded_text(
            "api_key.display_name",
            &key.display_name,
            MAX_DISPLAY_NAME,
        ));
        let expire = match &key.expire_time {
            None => None,
            Some(ts) => match micros("api_key.expire_time", ts) {
                Ok(t) if t <= now_micros() => {
                    v.add("api_key.expire_time", "must be in the future");
                    None
                }
                Ok(t) => Some(t),
                Err(Error::InvalidArgument(e)) => {
                    v.0.extend(e.0);
                    None
                }
                Err(e) => return Err(e.into()),
            },
        };
        let mut scopes = v
            .take(Scopes::parse_list(
                "api_key.scopes",
                key.scopes.iter().map(String::as_str),
            ))
            .unwrap_or_default();
        v.into_result()?;
        // A narrowed caller mints only narrower keys: without scopes, the
        // key inherits the caller's; with scopes, each must be within them.
        if let Scopes::Only(held) = &me.scopes {
            if scopes.is_empty() {
                scopes = held.clone();
            } else {
                me.check_may_grant_scopes(&scopes)?;
            }
        }
        let new = NewApiKey {
            role_cap: me.key_cap_for(&owner),
            owner,
            display_name: key.display_name,
            expire_time: expire,
            scopes,
        };
        let guard = manage_guard(me, &new.owner.org, "parent");
        let (created, secret) = self
            .store
            .create_api_key(&caller.write_context(), new, guard)
            .await?;
        let mut out = created.to_proto();
        out.secret = secret.expose().to_owned();
        Ok(Response::new(out))
    }

    async fn get_api_key(
        &self,
        mut req: Request<GetApiKeyRequest>,
    ) -> Result<Response<ApiKey>, Status> {
        let caller = caller(&mut req)?;
        let name = ApiKeyName::parse("name", &req.get_ref().name).map_err(Error::from)?;
        caller.authorize(&name.owner.org)?;
        let row = self.store.get_api_key(&name).await?;
        Ok(Response::new(row.to_proto()))
    }

    async fn list_api_keys(
        &self,
        mut req: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let owner = PrincipalName::parse_any("parent", &req.parent).map_err(Error::from)?;
        caller.authorize(&owner.org)?;
        let (filter, page) = list_params(
            "apiKeys",
            &req.parent,
            &req.filter,
            req.page_size,
            &req.page_token,
            FILTERS,
        )?;
        let (rows, next_page_token) = self.store.list_api_keys(owner, filter, page).await?;
        Ok(Response::new(ListApiKeysResponse {
            api_keys: rows.iter().map(|r| r.to_proto()).collect(),
            next_page_token,
        }))
    }

    async fn revoke_api_key(
        &self,
        mut req: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<ApiKey>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let name = ApiKeyName::parse("name", &req.name).map_err(Error::from)?;
        let me = caller.authorize(&name.owner.org)?;
        let guard = manage_guard(me, &name.owner.org, "name");
        let ctx = caller.write_context();
        let row = self
            .store
            .revoke_api_key(&ctx, name, req.etag, guard)
            .await?;
        let key = row.to_proto();
        tracing::info!(
            target: "tollgate::security",
            event = "api_key_revoked",
            key = %key.name,
            actor = ctx.actor(),
            request_id = ctx.request_id(),
            "API key revoked"
        );
        Ok(Response::new(key))
    }
}
