//! Reading what a test server appended to its outbox, straight from its
//! database, so tests see exactly what the relay will publish.

use base64::{Engine, engine::general_purpose::STANDARD};
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use prost::Message as _;
use tollgate::tollgate::v1::Event;
use tollgate_server::store::{
    Target,
    schema::{outbox, outbox_pending},
};

/// One outbox row: its id, its columns and the decoded event.
#[derive(Debug, Clone)]
pub struct Row {
    /// The outbox id (the event id).
    pub id: i64,
    /// `org_id` column.
    pub org_id: String,
    /// `event_type` column.
    pub event_type: String,
    /// `actor` column.
    pub actor: String,
    /// `request_id` column.
    pub request_id: String,
    /// The decoded payload.
    pub event: Event,
}

/// Every outbox row with an id above `after`, in id order.
pub async fn rows_after(database_url: &str, after: i64) -> Vec<Row> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = Target::parse(&url)
            .expect("a database URL")
            .establish()
            .expect("a connection to the test database");
        let raw: Vec<(i64, String, String, String, String, String)> = outbox::table
            .filter(outbox::id.gt(after))
            .order(outbox::id.asc())
            .select((
                outbox::id,
                outbox::org_id,
                outbox::event_type,
                outbox::actor,
                outbox::request_id,
                outbox::payload,
            ))
            .load(&mut conn)
            .expect("reading the outbox");
        raw.into_iter()
            .map(|(id, org_id, event_type, actor, request_id, payload)| {
                let bytes = STANDARD.decode(payload).expect("base64 payload");
                Row {
                    id,
                    org_id,
                    event_type,
                    actor,
                    request_id,
                    event: Event::decode(bytes.as_slice()).expect("an encoded Event"),
                }
            })
            .collect()
    })
    .await
    .expect("the outbox reader panicked")
}

/// The highest outbox id so far (0 when empty).
pub async fn last_id(database_url: &str) -> i64 {
    rows_after(database_url, 0).await.last().map_or(0, |r| r.id)
}

/// How many outbox rows the relay has not marked relayed yet.
pub async fn unrelayed(database_url: &str) -> i64 {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = Target::parse(&url)
            .expect("a database URL")
            .establish()
            .expect("a connection to the test database");
        outbox_pending::table
            .count()
            .get_result::<i64>(&mut conn)
            .expect("counting unrelayed rows")
    })
    .await
    .expect("the outbox reader panicked")
}

/// Marks the last `k` rows unrelayed again, as if the relay had died
/// between publishing them and marking them; returns their ids.
pub async fn unmark_last(database_url: &str, k: i64) -> Vec<i64> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = Target::parse(&url)
            .expect("a database URL")
            .establish()
            .expect("a connection to the test database");
        let ids: Vec<i64> = outbox::table
            .order(outbox::id.desc())
            .limit(k)
            .select(outbox::id)
            .load(&mut conn)
            .expect("reading the last ids");
        for id in &ids {
            diesel::insert_into(outbox_pending::table)
                .values(outbox_pending::id.eq(id))
                .execute(&mut conn)
                .expect("unmarking rows");
        }
        ids
    })
    .await
    .expect("the outbox writer panicked")
}
