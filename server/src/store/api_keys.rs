//! The API keys repository, and key authentication on top of it.

use std::sync::Arc;

use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl, SelectableHelper};

use super::{
    DbConnection, EventPayload, Store, append_event,
    db::is_unique_violation,
    filter::{apply_op, int, small, text, unknown},
    organizations,
    schema::{api_keys, service_accounts, users},
};
use crate::domain::{
    Error, Result,
    api_key::PresentedKey,
    authz::{Principal, Roles},
    check_etag, etag,
    filter::Predicate,
    names::{ApiKeyName, PrincipalKind, PrincipalName},
    now_micros,
    page::PageRequest,
};

/// Stored state codes; the same numbers as `ApiKey.State`.
pub const ACTIVE: i16 = 1;
pub const REVOKED: i16 = 2;

#[derive(
    Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    pub org_id: String,
    pub key_id: String,
    pub owner_kind: i16,
    pub owner_id: String,
    /// The uid of the owner the key was made for.
    pub owner_uid: String,
    pub display_name: String,
    /// Hex SHA-256 of the whole key.
    pub digest: String,
    pub state: i16,
    pub expire_time: Option<i64>,
    pub create_time: i64,
    pub revoke_time: Option<i64>,
    pub revision: i64,
}

impl ApiKeyRow {
    pub fn owner(&self) -> Result<PrincipalName> {
        let kind = PrincipalKind::from_code(self.owner_kind).ok_or_else(|| {
            Error::Internal(format!(
                "api key {} has owner kind {}",
                self.key_id, self.owner_kind
            ))
        })?;
        Ok(PrincipalName {
            org: self.org_id.clone(),
            kind,
            id: self.owner_id.clone(),
        })
    }

    pub fn name(&self) -> Result<ApiKeyName> {
        Ok(ApiKeyName {
            owner: self.owner()?,
            key: self.key_id.clone(),
        })
    }

    pub fn etag(&self) -> String {
        etag(&self.digest, self.revision)
    }
}

fn load(conn: &mut DbConnection, name: &ApiKeyName) -> Result<Option<ApiKeyRow>> {
    Ok(api_keys::table
        .find((&name.owner.org, &name.key))
        .filter(api_keys::owner_kind.eq(name.owner.kind.code()))
        .filter(api_keys::owner_id.eq(&name.owner.id))
        .select(ApiKeyRow::as_select())
        .first(conn)
        .optional()?)
}

/// The roles and uid of a key's owner, or NOT_FOUND.
fn owner_roles(conn: &mut DbConnection, owner: &PrincipalName) -> Result<(Roles, String)> {
    let found = match owner.kind {
        PrincipalKind::User => users::table
            .find((&owner.org, &owner.id))
            .select((users::roles, users::uid))
            .first::<(String, String)>(conn)
            .optional()?,
        PrincipalKind::ServiceAccount => service_accounts::table
            .find((&owner.org, &owner.id))
            .select((service_accounts::roles, service_accounts::uid))
            .first::<(String, String)>(conn)
            .optional()?,
    };
    found
        .map(|(r, uid)| (Roles::from_stored(&r), uid))
        .ok_or_else(|| Error::not_found(owner.to_string()))
}

/// Inserts a key and its event. Shared with bootstrap.
pub(crate) fn insert(conn: &mut DbConnection, row: &ApiKeyRow) -> Result<()> {
    let name = row.name()?.to_string();
    match diesel::insert_into(api_keys::table)
        .values(row)
        .execute(conn)
    {
        // 80 random bits collided: astronomically unlikely, but never
        // silently overwrite.
        Err(e) if is_unique_violation(&e) => return Err(Error::AlreadyExists { resource: name }),
        other => other?,
    };
    append_event(conn, &row.org_id, "apiKey.created", &name, row.payload())
}

impl Store {
    /// Creates a key for an existing owner; `guard` sees the owner's roles.
    /// The row's `owner_uid` is set here, from the owner read in the same
    /// transaction.
    pub async fn create_api_key(
        &self,
        mut row: ApiKeyRow,
        guard: impl Fn(&Roles) -> Result<()> + Send + 'static,
    ) -> Result<ApiKeyRow> {
        let created = self
            .db
            .write(move |conn| {
                let owner = row.owner()?;
                let (roles, uid) = owner_roles(conn, &owner)?;
                guard(&roles)?;
                row.owner_uid = uid;
                insert(conn, &row)?;
                Ok(row)
            })
            .await?;
        self.caches.keys.invalidate(&created.key_id);
        Ok(created)
    }

    pub async fn get_api_key(&self, name: &ApiKeyName) -> Result<ApiKeyRow> {
        let n = name.clone();
        self.db
            .run(move |conn| load(conn, &n))
            .await?
            .ok_or_else(|| Error::not_found(name.to_string()))
    }

    /// One page of an owner's keys. NOT_FOUND when the owner does not exist.
    pub async fn list_api_keys(
        &self,
        owner: PrincipalName,
        filter: Vec<Predicate>,
        page: PageRequest,
    ) -> Result<(Vec<ApiKeyRow>, String)> {
        let limit = page.fetch_limit();
        let after = page.after.clone();
        let mut rows = self
            .db
            .run(move |conn| {
                owner_roles(conn, &owner)?;
                let mut q = api_keys::table
                    .select(ApiKeyRow::as_select())
                    .filter(api_keys::org_id.eq(&owner.org))
                    .filter(api_keys::owner_kind.eq(owner.kind.code()))
                    .filter(api_keys::owner_id.eq(&owner.id))
                    .into_boxed();
                if let Some(after) = after {
                    q = q.filter(api_keys::key_id.gt(after));
                }
                for p in &filter {
                    q = match p.field {
                        "state" => apply_op!(q, api_keys::state, p.op, small(p)?),
                        "display_name" => apply_op!(q, api_keys::display_name, p.op, text(p)?),
                        "create_time" => apply_op!(q, api_keys::create_time, p.op, int(p)?),
                        _ => return Err(unknown(p)),
                    };
                }
                Ok(q.order(api_keys::key_id.asc()).limit(limit).load(conn)?)
            })
            .await?;
        let next = page.finish(&mut rows, |r| r.key_id.clone());
        Ok((rows, next))
    }

    /// Revokes a key; revoking a revoked key returns it unchanged.
    pub async fn revoke_api_key(
        &self,
        name: &ApiKeyName,
        sent_etag: String,
        guard: impl Fn(&Roles) -> Result<()> + Send + 'static,
    ) -> Result<ApiKeyRow> {
        let n = name.clone();
        let revoked = self
            .db
            .write(move |conn| {
                let cur = load(conn, &n)?.ok_or_else(|| Error::not_found(n.to_string()))?;
                check_etag(&n.to_string(), &sent_etag, &cur.etag())?;
                guard(&owner_roles(conn, &n.owner)?.0)?;
                if cur.state == REVOKED {
                    return Ok(cur);
                }
                diesel::update(api_keys::table.find((&n.owner.org, &n.key)))
                    .set((
                        api_keys::state.eq(REVOKED),
                        api_keys::revoke_time.eq(Some(now_micros())),
                        api_keys::revision.eq(cur.revision + 1),
                    ))
                    .execute(conn)?;
                let row = load(conn, &n)?.ok_or_else(|| Error::not_found(n.to_string()))?;
                append_event(
                    conn,
                    &n.owner.org,
                    "apiKey.revoked",
                    &n.to_string(),
                    row.payload(),
                )?;
                Ok(row)
            })
            .await?;
        self.caches.keys.invalidate(&name.key);
        Ok(revoked)
    }

    /// Resolves a presented key to its principal. Every refusal is
    /// UNAUTHENTICATED except a suspended organization, which is
    /// PERMISSION_DENIED: the key is good, the tenant is not.
    pub async fn authenticate_key(&self, key: &PresentedKey) -> Result<Arc<Principal>> {
        let invalid = || Error::Unauthenticated("invalid API key".into());
        let row = match self.caches.keys.get(&key.key_id) {
            Some(hit) => hit,
            None => {
                let id = key.key_id.clone();
                let row = self
                    .db
                    .run(move |conn| {
                        Ok(api_keys::table
                            .filter(api_keys::key_id.eq(&id))
                            .select(ApiKeyRow::as_select())
                            .first(conn)
                            .optional()?)
                    })
                    .await?
                    .map(Arc::new);
                self.caches.keys.insert(key.key_id.clone(), row.clone());
                row
            }
        };
        let row = row.ok_or_else(invalid)?;
        if !key.matches(&row.digest) {
            return Err(invalid());
        }
        if row.state != ACTIVE {
            return Err(Error::Unauthenticated("API key revoked".into()));
        }
        if row.expire_time.is_some_and(|t| t <= now_micros()) {
            return Err(Error::Unauthenticated("API key expired".into()));
        }
        // The uid check refuses a key whose owner was deleted and re-created
        // under the same name, even while another replica's cache still
        // holds the key.
        let record = self
            .principal_record(row.owner()?)
            .await?
            .filter(|r| r.uid == row.owner_uid)
            .ok_or_else(invalid)?;
        if !record.active {
            return Err(Error::Unauthenticated(format!(
                "{} is disabled",
                record.principal.name()
            )));
        }
        let org = match self.get_organization(&row.org_id).await {
            Ok(org) => org,
            Err(Error::NotFound { .. }) => return Err(invalid()),
            Err(e) => return Err(e),
        };
        if org.state != organizations::ACTIVE {
            return Err(Error::PermissionDenied(format!(
                "{} is suspended",
                org.name()
            )));
        }
        Ok(record.principal.clone())
    }
}
