//! The organizations repository.

use std::sync::Arc;

use diesel::{ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl, SelectableHelper};

use super::{
    DbConnection, EventPayload, Store, append_event,
    db::is_unique_violation,
    filter::{apply_op, int, small, text, unknown},
    schema::{api_keys, organizations, service_accounts, users},
};
use crate::domain::{
    Error, Result, check_etag, etag, filter::Predicate, names::OrgName, now_micros,
    page::PageRequest,
};

/// Stored state codes; the same numbers as `Organization.State`.
pub const ACTIVE: i16 = 1;
pub const SUSPENDED: i16 = 2;

#[derive(
    Debug, Clone, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = organizations)]
pub struct OrganizationRow {
    pub org_id: String,
    pub uid: String,
    pub display_name: String,
    pub state: i16,
    pub create_time: i64,
    pub update_time: i64,
    pub revision: i64,
}

impl OrganizationRow {
    pub fn name(&self) -> String {
        format!("organizations/{}", self.org_id)
    }

    pub fn etag(&self) -> String {
        etag(&self.uid, self.revision)
    }
}

/// The mutable fields; `None` leaves a field unchanged.
#[derive(Debug, Default, diesel::AsChangeset)]
#[diesel(table_name = organizations)]
pub struct OrganizationChanges {
    pub display_name: Option<String>,
    pub state: Option<i16>,
}

pub(crate) fn load(conn: &mut DbConnection, org: &str) -> Result<Option<OrganizationRow>> {
    Ok(organizations::table
        .find(org)
        .select(OrganizationRow::as_select())
        .first(conn)
        .optional()?)
}

/// Inserts an organization and its event; a taken id is ALREADY_EXISTS.
/// Shared with bootstrap, which creates `root` in a larger transaction.
pub(crate) fn insert(conn: &mut DbConnection, row: &OrganizationRow) -> Result<()> {
    match diesel::insert_into(organizations::table)
        .values(row)
        .execute(conn)
    {
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::AlreadyExists {
                resource: row.name(),
            });
        }
        other => other?,
    };
    append_event(
        conn,
        &row.org_id,
        "organization.created",
        &row.name(),
        row.payload(),
    )
}

impl Store {
    /// Inserts an organization; a taken id is ALREADY_EXISTS.
    pub async fn create_organization(&self, row: OrganizationRow) -> Result<OrganizationRow> {
        let id = row.org_id.clone();
        let created = self
            .db
            .write(move |conn| {
                insert(conn, &row)?;
                Ok(row)
            })
            .await?;
        self.caches.orgs.invalidate(&id);
        Ok(created)
    }

    /// Reads an organization through the cache.
    pub async fn get_organization(&self, org: &str) -> Result<Arc<OrganizationRow>> {
        if let Some(hit) = self.caches.orgs.get(org) {
            return Ok(hit);
        }
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
        let row = Arc::new(row);
        self.caches.orgs.insert(org.to_owned(), row.clone());
        Ok(row)
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
        org: &str,
        sent_etag: String,
        changes: OrganizationChanges,
    ) -> Result<OrganizationRow> {
        let id = org.to_owned();
        let updated = self
            .db
            .write(move |conn| {
                let name = OrgName { org: id.clone() }.to_string();
                let current = load(conn, &id)?.ok_or_else(|| Error::not_found(name.clone()))?;
                check_etag(&name, &sent_etag, &current.etag())?;
                let n = diesel::update(
                    organizations::table
                        .find(&id)
                        .filter(organizations::revision.eq(current.revision)),
                )
                .set((
                    &changes,
                    organizations::update_time.eq(now_micros()),
                    organizations::revision.eq(current.revision + 1),
                ))
                .execute(conn)?;
                if n == 0 {
                    return Err(Error::Aborted { resource: name });
                }
                let row = load(conn, &id)?.ok_or_else(|| Error::not_found(name.clone()))?;
                append_event(conn, &id, "organization.updated", &name, row.payload())?;
                Ok(row)
            })
            .await?;
        self.caches.invalidate_org(org);
        Ok(updated)
    }

    /// Deletes an organization; with members it is refused unless `force`,
    /// which deletes them in the same transaction.
    pub async fn delete_organization(
        &self,
        org: &str,
        sent_etag: String,
        force: bool,
    ) -> Result<()> {
        let id = org.to_owned();
        self.db
            .write(move |conn| {
                let name = OrgName { org: id.clone() }.to_string();
                let current = load(conn, &id)?.ok_or_else(|| Error::not_found(name.clone()))?;
                check_etag(&name, &sent_etag, &current.etag())?;
                let members: i64 = users::table
                    .filter(users::org_id.eq(&id))
                    .count()
                    .get_result::<i64>(conn)?
                    + service_accounts::table
                        .filter(service_accounts::org_id.eq(&id))
                        .count()
                        .get_result::<i64>(conn)?;
                if members > 0 && !force {
                    return Err(Error::FailedPrecondition {
                        reason: "HAS_CHILDREN",
                        message: format!(
                            "{name} still has {members} users and service accounts; delete them first or set force"
                        ),
                    });
                }
                diesel::delete(api_keys::table.filter(api_keys::org_id.eq(&id))).execute(conn)?;
                diesel::delete(users::table.filter(users::org_id.eq(&id))).execute(conn)?;
                diesel::delete(service_accounts::table.filter(service_accounts::org_id.eq(&id)))
                    .execute(conn)?;
                diesel::delete(organizations::table.find(&id)).execute(conn)?;
                append_event(conn, &id, "organization.deleted", &name, current.payload())?;
                Ok(())
            })
            .await?;
        self.caches.invalidate_org(org);
        Ok(())
    }
}
