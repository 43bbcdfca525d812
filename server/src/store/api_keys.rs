//! The API keys repository, and key authentication on top of it.

use std::sync::Arc;

use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl, SelectableHelper};
use tollgate::tollgate::v1::{ApiKey, api_key::State};

use super::{
    DbConnection, Store, Tx,
    cache::ResolvedKey,
    filter::{apply_null, apply_op, int, optional_int, small, text, unknown},
    principals::{capped, load_any},
    schema::api_keys,
    versioned::{Lock, Versioned, current, inserted, lock_row},
};
use crate::{
    domain::{
        Error, Result,
        api_key::{self, PresentedKey, SecretKey, StoredDigest},
        authz::{Credential, Principal, Role, Roles},
        etag,
        filter::{FieldType, Predicate},
        names::{ApiKeyName, PrincipalKind, PrincipalName},
        now_micros,
        page::PageRequest,
        scope::{Scope, Scopes},
        timestamp,
    },
    events::{After, EventKind, WriteContext},
};

const ACTIVE: i16 = State::Active as i16;
const REVOKED: i16 = State::Revoked as i16;

/// The fields ListApiKeys filters on; `list_api_keys` matches each of them.
pub const FILTERS: &[(&str, FieldType)] = &[
    (
        "state",
        FieldType::Enum {
            values: &[State::Active as i32, State::Revoked as i32],
            name: |v| State::try_from(v).ok().map(|s| s.as_str_name()),
        },
    ),
    ("display_name", FieldType::Text),
    ("create_time", FieldType::Timestamp),
    ("last_used_time", FieldType::OptionalTimestamp),
];

/// A stored key: its digest, never the secret.
#[derive(
    Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    /// The owner's organization.
    pub org_id: String,
    /// The non-secret part of the key, also the last segment of its name.
    pub key_id: String,
    /// `PrincipalKind::code` of the owner.
    pub owner_kind: i16,
    /// The owner's id.
    pub owner_id: String,
    /// The uid of the owner the key was made for.
    pub owner_uid: String,
    /// Who minted it: a principal's resource name, or `system`.
    pub creator: String,
    /// The highest role the key may exercise; `None`: the owner's roles.
    pub role_cap: Option<String>,
    /// Shown to people.
    pub display_name: String,
    /// Hex SHA-256 of the whole key.
    pub digest: String,
    /// `ApiKey.State` as stored.
    pub state: i16,
    /// Refused from then on, when set.
    pub expire_time: Option<i64>,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// When it was revoked.
    pub revoke_time: Option<i64>,
    /// Bumped by every change.
    pub revision: i64,
    /// Space-separated scopes; empty: not narrowed.
    pub scopes: String,
    /// The start of the latest minute the key authenticated a call in, as
    /// the usage flush records it; `None` until first used.
    pub last_used_time: Option<i64>,
}

impl ApiKeyRow {
    /// The owner's name; INTERNAL for a corrupt owner kind.
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

    /// The key's resource name.
    pub fn name(&self) -> Result<ApiKeyName> {
        Ok(ApiKeyName {
            owner: self.owner()?,
            key: self.key_id.clone(),
        })
    }

    /// The role cap, parsed; an unknown stored role caps to nothing rather
    /// than granting anything.
    fn cap(&self) -> Option<Option<Role>> {
        self.role_cap.as_deref().map(Role::parse)
    }

    /// The key as the API shows it: never the secret, never the digest.
    pub fn to_proto(&self) -> ApiKey {
        let name = match self.name() {
            Ok(n) => n.to_string(),
            Err(e) => {
                tracing::error!(error = %e, "api key with a corrupt owner");
                String::new()
            }
        };
        ApiKey {
            name,
            display_name: self.display_name.clone(),
            state: i32::from(self.state),
            expire_time: self.expire_time.map(timestamp),
            create_time: Some(timestamp(self.create_time)),
            revoke_time: self.revoke_time.map(timestamp),
            secret: String::new(),
            etag: Versioned::etag(self),
            creator: self.creator.clone(),
            scopes: self
                .scopes
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            last_used_time: self.last_used_time.map(timestamp),
        }
    }
}

impl Versioned for ApiKeyRow {
    type Name = ApiKeyName;

    fn load(conn: &mut DbConnection, name: &ApiKeyName, lock: Lock) -> Result<Option<Self>> {
        if lock != Lock::None
            && !lock_row(
                conn,
                "api_keys",
                &[("org_id", &name.owner.org), ("key_id", &name.key)],
                lock,
            )?
        {
            return Ok(None);
        }
        Ok(api_keys::table
            .find((&name.owner.org, &name.key))
            .filter(api_keys::owner_kind.eq(name.owner.kind.code()))
            .filter(api_keys::owner_id.eq(&name.owner.id))
            .select(ApiKeyRow::as_select())
            .first(conn)
            .optional()?)
    }

    fn etag(&self) -> String {
        etag(&self.digest, self.revision)
    }

    fn org(&self) -> &str {
        &self.org_id
    }

    fn after(&self) -> After {
        After::ApiKey(self.to_proto())
    }
}

/// A key to mint: the key id, secret and digest are made at insert.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Whose key it is.
    pub owner: PrincipalName,
    /// Shown to people.
    pub display_name: String,
    /// Refused from then on, when set.
    pub expire_time: Option<i64>,
    /// The highest role it may exercise (see `ApiKey.creator`).
    pub role_cap: Option<Role>,
    /// What it may be used for; empty: not narrowed.
    pub scopes: Vec<Scope>,
}

/// Mints and inserts a key for an owner whose uid the caller read in this
/// transaction; returns the row and the secret. Shared with bootstrap.
pub(crate) fn insert(
    tx: &mut Tx<'_>,
    new: NewApiKey,
    owner_uid: String,
) -> Result<(ApiKeyRow, SecretKey)> {
    let minted = api_key::mint();
    let row = ApiKeyRow {
        org_id: new.owner.org.clone(),
        key_id: minted.key_id,
        owner_kind: new.owner.kind.code(),
        owner_id: new.owner.id.clone(),
        owner_uid,
        creator: tx.context().actor().to_owned(),
        role_cap: new.role_cap.map(|r| r.as_str().to_owned()),
        display_name: new.display_name,
        digest: minted.digest,
        state: ACTIVE,
        expire_time: new.expire_time,
        create_time: now_micros(),
        revoke_time: None,
        revision: 1,
        scopes: Scopes::join(&new.scopes),
        last_used_time: None,
    };
    let name = row.name()?.to_string();
    // 80 random bits collided: astronomically unlikely, but never silently
    // overwrite.
    inserted(
        diesel::insert_into(api_keys::table)
            .values(&row)
            .execute(tx.conn),
        || name.clone(),
    )?;
    tx.emit(EventKind::ApiKeyCreated, &row.org_id, name, row.after())?;
    Ok((row, minted.secret))
}

impl Store {
    /// Mints a key for an existing owner; `guard` sees the owner's roles.
    /// The owner row stays share-locked until commit (PostgreSQL), so a
    /// concurrent delete of the owner either waits and deletes the key too,
    /// or wins and the create finds no owner.
    pub async fn create_api_key(
        &self,
        ctx: &WriteContext,
        new: NewApiKey,
        guard: impl Fn(&Roles) -> Result<()> + Send + 'static,
    ) -> Result<(ApiKeyRow, SecretKey)> {
        self.write(ctx, move |tx| {
            let (roles, uid, _) = load_any(tx.conn, &new.owner, Lock::Share)?
                .ok_or_else(|| Error::not_found(new.owner.to_string()))?;
            guard(&roles)?;
            insert(tx, new, uid)
        })
        .await
    }

    /// Reads a key.
    pub async fn get_api_key(&self, name: &ApiKeyName) -> Result<ApiKeyRow> {
        let n = name.clone();
        self.db
            .run(move |conn| ApiKeyRow::load(conn, &n, Lock::None))
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
                if load_any(conn, &owner, Lock::None)?.is_none() {
                    return Err(Error::not_found(owner.to_string()));
                }
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
                        // Comparisons match only keys used at least once
                        // (SQL: NULL compares to nothing); `= null` finds
                        // the others.
                        "last_used_time" => match optional_int(p)? {
                            Some(t) => apply_op!(q, api_keys::last_used_time, p.op, t),
                            None => apply_null!(q, api_keys::last_used_time, p.op),
                        },
                        _ => return Err(unknown(p)),
                    };
                }
                Ok(q.order(api_keys::key_id.asc()).limit(limit).load(conn)?)
            })
            .await?;
        let next = page.finish(&mut rows, |r| r.key_id.clone());
        Ok((rows, next))
    }

    /// Revokes a key; revoking a revoked key returns it unchanged and
    /// appends no event (nothing changed). `guard` sees the owner's roles.
    pub async fn revoke_api_key(
        &self,
        ctx: &WriteContext,
        name: ApiKeyName,
        sent_etag: String,
        guard: impl Fn(&Roles) -> Result<()> + Send + 'static,
    ) -> Result<ApiKeyRow> {
        self.write(ctx, move |tx| {
            let resource = name.to_string();
            let owner_guard = |_: &ApiKeyRow| -> Result<()> { Ok(()) };
            let cur: ApiKeyRow = current(tx, &name, &resource, &sent_etag, &owner_guard)?;
            let (roles, _, _) = load_any(tx.conn, &name.owner, Lock::None)?
                .ok_or_else(|| Error::not_found(name.owner.to_string()))?;
            guard(&roles)?;
            if cur.state == REVOKED {
                return Ok(cur);
            }
            diesel::update(api_keys::table.find((&cur.org_id, &cur.key_id)))
                .set((
                    api_keys::state.eq(REVOKED),
                    api_keys::revoke_time.eq(Some(now_micros())),
                    api_keys::revision.eq(cur.revision + 1),
                ))
                .execute(tx.conn)?;
            let row = ApiKeyRow::load(tx.conn, &name, Lock::None)?
                .ok_or_else(|| Error::not_found(&resource))?;
            tx.emit_change(
                EventKind::ApiKeyRevoked,
                &row.org_id,
                resource,
                &cur.after(),
                row.after(),
            )?;
            Ok(row)
        })
        .await
    }

    /// The answer for a key resolved before, without waiting: `None` when
    /// it is not cached. Owner, state and organization were good when it
    /// was cached, and every event that changes them evicts the entry; the
    /// secret and the clock are checked on every call.
    pub fn resolved_key(&self, key: &PresentedKey) -> Option<Result<Arc<Principal>>> {
        let cached = self.caches.resolved.get(&key.key_id);
        self.caches.lookups.resolved.record(cached.is_some());
        let hit = cached?;
        Some(if !hit.digest.is_some_and(|d| key.matches_digest(&d)) {
            Err(Error::Unauthenticated("invalid API key".into()))
        } else if hit.row.expire_time.is_some_and(|t| t <= now_micros()) {
            Err(Error::Unauthenticated("API key expired".into()))
        } else {
            Ok(hit.principal.clone())
        })
    }

    /// Resolves a presented key to its principal. Every refusal is
    /// UNAUTHENTICATED except a suspended organization, which is
    /// PERMISSION_DENIED: the key is good, the tenant is not.
    pub async fn authenticate_key(&self, key: &PresentedKey) -> Result<Arc<Principal>> {
        if let Some(answer) = self.resolved_key(key) {
            return answer;
        }
        let invalid = || Error::Unauthenticated("invalid API key".into());
        let cached = self.caches.keys.get(&key.key_id);
        self.caches.lookups.keys.record(cached.is_some());
        let row = match cached {
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
        if !org.row.is_active() {
            return Err(Error::PermissionDenied(format!(
                "{} is suspended",
                org.row.name()
            )));
        }
        // A key minted by someone else grants at most what its minter had.
        let owner = &record.principal;
        let scopes = Scopes::from_stored_key(&row.scopes);
        let roles = match row.cap() {
            None => None,
            Some(cap) => Some(capped(&owner.roles, cap)).filter(|r| *r != owner.roles),
        };
        // One principal per key (cached below), so the rate limiter and
        // usage know which key called.
        let principal = Arc::new(
            Principal::new(
                owner.org.clone(),
                owner.kind,
                owner.id.clone(),
                roles.unwrap_or_else(|| owner.roles.clone()),
            )
            .with_scopes(scopes)
            .with_credential(Credential::ApiKey(row.name()?.to_string().into())),
        );
        self.caches.resolved.insert(
            key.key_id.clone(),
            Arc::new(ResolvedKey {
                digest: StoredDigest::parse(&row.digest),
                row: row.clone(),
                principal: principal.clone(),
            }),
        );
        Ok(principal)
    }
}
