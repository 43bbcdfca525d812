//! The users and service accounts repositories: the two kinds of principal.
//! They share a lifecycle (roles, state, keys deleted with them), so they
//! share the lookup, the guard and the delete here.

use std::sync::Arc;

use diesel::{
    ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl, SelectableHelper,
    TextExpressionMethods,
};
use tollgate::tollgate::v1::{ServiceAccount, User, service_account, user};

use super::{
    DbConnection, Store, Tx,
    filter::{apply_op, int, small, text, unknown},
    organizations,
    schema::{api_keys, service_accounts, users},
    versioned::{Lock, Versioned, delete_versioned, inserted, lock_row, update_versioned},
};
use crate::{
    domain::{
        Error, Result,
        authz::{Principal, ROOT_ORG, Role, Roles},
        etag,
        filter::{FieldType, Predicate},
        names::{PrincipalKind, PrincipalName, generate_id},
        now_micros,
        page::PageRequest,
        timestamp,
    },
    events::{After, EventKind, WriteContext},
};

/// The stored code of an active principal (`User.State.ACTIVE`, the same
/// number as `ServiceAccount.State.ACTIVE`).
const ACTIVE: i16 = user::State::Active as i16;

/// The fields ListUsers filters on; `list_users` matches each of them.
pub const USER_FILTERS: &[(&str, FieldType)] = &[
    (
        "state",
        FieldType::Enum {
            values: &[user::State::Active as i32, user::State::Disabled as i32],
            name: |v| user::State::try_from(v).ok().map(|s| s.as_str_name()),
        },
    ),
    ("display_name", FieldType::Text),
    ("email", FieldType::Text),
    ("create_time", FieldType::Timestamp),
];

/// The fields ListServiceAccounts filters on; `list_service_accounts`
/// matches each of them.
pub const SERVICE_ACCOUNT_FILTERS: &[(&str, FieldType)] = &[
    (
        "state",
        FieldType::Enum {
            values: &[
                service_account::State::Active as i32,
                service_account::State::Disabled as i32,
            ],
            name: |v| {
                service_account::State::try_from(v)
                    .ok()
                    .map(|s| s.as_str_name())
            },
        },
    ),
    ("display_name", FieldType::Text),
    ("create_time", FieldType::Timestamp),
];

/// A stored user.
#[derive(
    Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = users)]
pub struct UserRow {
    /// The organization.
    pub org_id: String,
    /// The id in `…/users/{user_id}`.
    pub user_id: String,
    /// Unique forever; keys are bound to it.
    pub uid: String,
    /// Shown to people.
    pub display_name: String,
    /// Lower-cased; unique within the organization.
    pub email: String,
    /// `User.State` as stored.
    pub state: i16,
    /// [`Roles`] in their stored form.
    pub roles: String,
    /// argon2id PHC string; `None` until SetPassword.
    pub password_hash: Option<String>,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
    /// Bumped by every update.
    pub revision: i64,
}

impl UserRow {
    /// The resource as the API shows it: never the password hash.
    pub fn to_proto(&self) -> User {
        User {
            name: self.principal_name().to_string(),
            uid: self.uid.clone(),
            display_name: self.display_name.clone(),
            email: self.email.clone(),
            state: i32::from(self.state),
            roles: self.roles().names().map(str::to_owned).collect(),
            has_password: self.password_hash.is_some(),
            create_time: Some(timestamp(self.create_time)),
            update_time: Some(timestamp(self.update_time)),
            etag: Versioned::etag(self),
        }
    }
}

/// The mutable fields of a user; `None` leaves a field unchanged.
#[derive(Debug, Default, diesel::AsChangeset)]
#[diesel(table_name = users)]
pub struct UserChanges {
    /// A new display name.
    pub display_name: Option<String>,
    /// A new (lower-cased) email.
    pub email: Option<String>,
    /// A new `User.State`.
    pub state: Option<i16>,
    /// New roles, stored form.
    pub roles: Option<String>,
    /// A new password hash (`Some(None)` would clear it).
    pub password_hash: Option<Option<String>>,
}

/// A stored service account.
#[derive(
    Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = service_accounts)]
pub struct ServiceAccountRow {
    /// The organization.
    pub org_id: String,
    /// The id in `…/serviceAccounts/{sa_id}`.
    pub sa_id: String,
    /// Unique forever; keys are bound to it.
    pub uid: String,
    /// Shown to people.
    pub display_name: String,
    /// What the account is for.
    pub description: String,
    /// `ServiceAccount.State` as stored.
    pub state: i16,
    /// [`Roles`] in their stored form.
    pub roles: String,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
    /// Bumped by every update.
    pub revision: i64,
}

impl ServiceAccountRow {
    /// The resource as the API shows it.
    pub fn to_proto(&self) -> ServiceAccount {
        ServiceAccount {
            name: self.principal_name().to_string(),
            uid: self.uid.clone(),
            display_name: self.display_name.clone(),
            description: self.description.clone(),
            state: i32::from(self.state),
            roles: self.roles().names().map(str::to_owned).collect(),
            create_time: Some(timestamp(self.create_time)),
            update_time: Some(timestamp(self.update_time)),
            etag: Versioned::etag(self),
        }
    }
}

/// The mutable fields of a service account; `None` leaves a field
/// unchanged.
#[derive(Debug, Default, diesel::AsChangeset)]
#[diesel(table_name = service_accounts)]
pub struct ServiceAccountChanges {
    /// A new display name.
    pub display_name: Option<String>,
    /// A new description.
    pub description: Option<String>,
    /// A new `ServiceAccount.State`.
    pub state: Option<i16>,
    /// New roles, stored form.
    pub roles: Option<String>,
}

/// What the authenticate layer needs of a principal, cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRecord {
    /// The principal, with its name computed once for the hot path.
    pub principal: Arc<Principal>,
    /// Distinguishes this principal from an earlier one of the same name:
    /// keys are bound to it.
    pub uid: String,
    /// Whether it may authenticate at all.
    pub active: bool,
}

/// The common face of the two principal rows.
pub trait PrincipalRow: Sized + Send + 'static {
    /// Users or service accounts.
    const KIND: PrincipalKind;
    /// The organization.
    fn org_id(&self) -> &str;
    /// The id within the organization.
    fn id(&self) -> &str;
    /// Unique forever.
    fn uid(&self) -> &str;
    /// Its roles, parsed.
    fn roles(&self) -> Roles;
    /// The optimistic-concurrency revision.
    fn revision(&self) -> i64;

    /// Its resource name.
    fn principal_name(&self) -> PrincipalName {
        PrincipalName {
            org: self.org_id().to_owned(),
            kind: Self::KIND,
            id: self.id().to_owned(),
        }
    }
}

macro_rules! principal_row {
    ($row:ty, $kind:expr, $id:ident, $after:ident) => {
        impl PrincipalRow for $row {
            const KIND: PrincipalKind = $kind;
            fn org_id(&self) -> &str {
                &self.org_id
            }
            fn id(&self) -> &str {
                &self.$id
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

        impl Versioned for $row {
            type Name = PrincipalName;

            fn load(
                conn: &mut DbConnection,
                name: &PrincipalName,
                lock: Lock,
            ) -> Result<Option<Self>> {
                if lock != Lock::None && !lock_principal(conn, name, lock)? {
                    return Ok(None);
                }
                Self::find(conn, name)
            }

            fn etag(&self) -> String {
                etag(&self.uid, self.revision)
            }

            fn org(&self) -> &str {
                &self.org_id
            }

            fn after(&self) -> After {
                After::$after(self.to_proto())
            }
        }
    };
}

principal_row!(UserRow, PrincipalKind::User, user_id, User);
principal_row!(
    ServiceAccountRow,
    PrincipalKind::ServiceAccount,
    sa_id,
    ServiceAccount
);

impl UserRow {
    fn find(conn: &mut DbConnection, name: &PrincipalName) -> Result<Option<Self>> {
        Ok(users::table
            .find((&name.org, &name.id))
            .select(UserRow::as_select())
            .first(conn)
            .optional()?)
    }
}

impl ServiceAccountRow {
    fn find(conn: &mut DbConnection, name: &PrincipalName) -> Result<Option<Self>> {
        Ok(service_accounts::table
            .find((&name.org, &name.id))
            .select(ServiceAccountRow::as_select())
            .first(conn)
            .optional()?)
    }
}

/// Takes `lock` on a principal's row (PostgreSQL); whether it exists.
pub(crate) fn lock_principal(
    conn: &mut DbConnection,
    name: &PrincipalName,
    lock: Lock,
) -> Result<bool> {
    let (table, id) = match name.kind {
        PrincipalKind::User => ("users", "user_id"),
        PrincipalKind::ServiceAccount => ("service_accounts", "sa_id"),
    };
    lock_row(conn, table, &[("org_id", &name.org), (id, &name.id)], lock)
}

/// The roles, uid and state of any principal, read with `lock`.
pub(crate) fn load_any(
    conn: &mut DbConnection,
    name: &PrincipalName,
    lock: Lock,
) -> Result<Option<(Roles, String, i16)>> {
    Ok(match name.kind {
        PrincipalKind::User => {
            UserRow::load(conn, name, lock)?.map(|r| (r.roles(), r.uid, r.state))
        }
        PrincipalKind::ServiceAccount => {
            ServiceAccountRow::load(conn, name, lock)?.map(|r| (r.roles(), r.uid, r.state))
        }
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

/// Refuses a change that leaves the platform without an active admin of
/// `root`: nobody could then manage tenants, and only an operator's
/// offline `tollgate admin recover-root` would get it back. Called after
/// the change, inside its transaction (and, on PostgreSQL, after the
/// event's append took the organization's lock, so two concurrent
/// demotions of the last two admins cannot both pass).
fn ensure_platform_admin_remains(conn: &mut DbConnection, org: &str) -> Result<()> {
    if org != ROOT_ORG {
        return Ok(());
    }
    // Roles are stored comma-separated; only `admin` contains "admin".
    let admins: i64 = service_accounts::table
        .filter(service_accounts::org_id.eq(ROOT_ORG))
        .filter(service_accounts::state.eq(ACTIVE))
        .filter(service_accounts::roles.like("%admin%"))
        .count()
        .get_result::<i64>(conn)?
        + users::table
            .filter(users::org_id.eq(ROOT_ORG))
            .filter(users::state.eq(ACTIVE))
            .filter(users::roles.like("%admin%"))
            .count()
            .get_result::<i64>(conn)?;
    if admins == 0 {
        return Err(Error::FailedPrecondition {
            reason: "LAST_PLATFORM_ADMIN",
            message: format!(
                "this would leave organizations/{ROOT_ORG} without an active admin; make another principal an admin first"
            ),
        });
    }
    Ok(())
}

/// A new user: owns its uid, timestamps and first revision.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Its name; the id was chosen or generated by the caller.
    pub name: PrincipalName,
    /// Shown to people.
    pub display_name: String,
    /// Lower-cased.
    pub email: String,
    /// `User.State`.
    pub state: i16,
    /// Its roles.
    pub roles: Roles,
}

impl NewUser {
    fn into_row(self) -> UserRow {
        let now = now_micros();
        UserRow {
            org_id: self.name.org,
            user_id: self.name.id,
            uid: generate_id(),
            display_name: self.display_name,
            email: self.email,
            state: self.state,
            roles: self.roles.to_stored(),
            password_hash: None,
            create_time: now,
            update_time: now,
            revision: 1,
        }
    }
}

/// A new service account: owns its uid, timestamps and first revision.
#[derive(Debug, Clone)]
pub struct NewServiceAccount {
    /// Its name; the id was chosen or generated by the caller.
    pub name: PrincipalName,
    /// Shown to people.
    pub display_name: String,
    /// What it is for.
    pub description: String,
    /// `ServiceAccount.State`.
    pub state: i16,
    /// Its roles.
    pub roles: Roles,
}

impl NewServiceAccount {
    fn into_row(self) -> ServiceAccountRow {
        let now = now_micros();
        ServiceAccountRow {
            org_id: self.name.org,
            sa_id: self.name.id,
            uid: generate_id(),
            display_name: self.display_name,
            description: self.description,
            state: self.state,
            roles: self.roles.to_stored(),
            create_time: now,
            update_time: now,
            revision: 1,
        }
    }
}

fn email_exists(org: &str, email: &str) -> Error {
    Error::AlreadyExists {
        resource: format!("a user with email {email} in organizations/{org}"),
    }
}

/// Inserts a service account and its event, in an organization the caller
/// has checked. Shared with bootstrap and recovery.
pub(crate) fn insert_service_account(
    tx: &mut Tx<'_>,
    new: NewServiceAccount,
) -> Result<ServiceAccountRow> {
    let row = new.into_row();
    let name = row.principal_name().to_string();
    inserted(
        diesel::insert_into(service_accounts::table)
            .values(&row)
            .execute(tx.conn),
        || name.clone(),
    )?;
    tx.emit(
        EventKind::ServiceAccountCreated,
        &row.org_id,
        name,
        row.after(),
    )?;
    Ok(row)
}

/// Updates a service account in `tx`; `guard` sees its current roles. The
/// change may not leave `root` without an active admin. Shared with
/// recovery, which repairs `root`'s admin inside its own transaction.
pub(crate) fn update_service_account(
    tx: &mut Tx<'_>,
    name: &PrincipalName,
    sent_etag: &str,
    guard: &dyn Fn(&Roles) -> Result<()>,
    changes: &ServiceAccountChanges,
) -> Result<ServiceAccountRow> {
    let row = update_versioned(
        tx,
        name,
        sent_etag,
        &|cur: &ServiceAccountRow| guard(&cur.roles()),
        |conn, cur: &ServiceAccountRow| {
            Ok(diesel::update(
                service_accounts::table
                    .find((&cur.org_id, &cur.sa_id))
                    .filter(service_accounts::revision.eq(cur.revision)),
            )
            .set((
                changes,
                service_accounts::update_time.eq(now_micros()),
                service_accounts::revision.eq(cur.revision + 1),
            ))
            .execute(conn)?)
        },
        EventKind::ServiceAccountUpdated,
    )?;
    ensure_platform_admin_remains(tx.conn, &row.org_id)?;
    Ok(row)
}

impl Store {
    /// Resolves a principal for authentication, through the cache.
    pub async fn principal_record(
        &self,
        name: PrincipalName,
    ) -> Result<Option<Arc<PrincipalRecord>>> {
        let key = (name.org.clone(), name.kind, name.id.clone());
        let cached = self.caches.principals.get(&key);
        self.caches.lookups.principals.record(cached.is_some());
        if let Some(hit) = cached {
            return Ok(Some(hit));
        }
        let record = self
            .db
            .run(move |conn| {
                Ok(
                    load_any(conn, &name, Lock::None)?.map(|(roles, uid, state)| PrincipalRecord {
                        principal: Arc::new(Principal::new(
                            name.org.clone(),
                            name.kind,
                            name.id.clone(),
                            roles,
                        )),
                        uid,
                        active: state == ACTIVE,
                    }),
                )
            })
            .await?;
        Ok(record.map(|r| {
            let r = Arc::new(r);
            self.caches.principals.insert(key, r.clone());
            r
        }))
    }

    // === users ===

    /// Creates a user in an existing organization; a taken id or email is
    /// ALREADY_EXISTS.
    pub async fn create_user(&self, ctx: &WriteContext, new: NewUser) -> Result<UserRow> {
        self.write(ctx, move |tx| {
            organizations::require(tx.conn, &new.name.org)?;
            let row = new.into_row();
            let name = row.principal_name().to_string();
            // Say which of id and email is taken. Checked before the
            // insert: after a failed statement PostgreSQL refuses every
            // further query of the transaction.
            if UserRow::find(tx.conn, &row.principal_name())?.is_some() {
                return Err(Error::AlreadyExists { resource: name });
            }
            let email_taken = users::table
                .filter(users::org_id.eq(&row.org_id))
                .filter(users::email.eq(&row.email))
                .count()
                .get_result::<i64>(tx.conn)?
                > 0;
            if email_taken {
                return Err(email_exists(&row.org_id, &row.email));
            }
            // A concurrent create won the race between check and insert.
            inserted(
                diesel::insert_into(users::table)
                    .values(&row)
                    .execute(tx.conn),
                || format!("{name} (or its email)"),
            )?;
            tx.emit(EventKind::UserCreated, &row.org_id, name, row.after())?;
            Ok(row)
        })
        .await
    }

    /// Reads a user.
    pub async fn get_user(&self, name: &PrincipalName) -> Result<UserRow> {
        let n = name.clone();
        self.db
            .run(move |conn| UserRow::find(conn, &n))
            .await?
            .ok_or_else(|| Error::not_found(name.to_string()))
    }

    /// The user of `org` with `email` (compared lower-cased), for the
    /// sign-in page; `None` when there is none.
    pub async fn user_by_email(&self, org: &str, email: &str) -> Result<Option<UserRow>> {
        let (org, email) = (org.to_owned(), email.to_lowercase());
        self.db
            .run(move |conn| {
                Ok(users::table
                    .filter(users::org_id.eq(org))
                    .filter(users::email.eq(email))
                    .select(UserRow::as_select())
                    .first(conn)
                    .optional()?)
            })
            .await
    }

    /// One page of an organization's users in id order.
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

    /// Updates a user; `guard` sees the user's current roles inside the
    /// transaction (may this caller manage them?). `kind` tells an update
    /// from a password change.
    pub async fn update_user(
        &self,
        ctx: &WriteContext,
        name: PrincipalName,
        sent_etag: String,
        guard: impl Fn(&Roles) -> Result<()> + Send + 'static,
        changes: UserChanges,
        kind: EventKind,
    ) -> Result<UserRow> {
        self.write(ctx, move |tx| {
            let row = update_versioned(
                tx,
                &name,
                &sent_etag,
                &|cur: &UserRow| guard(&cur.roles()),
                |conn, cur: &UserRow| {
                    let result = diesel::update(
                        users::table
                            .find((&cur.org_id, &cur.user_id))
                            .filter(users::revision.eq(cur.revision)),
                    )
                    .set((
                        &changes,
                        users::update_time.eq(now_micros()),
                        users::revision.eq(cur.revision + 1),
                    ))
                    .execute(conn);
                    match result {
                        Err(e) if super::db::is_unique_violation(&e) => Err(email_exists(
                            &cur.org_id,
                            changes.email.as_deref().unwrap_or("that email"),
                        )),
                        other => Ok(other?),
                    }
                },
                kind,
            )?;
            ensure_platform_admin_remains(tx.conn, &row.org_id)?;
            Ok(row)
        })
        .await
    }

    /// Deletes a user and its keys.
    pub async fn delete_user(
        &self,
        ctx: &WriteContext,
        name: PrincipalName,
        sent_etag: String,
        guard: impl Fn(&Roles) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        self.write(ctx, move |tx| {
            let row = delete_versioned(
                tx,
                &name,
                &sent_etag,
                &|cur: &UserRow| guard(&cur.roles()),
                |conn, cur: &UserRow| {
                    diesel::delete(users::table.find((&cur.org_id, &cur.user_id))).execute(conn)?;
                    delete_keys_of(conn, &cur.principal_name())
                },
                EventKind::UserDeleted,
            )?;
            ensure_platform_admin_remains(tx.conn, &row.org_id)
        })
        .await
    }

    // === service accounts ===

    /// Creates a service account in an existing organization.
    pub async fn create_service_account(
        &self,
        ctx: &WriteContext,
        new: NewServiceAccount,
    ) -> Result<ServiceAccountRow> {
        self.write(ctx, move |tx| {
            organizations::require(tx.conn, &new.name.org)?;
            insert_service_account(tx, new)
        })
        .await
    }

    /// Reads a service account.
    pub async fn get_service_account(&self, name: &PrincipalName) -> Result<ServiceAccountRow> {
        let n = name.clone();
        self.db
            .run(move |conn| ServiceAccountRow::find(conn, &n))
            .await?
            .ok_or_else(|| Error::not_found(name.to_string()))
    }

    /// One page of an organization's service accounts in id order.
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

    /// Updates a service account; `guard` sees its current roles.
    pub async fn update_service_account(
        &self,
        ctx: &WriteContext,
        name: PrincipalName,
        sent_etag: String,
        guard: impl Fn(&Roles) -> Result<()> + Send + 'static,
        changes: ServiceAccountChanges,
    ) -> Result<ServiceAccountRow> {
        self.write(ctx, move |tx| {
            update_service_account(tx, &name, &sent_etag, &guard, &changes)
        })
        .await
    }

    /// Deletes a service account and its keys.
    pub async fn delete_service_account(
        &self,
        ctx: &WriteContext,
        name: PrincipalName,
        sent_etag: String,
        guard: impl Fn(&Roles) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        self.write(ctx, move |tx| {
            let row = delete_versioned(
                tx,
                &name,
                &sent_etag,
                &|cur: &ServiceAccountRow| guard(&cur.roles()),
                |conn, cur: &ServiceAccountRow| {
                    diesel::delete(service_accounts::table.find((&cur.org_id, &cur.sa_id)))
                        .execute(conn)?;
                    delete_keys_of(conn, &cur.principal_name())
                },
                EventKind::ServiceAccountDeleted,
            )?;
            super::oauth_clients::disable_clients_of(tx, &row.org_id, &row.sa_id)?;
            ensure_platform_admin_remains(tx.conn, &row.org_id)
        })
        .await
    }
}

/// `roles` lowered to at most `cap`, for a key whose minter held `cap`:
/// roles are nested (an admin may do all an editor may), so an admin owner
/// acts through such a key as an editor. `None` (an unknown stored cap)
/// keeps nothing rather than guessing.
pub(crate) fn capped(roles: &Roles, cap: Option<Role>) -> Roles {
    match cap {
        None => Roles::default(),
        Some(cap) => Roles::new(roles.iter().map(|r| r.min(cap)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capping_lowers_roles_to_the_minters() {
        let admin = Roles::new(vec![Role::Admin]);
        assert_eq!(
            capped(&admin, Some(Role::Editor)),
            Roles::new(vec![Role::Editor])
        );
        let viewer = Roles::new(vec![Role::Viewer]);
        assert_eq!(capped(&viewer, Some(Role::Editor)), viewer);
        assert_eq!(capped(&admin, None), Roles::default());
    }
}
