//! The outbox: where every write appends its events, in its own
//! transaction. See [`crate::events`] for how ids follow commit order.

use base64::{Engine, engine::general_purpose::STANDARD};
use diesel::{ExpressionMethods, RunQueryDsl, sql_types::Text};
use prost::Message;

use super::{DbConnection, schema::outbox};
use crate::{
    domain::{Result, now_micros, timestamp},
    events::{After, Event, EventKind, WriteContext},
};

/// Arbitrary first key of the advisory locks that order an organization's
/// appends ("tg" in ASCII), so they cannot collide with other users of
/// advisory locks on a shared database.
const ORDER_LOCK_SPACE: i32 = 0x7467;

/// Appends the event of one change and returns it (without its id, which
/// the row holds).
pub(crate) fn append(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    kind: EventKind,
    org: &str,
    resource: String,
    after: After,
) -> Result<Event> {
    if let DbConnection::Postgres(pg) = conn {
        // Held until commit: this organization's next append waits, so its
        // id is taken after this transaction is visible.
        diesel::sql_query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind::<diesel::sql_types::Integer, _>(ORDER_LOCK_SPACE)
            .bind::<Text, _>(org)
            .execute(pg)?;
    }
    let now = now_micros();
    let event = Event {
        id: 0,
        r#type: kind.as_str().to_owned(),
        organization: format!("organizations/{org}"),
        actor: ctx.actor().to_owned(),
        request_id: ctx.request_id().to_owned(),
        time: Some(timestamp(now)),
        resource,
        after: Some(after),
    };
    diesel::insert_into(outbox::table)
        .values((
            outbox::org_id.eq(org),
            outbox::event_type.eq(kind.as_str()),
            outbox::resource.eq(&event.resource),
            outbox::actor.eq(ctx.actor()),
            outbox::request_id.eq(ctx.request_id()),
            outbox::payload.eq(STANDARD.encode(event.encode_to_vec())),
            outbox::create_time.eq(now),
        ))
        .execute(conn)?;
    Ok(event)
}
