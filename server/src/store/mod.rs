//! Persistence: one repository per resource (`organizations`, `users`,
//! `service_accounts`, `api_keys`), all on one [`Db`] that serves SQLite and
//! PostgreSQL through the same queries, with moka caches for the hot reads.
//! Every write appends its outbox row in the same transaction.

pub mod api_keys;
pub mod cache;
pub mod db;
mod filter;
pub mod organizations;
pub mod principals;
pub mod schema;

use std::sync::Arc;

use diesel::{ExpressionMethods, RunQueryDsl};

pub use cache::{CacheConfig, Caches};
pub use db::{Db, DbConnection, Target};

use crate::domain::{Result, now_micros};
use schema::outbox;

/// The repositories and their caches. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub db: Db,
    pub caches: Arc<Caches>,
}

impl Store {
    pub fn new(db: Db, caches: CacheConfig) -> Self {
        Self {
            db,
            caches: Arc::new(Caches::new(&caches)),
        }
    }
}

/// What a row contributes to its outbox event. Implemented where the proto
/// conversion lives, so the event carries the same message the API returns.
pub trait EventPayload {
    /// The encoded resource, base64.
    fn payload(&self) -> String;
}

/// Appends an event to the outbox on the transaction's connection.
pub(crate) fn append_event(
    conn: &mut DbConnection,
    org_id: &str,
    event_type: &str,
    resource: &str,
    payload: String,
) -> Result<()> {
    diesel::insert_into(outbox::table)
        .values((
            outbox::org_id.eq(org_id),
            outbox::event_type.eq(event_type),
            outbox::resource.eq(resource),
            outbox::payload.eq(payload),
            outbox::create_time.eq(now_micros()),
        ))
        .execute(conn)?;
    Ok(())
}
