//! The users and service accounts repositories: the two kinds of principal.
//! They share a lifecycle (roles, state, keys deleted with them), so they
//! share the delete and lookup code here.

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
    authz::{Principal, Roles},
    check_etag, etag,
    filter::Predicate,
    names::{OrgName, PrincipalKind, PrincipalName},
    now_micros,
    page::PageRequest,
};

/// Stored state codes; the same numbers as `User.State` and
/// `ServiceAccount.State`.
pub const ACTIVE: i16 = 1;
pub const DISABLED: i16 = 2;

#[derive(
    Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub org_id: String,
    pub user_id: String,
    pub uid: String,
    pub display_name: String,
    pub email: String,
    pub state: i16,
    pub roles: String,
    pub password_hash: Option<String>,
    pub create_time: i64,
    pub update_time: i64,
    pub revision: i64,
}

#[derive(Debug, Default, diesel::AsChangeset)]
#[diesel(table_name = users)]
pub struct UserChanges {
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub state: Option<i16>,
    pub roles: Option<String>,
    pub password_hash: Option<Option<String>>,
}

#[derive(
    Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = service_accounts)]
pub struct ServiceAccountRow {
    pub org_id: String,
    pub sa_id: String,
    pub uid: String,
    pub display_name: String,
    pub description: String,
    pub state: i16,
    pub roles: String,
    pub create_time: i64,
    pub update_time: i64,
    pub revision: i64,
}

#[derive(Debug, Default, diesel::AsChangeset)]
#[diesel(table_name = service_accounts)]
pub struct ServiceAccountChanges {
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub state: Option<i16>,
    pub roles: Option<String>,
}

/// What the authenticate layer needs of a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRecord {
    pub principal: Arc<Principal>,
    /// Distinguishes this principal from an earlier one of the same name:
    /// keys are bound to it.
    pub uid: String,
    pub active: bool,
}

/// The common face of the two principal rows.
pub trait PrincipalRow: Sized + Send + 'static {
    const KIND: PrincipalKind;
    fn org_id(&self) -> &str;
    fn id(&self) -> &str;
    fn uid(&self) -> &str;
    fn roles(&self) -> Roles;
    fn revision(&self) -> i64;

    fn principal_name(&self) -> PrincipalName {
        PrincipalName {
            org: self.org_id().to_owned(),
            kind: Self::KIND,
            id: self.id().to_owned(),
        }
    }

    fn etag(&self) -> String {
        etag(self.uid(), self.revision())
    }
}

impl PrincipalRow for UserRow {
    const KIND: PrincipalKind = PrincipalKind::User;
    fn org_id(&self) -> &str {
        &self.org_id
    }
    fn id(&self) -> &str {
        &self.user_id
    }
    fn uid(&self) -> &str {
        &self.uid
    }
    fn roles(&self) -> Roles {
        Roles::from_stored(&self.roles)
    }
    fn revision(&self) -> i64 {
        self.revision
    }
}

impl PrincipalRow for ServiceAccountRow {
    const KIND: PrincipalKind = PrincipalKind::ServiceAccount;
    fn org_id(&self) -> &str {
        &self.org_id
    }
    fn id(&self) -> &str {
        &self.sa_id
    }
    fn uid(&self) -> &str {
        &self.uid
    }
    fn roles(&self) -> Roles {
        Roles::from_stored(&self.roles)
    }
    fn revision(&self) -> i64 {
        self.revision
    }
}

fn load_user(conn: &mut DbConnection, org: &str, id: &str) -> Result<Option<UserRow>> {
    Ok(users::table
        .find((org, id))
        .select(UserRow::as_select())
        .first(conn)
        .optional()?)
}

fn load_sa(conn: &mut DbConnection, org: &str, id: &str) -> Result<Option<ServiceAccountRow>> {
    Ok(service_accounts::table
        .find((org, id))
        .select(ServiceAccountRow::as_select())
        .first(conn)
        .optional()?)
}

/// Loads the roles and state of any principal.
fn load_record(conn: &mut DbConnection, name: &PrincipalName) -> Result<Option<PrincipalRecord>> {
    let found = match name.kind {
        PrincipalKind::User => {
            load_user(conn, &name.org, &name.id)?.map(|r| (r.roles(), r.state, r.uid))
        }
        PrincipalKind::ServiceAccount => {
            load_sa(conn, &name.org, &name.id)?.map(|r| (r.roles(), r.state, r.uid))
        }
    };
    Ok(found.map(|(roles, state, uid)| PrincipalRecord {
        principal: Arc::new(Principal {
            org: name.org.clone(),
            kind: name.kind,
            id: name.id.clone(),
            roles,
        }),
        uid,
        active: state == ACTIVE,
    }))
}

/// NOT_FOUND for the parent organization of a create, checked in the
/// transaction so a concurrent org delete cannot leave an orphan.
fn require_org(conn: &mut DbConnection, org: &str) -> Result<()> {
    organizations::load(conn, org)?.map(|_| ()).ok_or_else(|| {
        Error::not_found(
            OrgName {
                org: org.to_owned(),
            }
            .to_string(),
        )
    })
}

/// Deletes a principal's keys, for the delete of the principal itself.
fn delete_keys_of(conn: &mut DbConnection, name: &PrincipalName) -> Result<()> {
    diesel::delete(
        api_keys::table
            .filter(api_keys::org_id.eq(&name.org))
            .filter(api_keys::owner_kind.eq(name.kind.code()))
            .filter(api_keys::owner_id.eq(&name.id)),
    )
    .execute(conn)?;
    Ok(())
}

/// Checks the etag and, through `guard`, the caller's right to touch the
/// current row; returns it.
fn current<R: PrincipalRow>(
    loaded: Option<R>,
    name: &PrincipalName,
    sent_etag: &str,
    guard: &dyn Fn(&R) -> Result<()>,
) -> Result<R> {
    let current = loaded.ok_or_else(|| Error::not_found(name.to_string()))?;
    check_etag(&name.to_string(), sent_etag, &current.etag())?;
    guard(&current)?;
    Ok(current)
}

fn email_exists(org: &str, email: &str) -> Error {
    Error::AlreadyExists {
        resource: format!("a user with email {email} in organizations/{org}"),
    }
}

/// A guard that allows everything.
pub fn no_guard<R>(_: &R) -> Result<()> {
    Ok(())
}

impl Store {
    /// Resolves a principal for authentication, through the cache.
    pub async fn principal_record(
        &self,
        name: PrincipalName,
    ) -> Result<Option<Arc<PrincipalRecord>>> {
        let key = (name.org.clone(), name.kind, name.id.clone());
        if let Some(hit) = self.caches.principals.get(&key) {
            return Ok(Some(hit));
        }
        let record = self.db.run(move |conn| load_record(conn, &name)).await?;
        Ok(record.map(|r| {
            let r = Arc::new(r);
            self.caches.principals.insert(key, r.clone());
            r
        }))
    }

    fn forget_principal(&self, name: &PrincipalName) {
        self.caches
            .principals
            .invalidate(&(name.org.clone(), name.kind, name.id.clone()));
    }

    /// After a delete: the principal and every cached key of it.
    fn forget_principal_and_keys(&self, name: &PrincipalName) {
        self.forget_principal(name);
        let (org, kind, id) = (name.org.clone(), name.kind.code(), name.id.clone());
        let _ = self.caches.keys.invalidate_entries_if(move |_, v| {
            v.as_ref()
                .is_some_and(|k| k.org_id == org && k.owner_kind == kind && k.owner_id == id)
        });
    }

    // === users ===

    pub async fn create_user(&self, row: UserRow) -> Result<UserRow> {
        let created = self
            .db
            .write(move |conn| {
                require_org(conn, &row.org_id)?;
                let name = row.principal_name().to_string();
                // Say which of id and email is taken. Checked before the
                // insert: after a failed statement PostgreSQL refuses every
                // further query of the transaction.
                if load_user(conn, &row.org_id, &row.user_id)?.is_some() {
                    return Err(Error::AlreadyExists { resource: name });
                }
                let email_taken = users::table
                    .filter(users::org_id.eq(&row.org_id))
                    .filter(users::email.eq(&row.email))
                    .count()
                    .get_result::<i64>(conn)?
                    > 0;
                if email_taken {
                    return Err(email_exists(&row.org_id, &row.email));
                }
                match diesel::insert_into(users::table).values(&row).execute(conn) {
                    // A concurrent create won the race between check and insert.
                    Err(e) if is_unique_violation(&e) => {
                        return Err(Error::AlreadyExists {
                            resource: format!("{name} (or its email)"),
                        });
                    }
                    other => other?,
                };
                append_event(conn, &row.org_id, "user.created", &name, row.payload())?;
                Ok(row)
            })
            .await?;
        self.forget_principal(&created.principal_name());
        Ok(created)
    }

    pub async fn get_user(&self, name: &PrincipalName) -> Result<UserRow> {
        let n = name.clone();
        self.db
            .run(move |conn| load_user(conn, &n.org, &n.id))
            .await?
            .ok_or_else(|| Error::not_found(name.to_string()))
    }

    pub async fn list_users(
        &self,
        org: String,
        filter: Vec<Predicate>,
        page: PageRequest,
    ) -> Result<(Vec<UserRow>, String)> {
        let limit = page.fetch_limit();
        let after = page.after.clone();
        let mut rows = self
            .db
            .run(move |conn| {
                let mut q = users::table
                    .select(UserRow::as_select())
                    .filter(users::org_id.eq(org))
                    .into_boxed();
                if let Some(after) = after {
                    q = q.filter(users::user_id.gt(after));
                }
                for p in &filter {
                    q = match p.field {
                        "state" => apply_op!(q, users::state, p.op, small(p)?),
                        "display_name" => apply_op!(q, users::display_name, p.op, text(p)?),
                        "email" => apply_op!(q, users::email, p.op, text(p)?.to_lowercase()),
                        "create_time" => apply_op!(q, users::create_time, p.op, int(p)?),
                        _ => return Err(unknown(p)),
                    };
                }
                Ok(q.order(users::user_id.asc()).limit(limit).load(conn)?)
            })
            .await?;
        let next = page.finish(&mut rows, |r| r.user_id.clone());
        Ok((rows, next))
    }

    /// Updates a user. `guard` sees the current row inside the transaction
    /// (for checks such as "may this caller manage an admin?").
    pub async fn update_user(
        &self,
        name: &PrincipalName,
        sent_etag: String,
        guard: impl Fn(&UserRow) -> Result<()> + Send + 'static,
        changes: UserChanges,
        event: &'static str,
    ) -> Result<UserRow> {
        let n = name.clone();
        let updated = self
            .db
            .write(move |conn| {
                let cur = current(load_user(conn, &n.org, &n.id)?, &n, &sent_etag, &guard)?;
                let result = diesel::update(
                    users::table
                        .find((&n.org, &n.id))
                        .filter(users::revision.eq(cur.revision)),
                )
                .set((
                    &changes,
                    users::update_time.eq(now_micros()),
                    users::revision.eq(cur.revision + 1),
                ))
                .execute(conn);
                let count = match result {
                    Err(e) if is_unique_violation(&e) => {
                        return Err(email_exists(
                            &n.org,
                            changes.email.as_deref().unwrap_or("that email"),
                        ));
                    }
                    other => other?,
                };
                if count == 0 {
                    return Err(Error::Aborted {
                        resource: n.to_string(),
                    });
                }
                let row = load_user(conn, &n.org, &n.id)?
                    .ok_or_else(|| Error::not_found(n.to_string()))?;
                append_event(conn, &n.org, event, &n.to_string(), row.payload())?;
                Ok(row)
            })
            .await?;
        self.forget_principal(name);
        Ok(updated)
    }

    pub async fn delete_user(
        &self,
        name: &PrincipalName,
        sent_etag: String,
        guard: impl Fn(&UserRow) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let n = name.clone();
        self.db
            .write(move |conn| {
                let cur = current(load_user(conn, &n.org, &n.id)?, &n, &sent_etag, &guard)?;
                delete_keys_of(conn, &n)?;
                diesel::delete(users::table.find((&n.org, &n.id))).execute(conn)?;
                append_event(conn, &n.org, "user.deleted", &n.to_string(), cur.payload())?;
                Ok(())
            })
            .await?;
        self.forget_principal_and_keys(name);
        Ok(())
    }

    // === service accounts ===

    pub async fn create_service_account(
        &self,
        row: ServiceAccountRow,
    ) -> Result<ServiceAccountRow> {
        let created = self
            .db
            .write(move |conn| {
                require_org(conn, &row.org_id)?;
                insert_service_account(conn, &row)?;
                Ok(row)
            })
            .await?;
        self.forget_principal(&created.principal_name());
        Ok(created)
    }

    pub async fn get_service_account(&self, name: &PrincipalName) -> Result<ServiceAccountRow> {
        let n = name.clone();
        self.db
            .run(move |conn| load_sa(conn, &n.org, &n.id))
            .await?
            .ok_or_else(|| Error::not_found(name.to_string()))
    }

    pub async fn list_service_accounts(
        &self,
        org: String,
        filter: Vec<Predicate>,
        page: PageRequest,
    ) -> Result<(Vec<ServiceAccountRow>, String)> {
        let limit = page.fetch_limit();
        let after = page.after.clone();
        let mut rows = self
            .db
            .run(move |conn| {
                let mut q = service_accounts::table
                    .select(ServiceAccountRow::as_select())
                    .filter(service_accounts::org_id.eq(org))
                    .into_boxed();
                if let Some(after) = after {
                    q = q.filter(service_accounts::sa_id.gt(after));
                }
                for p in &filter {
                    q = match p.field {
                        "state" => apply_op!(q, service_accounts::state, p.op, small(p)?),
                        "display_name" => {
                            apply_op!(q, service_accounts::display_name, p.op, text(p)?)
                        }
                        "create_time" => apply_op!(q, service_accounts::create_time, p.op, int(p)?),
                        _ => return Err(unknown(p)),
                    };
                }
                Ok(q.order(service_accounts::sa_id.asc())
                    .limit(limit)
                    .load(conn)?)
            })
            .await?;
        let next = page.finish(&mut rows, |r| r.sa_id.clone());
        Ok((rows, next))
    }

    pub async fn update_service_account(
        &self,
        name: &PrincipalName,
        sent_etag: String,
        guard: impl Fn(&ServiceAccountRow) -> Result<()> + Send + 'static,
        changes: ServiceAccountChanges,
    ) -> Result<ServiceAccountRow> {
        let n = name.clone();
        let updated = self
            .db
            .write(move |conn| {
                let cur = current(load_sa(conn, &n.org, &n.id)?, &n, &sent_etag, &guard)?;
                let count = diesel::update(
                    service_accounts::table
                        .find((&n.org, &n.id))
                        .filter(service_accounts::revision.eq(cur.revision)),
                )
                .set((
                    &changes,
                    service_accounts::update_time.eq(now_micros()),
                    service_accounts::revision.eq(cur.revision + 1),
                ))
                .execute(conn)?;
                if count == 0 {
                    return Err(Error::Aborted {
                        resource: n.to_string(),
                    });
                }
                let row =
                    load_sa(conn, &n.org, &n.id)?.ok_or_else(|| Error::not_found(n.to_string()))?;
                append_event(
                    conn,
                    &n.org,
                    "serviceAccount.updated",
                    &n.to_string(),
                    row.payload(),
                )?;
                Ok(row)
            })
            .await?;
        self.forget_principal(name);
        Ok(updated)
    }

    pub async fn delete_service_account(
        &self,
        name: &PrincipalName,
        sent_etag: String,
        guard: impl Fn(&ServiceAccountRow) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let n = name.clone();
        self.db
            .write(move |conn| {
                let cur = current(load_sa(conn, &n.org, &n.id)?, &n, &sent_etag, &guard)?;
                delete_keys_of(conn, &n)?;
                diesel::delete(service_accounts::table.find((&n.org, &n.id))).execute(conn)?;
                append_event(
                    conn,
                    &n.org,
                    "serviceAccount.deleted",
                    &n.to_string(),
                    cur.payload(),
                )?;
                Ok(())
            })
            .await?;
        self.forget_principal_and_keys(name);
        Ok(())
    }
}

/// Inserts a service account and its event; shared with bootstrap, which
/// creates the admin account inside its own transaction.
pub(crate) fn insert_service_account(
    conn: &mut DbConnection,
    row: &ServiceAccountRow,
) -> Result<()> {
    let name = row.principal_name().to_string();
    match diesel::insert_into(service_accounts::table)
        .values(row)
        .execute(conn)
    {
        Err(e) if is_unique_violation(&e) => return Err(Error::AlreadyExists { resource: name }),
        other => other?,
    };
    append_event(
        conn,
        &row.org_id,
        "serviceAccount.created",
        &name,
        row.payload(),
    )
}
