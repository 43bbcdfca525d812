//! `tollgate.v1.ApiKeyService`.

use tollgate::tollgate::v1::{
    ApiKey, CreateApiKeyRequest, GetApiKeyRequest, ListApiKeysRequest, ListApiKeysResponse,
    RevokeApiKeyRequest, api_key_service_server::ApiKeyService,
};
use tonic::{Request, Response, Status};

use super::{caller, list_params, micros, timestamp};
use crate::{
    domain::{
        Error, Violations, api_key,
        authz::{Principal, Roles},
        filter::FieldType,
        names::{ApiKeyName, PrincipalName},
        now_micros,
        validate::{self, MAX_DISPLAY_NAME},
    },
    store::{
        Store,
        api_keys::{self as keys, ApiKeyRow},
    },
};

const FILTERS: &[(&str, FieldType)] = &[
    ("state", FieldType::Enum(&[("ACTIVE", 1), ("REVOKED", 2)])),
    ("display_name", FieldType::Text),
    ("create_time", FieldType::Timestamp),
];

/// The key as the API shows it: never the secret, never the digest.
pub fn to_proto(r: &ApiKeyRow) -> ApiKey {
    ApiKey {
        name: r.name().map(|n| n.to_string()).unwrap_or_default(),
        display_name: r.display_name.clone(),
        state: i32::from(r.state),
        expire_time: r.expire_time.map(timestamp),
        create_time: Some(timestamp(r.create_time)),
        revoke_time: r.revoke_time.map(timestamp),
        secret: String::new(),
        etag: r.etag(),
    }
}

fn owner_guard(
    caller: &Principal,
    org: &str,
) -> impl Fn(&Roles) -> crate::domain::Result<()> + use<> {
    let caller = caller.clone();
    let org = org.to_owned();
    move |roles: &Roles| caller.check_may_manage(&org, roles, "parent")
}

pub struct ApiKeys {
    store: Store,
}

impl ApiKeys {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

/// Mints a key for `owner` (whose uid `create_api_key` fills in); returns
/// the row and the secret. Used by the API and by bootstrap /
/// `admin create-key`.
pub fn new_key_row(
    owner: &PrincipalName,
    display_name: String,
    expire_time: Option<i64>,
) -> (ApiKeyRow, api_key::SecretKey) {
    let minted = api_key::mint();
    let row = ApiKeyRow {
        org_id: owner.org.clone(),
        key_id: minted.key_id,
        owner_kind: owner.kind.code(),
        owner_id: owner.id.clone(),
        owner_uid: String::new(),
        display_name,
        digest: minted.digest,
        state: keys::ACTIVE,
        expire_time,
        create_time: now_micros(),
        revoke_time: None,
        revision: 1,
    };
    (row, minted.secret)
}

#[tonic::async_trait]
impl ApiKeyService for ApiKeys {
    async fn create_api_key(
        &self,
        req: Request<CreateApiKeyRequest>,
    ) -> Result<Response<ApiKey>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let owner = PrincipalName::parse_any("parent", &req.parent).map_err(Error::from)?;
        let caller = caller.authorize(&owner.org)?;
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
        v.into_result()?;
        let (row, secret) = new_key_row(&owner, key.display_name, expire);
        let created = self
            .store
            .create_api_key(row, owner_guard(caller, &owner.org))
            .await?;
        let mut out = to_proto(&created);
        out.secret = secret.expose().to_owned();
        Ok(Response::new(out))
    }

    async fn get_api_key(
        &self,
        req: Request<GetApiKeyRequest>,
    ) -> Result<Response<ApiKey>, Status> {
        let caller = caller(&req)?;
        let name = ApiKeyName::parse("name", &req.get_ref().name).map_err(Error::from)?;
        caller.authorize(&name.owner.org)?;
        let row = self.store.get_api_key(&name).await?;
        Ok(Response::new(to_proto(&row)))
    }

    async fn list_api_keys(
        &self,
        req: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let caller = caller(&req)?;
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
            api_keys: rows.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn revoke_api_key(
        &self,
        req: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<ApiKey>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let name = ApiKeyName::parse("name", &req.name).map_err(Error::from)?;
        let caller = caller.authorize(&name.owner.org)?;
        let row = self
            .store
            .revoke_api_key(&name, req.etag, owner_guard(caller, &name.owner.org))
            .await?;
        Ok(Response::new(to_proto(&row)))
    }
}
