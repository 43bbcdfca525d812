//! The organizations repository.

use std::sync::Arc;

use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl, SelectableHelper};
use tollgate::tollgate::v1::{Organization, organization::State};

use super::{
    DbConnection, Store, Tx,
    filter::{apply_op, int, small, text, unknown},
    schema::{api_keys, organizations, service_accounts, users},
    versioned::{Lock, Versioned, delete_versioned, inserted, lock_row, update_versioned},
};
use crate::{
    domain::{
        Error, Result, etag,
        filter::{FieldType, Predicate},
        names::{OrgName, generate_id},
        now_micros,
        page::PageRequest,
        timestamp,
    },
    events::{After, EventKind, WriteContext},
};

/// The fields ListOrganizations filters on; `list` matches each of them.
pub const FILTERS: &[(&str, FieldType)] = &[
    (
        "state",
        FieldType::Enum {
            values: &[State::Active as i32, State::Suspended as i32],
            name: |v| State::try_from(v).ok().map(|s| s.as_str_name()),
        },
    ),
    ("display_name", FieldType::Text),
    ("create_time", FieldType::Timestamp),
];

/// A stored organization.
#[derive(
    Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = organizations)]
pub struct OrganizationRow {
    /// The id in `organizations/{org_id}`.
    pub org_id: String,
    /// Unique forever: distinguishes this organization from an earlier one
    /// of the same id.
    pub uid: String,
    /// Shown to people.
    pub display_name: String,
    /// `Organization.State` as stored.
    pub state: i16,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
    /// Bumped by every update; the etag and the optimistic write use it.
    pub revision: i64,
}

impl OrganizationRow {
    /// `organizations/{org_id}`.
    pub fn name(&self) -> String {
        format!("organizations/{}", self.org_id)
    }

    /// Whether calls into the organization are accepted.
    pub fn is_active(&self) -> bool {
        self.state == State::Active as i16
    }

    /// The resource as the API shows it.
    pub fn to_proto(&self) -> Organization {
        Organization {
            name: self.name(),
            uid: self.uid.clone(),
            display_name: self.display_name.clone(),
            state: i32::from(self.state),
            create_time: Some(timestamp(self.create_time)),
            update_time: Some(timestamp(self.update_time)),
            etag: Versioned::etag(self),
        }
    }
}

impl Versioned for OrganizationRow {
    type Name = OrgName;

    fn load(conn: &mut DbConnection, name: &OrgName, lock: Lock) -> Result<Option<Self>> {
        if lock != Lock::None && !lock_row(conn, "organizations", &[("org_id", &name.org)], lock)? {
            return Ok(None);
        }
        load(conn, &name.org)
    }

    fn etag(&self) -> String {
        etag(&self.uid, self.revision)
    }

    fn org(&self) -> &str {
        &self.org_id
    }

    fn after(&self) -> After {
        After::Org(self.to_proto())
    }
}

/// A new organization: owns its uid, timestamps and first revision.
#[derive(Debug, Clone)]
pub struct NewOrganization {
    /// The requested id; `None` generates one.
    pub id: Option<String>,
    /// Shown to people.
    pub display_name: String,
    /// The initial state.
    pub state: State,
}

impl NewOrganization {
    fn into_row(self) -> OrganizationRow {
        let now = now_micros();
        OrganizationRow {
            org_id: self.id.unwrap_or_else(generate_id),
            uid: generate_id(),
            display_name: self.display_name,
            state: self.state as i16,
            create_time: now,
            update_time: now,
            revision: 1,
        }
    }
}

/// An organization as the cache holds it: the row, and the resource as the
/// API shows it, made once per cached row rather than per call (its etag
/// is a SHA-256).
#[derive(Debug, Clone, PartialEq)]
pub struct CachedOrganization {
    /// The stored row.
    pub row: OrganizationRow,
    /// `row.to_proto()`.
    pub proto: Organization,
}

/// The mutable fields; `None` leaves a field unchanged.
#[derive(Debug, Default, diesel::AsChangeset)]
#[diesel(table_name = organizations)]
pub struct OrganizationChanges {
    /// A new display name.
    pub display_name: Option<String>,
    /// A new `Organization.State`.
    pub state: Option<i16>,
}

pub(crate) fn load(conn: &mut DbConnection, org: &str) -> Result<Option<OrganizationRow>> {
    Ok(organizations::table
        .find(org)
        .select(OrganizationRow::as_select())
        .first(conn)
        .optional()?)
}

/// NOT_FOUND unless organization `org` exists; on PostgreSQL it also stays
/// until the transaction ends (a share lock), so a create of a member
/// cannot race the organization's deletion.
pub(crate) fn require(conn: &mut DbConnection, org: &str) -> Result<()> {
    let name = OrgName {
        org: org.to_owned(),
    };
    match OrganizationRow::load(conn, &name, Lock::Share)? {
        Some(_) => Ok(()),
        None => Err(Error::not_found(name.to_string())),
    }
}

/// Inserts an organization and its event. Shared with bootstrap.
pub(crate) fn insert(tx: &mut Tx<'_>, new: NewOrganization) -> Result<OrganizationRow> {
    let row = new.into_row();
    inserted(
        diesel::insert_into(organizations::table)
            .values(&row)
            .execute(tx.conn),
        || row.name(),
    )?;
    tx.emit(
        EventKind::OrganizationCreated,
        &row.org_id,
        row.name(),
        row.after(),
    )?;
    Ok(row)
}

/// Updates an organization in `tx` if `sent_etag` (when not empty) still
/// matches. Shared with recovery, which repairs `root` inside its own
/// transaction.
pub(crate) fn update(
    tx: &mut Tx<'_>,
    name: &OrgName,
    sent_etag: &str,
    changes: &OrganizationChanges,
) -> Result<OrganizationRow> {
    update_versioned(
        tx,
        name,
        sent_etag,
        &|_| Ok(()),
        |conn, cur: &OrganizationRow| {
            Ok(diesel::update(
                organizations::table
                    .find(&cur.org_id)
                    .filter(organizations::revision.eq(cur.revision)),
            )
            .set((
                changes,
                organizations::update_time.eq(now_micros()),
                organizations::revision.eq(cur.revision + 1),
            ))
            .execute(conn)?)
        },
        EventKind::OrganizationUpdated,
    )
}

impl Store {
    /// Creates an organization; a taken id is ALREADY_EXISTS.
    pub async fn create_organization(
        &self,
        ctx: &WriteContext,
        new: NewOrganization,
    ) -> Result<OrganizationRow> {
        self.write(ctx, move |tx| insert(tx, new)).await
    }

    /// Reads an organization through the cache.
    ///
    /// The database read is boxed: its future (a pooled connection, a
    /// blocking task) is over a kilobyte, and unboxed it would make every
    /// caller's future, boxed per call by the gRPC stubs, that large even
    /// when the cache answers. glibc serves a kilobyte or more on a slower
    /// path than smaller blocks (see `tollgate::codec::BUFFER_SIZE`).
    pub async fn get_organization(&self, org: &str) -> Result<Arc<CachedOrganization>> {
        let cached = self.caches.orgs.get(org);
        self.caches.lookups.orgs.record(cached.is_some());
        match cached {
            Some(hit) => Ok(hit),
            None => Box::pin(self.load_organization(org)).await,
        }
    }

    /// Reads an organization from the database into the cache.
    async fn load_organization(&self, org: &str) -> Result<Arc<CachedOrganization>> {
        let id = org.to_owned();
        let row = self
            .db
            .run(move |conn| load(conn, &id))
            .await?
            .ok_or_else(|| {
                Error::not_found(
                    OrgName {
                        org: org.to_owned(),
                    }
                    .to_string(),
                )
            })?;
        let cached = Arc::new(CachedOrganization {
            proto: row.to_proto(),
            row,
        });
        self.caches.orgs.insert(org.to_owned(), cached.clone());
        Ok(cached)
    }

    /// One page of organizations in id order, optionally only `only`.
    pub async fn list_organizations(
        &self,
        only: Option<String>,
        filter: Vec<Predicate>,
        page: PageRequest,
    ) -> Result<(Vec<OrganizationRow>, String)> {
        let limit = page.fetch_limit();
        let after = page.after.clone();
        let mut rows = self
            .db
            .run(move |conn| {
                let mut q = organizations::table
                    .select(OrganizationRow::as_select())
                    .into_boxed();
                if let Some(only) = only {
                    q = q.filter(organizations::org_id.eq(only));
                }
                if let Some(after) = after {
                    q = q.filter(organizations::org_id.gt(after));
                }
                for p in &filter {
                    q = match p.field {
                        "state" => apply_op!(q, organizations::state, p.op, small(p)?),
                        "display_name" => apply_op!(q, organizations::display_name, p.op, text(p)?),
                        "create_time" => apply_op!(q, organizations::create_time, p.op, int(p)?),
                        _ => return Err(unknown(p)),
                    };
                }
                Ok(q.order(organizations::org_id.asc())
                    .limit(limit)
                    .load(conn)?)
            })
            .await?;
        let next = page.finish(&mut rows, |r| r.org_id.clone());
        Ok((rows, next))
    }

    /// Updates an organization if `sent_etag` (when not empty) still matches.
    pub async fn update_organization(
        &self,
        ctx: &WriteContext,
        name: OrgName,
        sent_etag: String,
        changes: OrganizationChanges,
    ) -> Result<OrganizationRow> {
        self.write(ctx, move |tx| update(tx, &name, &sent_etag, &changes))
            .await
    }

    /// Deletes an organization; with members it is refused unless `force`,
    /// which deletes them in the same transaction. The organization row is
    /// locked first, so a member created concurrently either commits before
    /// (and is counted, or deleted with `force`) or finds no organization.
    pub async fn delete_organization(
        &self,
        ctx: &WriteContext,
        name: OrgName,
        sent_etag: String,
        force: bool,
    ) -> Result<()> {
        self.write(ctx, move |tx| {
            delete_versioned(
                tx,
                &name,
                &sent_etag,
                &|_| Ok(()),
                |conn, cur: &OrganizationRow| {
                    let id = &cur.org_id;
                    let members: i64 = users::table
                        .filter(users::org_id.eq(id))
                        .count()
                        .get_result::<i64>(conn)?
                        + service_accounts::table
                            .filter(service_accounts::org_id.eq(id))
                            .count()
                            .get_result::<i64>(conn)?;
                    if members > 0 && !force {
                        return Err(Error::FailedPrecondition {
                            reason: "HAS_CHILDREN",
                            message: format!(
                                "{} still has {members} users and service accounts; delete them first or set force",
                                cur.name()
                            ),
                        });
                    }
                    diesel::delete(api_keys::table.filter(api_keys::org_id.eq(id)))
                        .execute(conn)?;
                    super::webhooks::delete_of_org(conn, id)?;
                    diesel::delete(users::table.filter(users::org_id.eq(id))).execute(conn)?;
                    diesel::delete(service_accounts::table.filter(service_accounts::org_id.eq(id)))
                        .execute(conn)?;
                    diesel::delete(organizations::table.find(id)).execute(conn)?;
                    Ok(())
                },
                EventKind::OrganizationDeleted,
            )
        })
        .await
        .map(drop)
    }
}
