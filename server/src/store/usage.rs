//! The usage repository: the flush's batched upserts into `usage_minutes`
//! with each used key's `api_keys.last_used_time`, and GetUsage's
//! aggregation.
//!
//! Plain SQL both backends run alike (SQLite 3.35+ bundled, PostgreSQL):
//! `WITH v(…) AS (VALUES …)` feeding `INSERT … ON CONFLICT DO UPDATE` and
//! `UPDATE … FROM`, and hour and day buckets as integer arithmetic on the
//! microsecond column. Only the placeholders differ (`?` or `$n`).
//! Statements are batched in chunks far below either backend's limit on
//! bound parameters.

use std::{collections::BTreeMap, sync::Arc};

use diesel::{
    RunQueryDsl,
    query_builder::BoxedSqlQuery,
    sql_types::{BigInt, Text},
};

use super::{DbConnection, Store, db::MultiBackend};
use crate::{
    domain::{Result, names::ApiKeyName},
    usage::{Granularity, Record, UsageQuery, UsageRow, query::MAX_RECORDS},
};

/// Rows per upsert statement: 8 parameters each.
const UPSERT_CHUNK: usize = 1000;
/// Keys per `last_used_time` statement: 3 parameters each.
const TOUCH_CHUNK: usize = 1000;

/// SQL text under construction, numbering placeholders the way the
/// connection's backend wants them.
struct Sql {
    text: String,
    sqlite: bool,
    params: usize,
}

impl Sql {
    fn new(conn: &DbConnection, text: &str) -> Self {
        Self {
            text: text.to_owned(),
            sqlite: matches!(conn, DbConnection::Sqlite(_)),
            params: 0,
        }
    }

    fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Appends the next placeholder.
    fn param(&mut self) -> &mut Self {
        self.params += 1;
        if self.sqlite {
            self.text.push('?');
        } else {
            self.text.push('$');
            self.text.push_str(itoa::Buffer::new().format(self.params));
        }
        self
    }

    /// `(p, p, …)` with `n` placeholders.
    fn tuple(&mut self, n: usize) -> &mut Self {
        self.push("(");
        for i in 0..n {
            if i > 0 {
                self.push(", ");
            }
            self.param();
        }
        self.push(")")
    }

    fn query<'f>(&self) -> BoxedSqlQuery<'f, MultiBackend, diesel::query_builder::SqlQuery> {
        diesel::sql_query(self.text.clone()).into_boxed()
    }
}

impl Store {
    /// Writes one flush in one transaction: adds `records` to the stored
    /// minutes (rows of organizations deleted meanwhile are skipped: their
    /// usage went with them) and raises `last_used_time` of every key used
    /// to the latest minute it was seen in. Not an event: usage is not a
    /// change of the key, so neither its revision nor its etag moves.
    pub async fn write_usage(&self, records: Arc<Vec<Record>>) -> Result<()> {
        self.db
            .write(move |conn| {
                for chunk in records.chunks(UPSERT_CHUNK) {
                    upsert(conn, chunk)?;
                }
                let used = last_used(&records);
                let used: Vec<_> = used.iter().collect();
                for chunk in used.chunks(TOUCH_CHUNK) {
                    touch_keys(conn, chunk)?;
                }
                Ok(())
            })
            .await
    }

    /// The stored usage `query` asks for, bucketed and ordered by start,
    /// principal, key and method; at most [`MAX_RECORDS`] + 1 rows, so the
    /// caller can tell the answer would be too large.
    pub async fn read_usage(&self, query: UsageQuery) -> Result<Vec<UsageRow>> {
        self.db.run(move |conn| read(conn, &query)).await
    }
}

/// Adds `records` to `usage_minutes`, for organizations that still exist.
fn upsert(conn: &mut DbConnection, records: &[Record]) -> Result<()> {
    let mut sql = Sql::new(
        conn,
        "WITH v (org_id, bucket_start, principal, api_key, method, calls, refused, cost) AS (VALUES ",
    );
    for (i, _) in records.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.tuple(8);
    }
    // The WHERE also settles SQLite's INSERT … SELECT … ON CONFLICT parse.
    sql.push(
        ") INSERT INTO usage_minutes \
         (org_id, bucket_start, principal, api_key, method, calls, refused, cost) \
         SELECT org_id, bucket_start, principal, api_key, method, calls, refused, cost FROM v \
         WHERE EXISTS (SELECT 1 FROM organizations o WHERE o.org_id = v.org_id) \
         ON CONFLICT (org_id, bucket_start, principal, api_key, method) DO UPDATE SET \
         calls = usage_minutes.calls + excluded.calls, \
         refused = usage_minutes.refused + excluded.refused, \
         cost = usage_minutes.cost + excluded.cost",
    );
    let mut q = sql.query();
    for r in records {
        let k = &r.key;
        q = q
            .bind::<Text, _>(&*k.org)
            .bind::<BigInt, _>(k.bucket_start)
            .bind::<Text, _>(&*k.principal)
            .bind::<Text, _>(&*k.api_key)
            .bind::<Text, _>(&*k.method)
            .bind::<BigInt, _>(stored(r.counts.calls))
            .bind::<BigInt, _>(stored(r.counts.refused))
            .bind::<BigInt, _>(stored(r.counts.cost));
    }
    q.execute(conn)?;
    Ok(())
}

/// A count as the BIGINT column holds it.
fn stored(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The latest minute each API key was seen in, by (organization, key id),
/// in key order (one lock order on every replica).
fn last_used(records: &[Record]) -> BTreeMap<(String, String), i64> {
    let mut out: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in records.iter().filter(|r| !r.key.api_key.is_empty()) {
        // The authenticate layer made these names: a bad one is a bug,
        // not a reason to fail the flush.
        let Ok(name) = ApiKeyName::parse("api_key", &r.key.api_key) else {
            tracing::warn!(api_key = %r.key.api_key, "usage of an unparseable API key name");
            continue;
        };
        let t = out.entry((name.owner.org, name.key)).or_insert(i64::MIN);
        *t = (*t).max(r.key.bucket_start);
    }
    out
}

/// Raises `last_used_time` of each key to its minute, never lowering it.
fn touch_keys(conn: &mut DbConnection, keys: &[(&(String, String), &i64)]) -> Result<()> {
    let mut sql = Sql::new(conn, "WITH v (org_id, key_id, t) AS (VALUES ");
    for (i, _) in keys.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.tuple(3);
    }
    sql.push(
        ") UPDATE api_keys SET last_used_time = v.t FROM v \
         WHERE api_keys.org_id = v.org_id AND api_keys.key_id = v.key_id \
         AND (api_keys.last_used_time IS NULL OR api_keys.last_used_time < v.t)",
    );
    let mut q = sql.query();
    for ((org, key), t) in keys {
        q = q
            .bind::<Text, _>(org.as_str())
            .bind::<Text, _>(key.as_str())
            .bind::<BigInt, _>(**t);
    }
    q.execute(conn)?;
    Ok(())
}

/// One aggregated row as selected.
#[derive(diesel::QueryableByName)]
struct Aggregate {
    #[diesel(sql_type = BigInt)]
    start: i64,
    #[diesel(sql_type = Text)]
    principal: String,
    #[diesel(sql_type = Text)]
    api_key: String,
    #[diesel(sql_type = Text)]
    method: String,
    #[diesel(sql_type = BigInt)]
    calls: i64,
    #[diesel(sql_type = BigInt)]
    refused: i64,
    #[diesel(sql_type = BigInt)]
    cost: i64,
}

fn read(conn: &mut DbConnection, query: &UsageQuery) -> Result<Vec<UsageRow>> {
    // The bucket widths are our constants, never input.
    let (start, group) = match query.granularity.width_micros() {
        Some(_) if query.granularity == Granularity::Minute => ("bucket_start".to_owned(), "1, "),
        Some(w) => (format!("(bucket_start / {w}) * {w}"), "1, "),
        None => ("MIN(bucket_start)".to_owned(), ""),
    };
    let mut sql = Sql::new(conn, "SELECT ");
    sql.push(&start).push(
        " AS start, principal, api_key, method, \
         CAST(SUM(calls) AS BIGINT) AS calls, \
         CAST(SUM(refused) AS BIGINT) AS refused, \
         CAST(SUM(cost) AS BIGINT) AS cost \
         FROM usage_minutes WHERE org_id = ",
    );
    sql.param().push(" AND bucket_start >= ").param();
    sql.push(" AND bucket_start < ").param();
    let filters = [
        ("principal", &query.principal),
        ("api_key", &query.api_key),
        ("method", &query.method),
    ];
    for (column, value) in filters {
        if value.is_some() {
            sql.push(" AND ").push(column).push(" = ").param();
        }
    }
    sql.push(" GROUP BY ")
        .push(group)
        .push("2, 3, 4 ORDER BY ")
        .push(group)
        .push("2, 3, 4 LIMIT ")
        .push(itoa::Buffer::new().format(MAX_RECORDS + 1));
    let mut q = sql
        .query()
        .bind::<Text, _>(query.org.clone())
        .bind::<BigInt, _>(query.start)
        .bind::<BigInt, _>(query.end);
    for (_, value) in filters {
        if let Some(v) = value {
            q = q.bind::<Text, _>(v.clone());
        }
    }
    let rows: Vec<Aggregate> = q.load(conn)?;
    Ok(rows
        .into_iter()
        .map(|a| UsageRow {
            start: if query.granularity == Granularity::Total {
                query.start
            } else {
                a.start
            },
            principal: a.principal,
            api_key: a.api_key,
            method: a.method,
            calls: a.calls,
            refused: a.refused,
            cost: a.cost,
        })
        .collect())
}
