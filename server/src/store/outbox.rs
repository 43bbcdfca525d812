//! The outbox: where every write appends its events, in its own
//! transaction. See [`crate::events`] for how ids follow commit order.

use base64::{Engine, engine::general_purpose::STANDARD};
use diesel::{
    EscapeExpressionMethods, ExpressionMethods, QueryDsl, RunQueryDsl, TextExpressionMethods,
    dsl::{exists, not},
    sql_types::Text,
};
use prost::Message;

use super::{
    DbConnection, Store,
    filter::{apply_op, int, text, unknown},
    schema::{outbox, outbox_pending},
};
use crate::{
    domain::{
        Error, Result,
        filter::{Op, Predicate, Value},
        now_micros,
        page::PageRequest,
        timestamp,
    },
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
    changed_fields: Vec<String>,
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
        changed_fields,
        after: Some(after),
        trace_parent: ctx.trace_parent().unwrap_or_default().to_owned(),
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
    // For the relay, until it has published the event: the id just taken,
    // read in SQL (RETURNING needs a diesel feature for SQLite that the
    // MultiConnection cannot express).
    let pending = match conn {
        DbConnection::Postgres(_) => "INSERT INTO outbox_pending (id) VALUES (lastval())",
        DbConnection::Sqlite(_) => "INSERT INTO outbox_pending (id) VALUES (last_insert_rowid())",
    };
    diesel::sql_query(pending).execute(conn)?;
    Ok(event)
}

/// The columns a listed event is read from.
type EventRow = (i64, String);

/// `resource = "prefix*"`: the LIKE pattern matching names that start
/// with `prefix`, its own `%`, `_` and `\` escaped.
fn prefix_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Decodes an outbox row's payload into its event, with the row's id.
pub(crate) fn decode(id: i64, payload: &str) -> Result<Event> {
    let bytes = STANDARD
        .decode(payload)
        .map_err(|e| Error::Internal(format!("outbox row {id}: payload is not base64: {e}")))?;
    let mut event = Event::decode(bytes.as_slice())
        .map_err(|e| Error::Internal(format!("outbox row {id}: payload is not an Event: {e}")))?;
    event.id = u64::try_from(id).unwrap_or_default();
    Ok(event)
}

/// Whether `event` passes `filter` (ListEvents' fields), with the same
/// meaning as the query [`Store::list_events`] runs, so a watcher's live
/// events are filtered as its replayed ones were.
pub fn event_matches(filter: &[Predicate], event: &Event) -> bool {
    use std::cmp::Ordering;
    fn compare(op: Op, ord: Ordering) -> bool {
        match op {
            Op::Eq => ord.is_eq(),
            Op::Ne => ord.is_ne(),
            Op::Lt => ord.is_lt(),
            Op::Le => ord.is_le(),
            Op::Gt => ord.is_gt(),
            Op::Ge => ord.is_ge(),
        }
    }
    filter.iter().all(|p| {
        let field = match p.field {
            "type" => &event.r#type,
            "actor" => &event.actor,
            "resource" => &event.resource,
            "time" => {
                let Value::Int(micros) = p.value else {
                    return false;
                };
                let time = event.time.as_ref().map_or(0, |t| {
                    t.seconds
                        .saturating_mul(1_000_000)
                        .saturating_add(i64::from(t.nanos / 1000))
                });
                return compare(p.op, time.cmp(&micros));
            }
            _ => return false,
        };
        let Value::Text(value) = &p.value else {
            return false;
        };
        match (p.field, value.strip_suffix('*')) {
            ("resource", Some(prefix)) => {
                // `=` keeps the names under the prefix, `!=` the others.
                field.starts_with(prefix) == (p.op == Op::Eq)
            }
            _ => compare(p.op, field.as_str().cmp(value.as_str())),
        }
    })
}

/// The pause between two purge batches, so a large purge leaves the
/// table to writers and the relay between its short deletes.
const PURGE_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

impl Store {
    /// Deletes relayed events created before `cutoff_micros`, at most
    /// `batch` rows per statement, pausing between statements, so a large
    /// purge never holds locks on the outbox for long. Unrelayed rows are
    /// never deleted, whatever their age: they are not published yet.
    /// Returns how many rows were deleted (also counted in
    /// `tollgate_events_purged_total`).
    pub async fn purge_events(&self, cutoff_micros: i64, batch: i64) -> Result<u64> {
        let batch = batch.max(1);
        let mut purged = 0u64;
        loop {
            let (selected, deleted) = self
                .db
                .run(move |conn| {
                    // Selected first, then deleted by id: a bounded
                    // DELETE … LIMIT exists on neither backend as such.
                    let ids: Vec<i64> = outbox::table
                        .filter(outbox::create_time.lt(cutoff_micros))
                        .filter(not(exists(
                            outbox_pending::table.filter(outbox_pending::id.eq(outbox::id)),
                        )))
                        .order(outbox::id.asc())
                        .limit(batch)
                        .select(outbox::id)
                        .load(conn)?;
                    if ids.is_empty() {
                        return Ok((0, 0));
                    }
                    let n = diesel::delete(
                        outbox::table
                            .filter(outbox::id.eq_any(&ids))
                            // Re-checked: a row is never deleted unrelayed.
                            .filter(not(exists(
                                outbox_pending::table.filter(outbox_pending::id.eq(outbox::id)),
                            ))),
                    )
                    .execute(conn)?;
                    Ok((ids.len(), n))
                })
                .await?;
            let n = u64::try_from(deleted).unwrap_or(u64::MAX);
            purged = purged.saturating_add(n);
            metrics::counter!("tollgate_events_purged_total").increment(n);
            if selected < usize::try_from(batch).unwrap_or(usize::MAX) {
                return Ok(purged);
            }
            tokio::time::sleep(PURGE_PAUSE).await;
        }
    }

    /// The id of `org`'s latest event, 0 when it has none (retained).
    pub async fn latest_event_id(&self, org: &str) -> Result<u64> {
        let org = org.to_owned();
        let max: Option<i64> = self
            .db
            .run(move |conn| {
                Ok(outbox::table
                    .filter(outbox::org_id.eq(org))
                    .select(diesel::dsl::max(outbox::id))
                    .first(conn)?)
            })
            .await?;
        Ok(max.map_or(0, |id| u64::try_from(id).unwrap_or_default()))
    }

    /// A page of events of `org` (of every organization when `None`),
    /// oldest first, filtered by `filter` (fields `type`, `actor`,
    /// `resource`, `time`; see `ListEventsRequest.filter`). Keyset on the
    /// id: every filter has an index leading with `(org_id, column, id)`.
    pub async fn list_events(
        &self,
        org: Option<String>,
        filter: Vec<Predicate>,
        page: PageRequest,
    ) -> Result<(Vec<Event>, String)> {
        let limit = page.fetch_limit();
        let after =
            match &page.after {
                None => None,
                Some(key) => Some(key.parse::<i64>().map_err(|_| {
                    Error::invalid("page_token", "is not a page token of this list")
                })?),
            };
        let rows: Vec<EventRow> = self
            .db
            .run(move |conn| {
                let mut q = outbox::table
                    .select((outbox::id, outbox::payload))
                    .into_boxed();
                if let Some(org) = org {
                    q = q.filter(outbox::org_id.eq(org));
                }
                if let Some(after) = after {
                    q = q.filter(outbox::id.gt(after));
                }
                for p in &filter {
                    q = match p.field {
                        "type" => apply_op!(q, outbox::event_type, p.op, text(p)?),
                        "actor" => apply_op!(q, outbox::actor, p.op, text(p)?),
                        "resource" => {
                            let value = text(p)?;
                            match (value.strip_suffix('*'), p.op) {
                                (Some(prefix), Op::Eq) => q.filter(
                                    outbox::resource.like(prefix_pattern(prefix)).escape('\\'),
                                ),
                                (Some(prefix), _) => q.filter(
                                    outbox::resource
                                        .not_like(prefix_pattern(prefix))
                                        .escape('\\'),
                                ),
                                (None, _) => apply_op!(q, outbox::resource, p.op, value),
                            }
                        }
                        "time" => apply_op!(q, outbox::create_time, p.op, int(p)?),
                        _ => return Err(unknown(p)),
                    };
                }
                Ok(q.order(outbox::id.asc()).limit(limit).load(conn)?)
            })
            .await?;
        let mut events = rows
            .iter()
            .map(|(id, payload)| decode(*id, payload))
            .collect::<Result<Vec<_>>>()?;
        let next = page.finish(&mut events, |e| e.id.to_string());
        Ok((events, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_patterns_escape_like_wildcards() {
        assert_eq!(
            prefix_pattern("organizations/acme/users/"),
            "organizations/acme/users/%"
        );
        assert_eq!(prefix_pattern("a%b_c\\"), "a\\%b\\_c\\\\%");
    }
}
