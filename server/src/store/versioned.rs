//! The one write path every resource shares: create with
//! ALREADY_EXISTS on a taken key, and update and delete under optimistic
//! concurrency (etag check, guard, revision-guarded write, event). Each
//! repository passes its diesel query as a closure; the control flow, the
//! rule most likely to drift, is written once here.

use std::fmt;

use diesel::{QueryResult, sql_types::Text};

use super::{DbConnection, Tx, db::is_unique_violation};
use crate::{
    domain::{Error, Result, check_etag},
    events::{After, EventKind},
};

/// A stored resource under optimistic concurrency.
pub trait Versioned: Sized + Send + 'static {
    /// Its resource name.
    type Name: fmt::Display + Send + Sync;

    /// Loads the current row, `None` when there is none. On PostgreSQL,
    /// `lock` takes a row lock for the rest of the transaction, so a
    /// concurrent create of a child (which takes a share lock on its
    /// parent) waits for the decision instead of racing it.
    fn load(conn: &mut DbConnection, name: &Self::Name, lock: Lock) -> Result<Option<Self>>;

    /// The etag of this revision.
    fn etag(&self) -> String;

    /// The organization the row belongs to.
    fn org(&self) -> &str;

    /// The resource message for the event.
    fn after(&self) -> After;
}

/// Which row lock a read takes on PostgreSQL; SQLite write transactions
/// already hold the database's single write lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// A plain read.
    None,
    /// `FOR SHARE`: the row must stay while a child is created.
    Share,
    /// `FOR UPDATE`: the row is about to change or go.
    Update,
}

impl Lock {
    /// The SQL suffix for PostgreSQL.
    fn clause(self) -> &'static str {
        match self {
            Lock::None => "",
            Lock::Share => " FOR SHARE",
            Lock::Update => " FOR UPDATE",
        }
    }
}

/// Takes `lock` on the row of `table` whose key columns equal `key`, on
/// PostgreSQL; returns whether the row exists. On SQLite it only checks
/// existence. `table` and the column names come from our code, never from
/// input; the key values are bound.
pub(crate) fn lock_row(
    conn: &mut DbConnection,
    table: &str,
    key: &[(&str, &str)],
    lock: Lock,
) -> Result<bool> {
    use diesel::RunQueryDsl;
    let DbConnection::Postgres(pg) = conn else {
        return Ok(true);
    };
    let predicate = key
        .iter()
        .enumerate()
        .map(|(i, (col, _))| format!("{col} = ${}", i + 1))
        .collect::<Vec<_>>()
        .join(" AND ");
    let sql = format!("SELECT 1 FROM {table} WHERE {predicate}{}", lock.clause());
    let n = match key {
        [(_, a)] => diesel::sql_query(sql).bind::<Text, _>(*a).execute(pg)?,
        [(_, a), (_, b)] => diesel::sql_query(sql)
            .bind::<Text, _>(*a)
            .bind::<Text, _>(*b)
            .execute(pg)?,
        _ => {
            return Err(Error::Internal(format!(
                "lock_row on {table} with {} key columns",
                key.len()
            )));
        }
    };
    Ok(n > 0)
}

/// Maps a unique-key collision of an insert to ALREADY_EXISTS `name`.
pub(crate) fn inserted(result: QueryResult<usize>, name: impl FnOnce() -> String) -> Result<()> {
    match result {
        Err(e) if is_unique_violation(&e) => Err(Error::AlreadyExists { resource: name() }),
        other => other.map(drop).map_err(Error::from),
    }
}

/// The one Update: load (locked), etag check, `guard` on the current row,
/// the revision-guarded `write` (which must match `revision` and return the
/// rows changed), reload, event.
pub(crate) fn update_versioned<R: Versioned>(
    tx: &mut Tx<'_>,
    name: &R::Name,
    sent_etag: &str,
    guard: &dyn Fn(&R) -> Result<()>,
    write: impl FnOnce(&mut DbConnection, &R) -> Result<usize>,
    kind: EventKind,
) -> Result<R> {
    let resource = name.to_string();
    let current = current(tx, name, &resource, sent_etag, guard)?;
    if write(tx.conn, &current)? == 0 {
        return Err(Error::Aborted { resource });
    }
    let row = R::load(tx.conn, name, Lock::None)?.ok_or_else(|| Error::not_found(&resource))?;
    tx.emit_change(kind, row.org(), resource, &current.after(), row.after())?;
    Ok(row)
}

/// The one Delete: load (locked), etag check, `guard`, `delete` (children
/// first, then the row), event carrying the row as it was.
pub(crate) fn delete_versioned<R: Versioned>(
    tx: &mut Tx<'_>,
    name: &R::Name,
    sent_etag: &str,
    guard: &dyn Fn(&R) -> Result<()>,
    delete: impl FnOnce(&mut DbConnection, &R) -> Result<()>,
    kind: EventKind,
) -> Result<R> {
    let resource = name.to_string();
    let current = current(tx, name, &resource, sent_etag, guard)?;
    delete(tx.conn, &current)?;
    tx.emit(kind, current.org(), resource, current.after())?;
    Ok(current)
}

/// Loads the row to change (locked), checks the etag and runs `guard`.
pub(crate) fn current<R: Versioned>(
    tx: &mut Tx<'_>,
    name: &R::Name,
    resource: &str,
    sent_etag: &str,
    guard: &dyn Fn(&R) -> Result<()>,
) -> Result<R> {
    let current =
        R::load(tx.conn, name, Lock::Update)?.ok_or_else(|| Error::not_found(resource))?;
    check_etag(resource, sent_etag, &current.etag())?;
    guard(&current)?;
    Ok(current)
}
