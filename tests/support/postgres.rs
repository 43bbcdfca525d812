//! One PostgreSQL schema per test server, so tests running in parallel on
//! one database never see each other's rows, and nothing is left behind.
//!
//! The server gets the base URL plus the libpq parameter
//! `options=-csearch_path=<schema>`: every unqualified name it uses
//! (its tables and diesel's `__diesel_schema_migrations`) then resolves to
//! the test schema. It also gets `application_name=<schema>`, so a test can
//! find the server's sessions in `pg_stat_activity`. The schema is dropped with everything in it when the
//! [`PgSchema`] is dropped.

use anyhow::Context as _;
use diesel::{
    Connection, PgConnection, QueryableByName, RunQueryDsl, connection::SimpleConnection,
    sql_types::Text,
};

/// A schema that lives as long as this value.
#[derive(Debug)]
pub struct PgSchema {
    base_url: String,
    name: String,
    url: String,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    v: String,
}

impl PgSchema {
    /// Creates a fresh schema `tg_e2e_<random>` on the database at
    /// `base_url`.
    pub async fn create(base_url: &str) -> anyhow::Result<Self> {
        let name = format!("tg_e2e_{:016x}", rand::random::<u64>());
        let schema = Self {
            base_url: base_url.to_owned(),
            url: confined_url(base_url, &name),
            name,
        };
        let base = schema.base_url.clone();
        let sql = format!("CREATE SCHEMA {}", schema.name);
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut conn = PgConnection::establish(&base)
                .with_context(|| format!("connecting to {}", redact(&base)))?;
            conn.batch_execute(&sql).context("CREATE SCHEMA")?;
            Ok(())
        })
        .await??;
        Ok(schema)
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL to give the server: the base URL confined to this schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `sql` on the base database (not confined to the schema) and
    /// returns its single text column, which must be named `v`.
    pub async fn query_strings(&self, sql: &str) -> anyhow::Result<Vec<String>> {
        query_strings(&self.base_url, sql).await
    }

    /// Whether a schema of this name exists, asked on a fresh connection.
    pub async fn exists(base_url: &str, name: &str) -> anyhow::Result<bool> {
        let rows = query_strings(
            base_url,
            &format!(
                "SELECT schema_name::text AS v FROM information_schema.schemata \
                 WHERE schema_name = '{name}'"
            ),
        )
        .await?;
        Ok(!rows.is_empty())
    }
}

async fn query_strings(url: &str, sql: &str) -> anyhow::Result<Vec<String>> {
    let url = url.to_owned();
    let sql = sql.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let mut conn = PgConnection::establish(&url)
            .with_context(|| format!("connecting to {}", redact(&url)))?;
        let rows: Vec<Row> = diesel::sql_query(&sql)
            .load(&mut conn)
            .with_context(|| format!("running {sql}"))?;
        Ok(rows.into_iter().map(|r| r.v).collect())
    })
    .await?
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let base = self.base_url.clone();
        let sql = format!(
            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {} CASCADE",
            self.name
        );
        let name = self.name.clone();
        // Drop may run on a runtime worker; a blocking connection belongs on
        // a thread of its own.
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let mut conn = PgConnection::establish(&base).map_err(|e| e.to_string())?;
            conn.batch_execute(&sql).map_err(|e| e.to_string())
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test schema {name}: {e}"),
            Err(_) => eprintln!("warning: dropping test schema {name} panicked"),
        }
    }
}

/// `base_url` with the libpq parameters that put `schema` alone on the
/// search path and name the sessions after it.
fn confined_url(base_url: &str, schema: &str) -> String {
    let separator = if base_url.contains('?') { '&' } else { '?' };
    format!("{base_url}{separator}options=-csearch_path%3D{schema}&application_name={schema}")
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_confined_to_the_schema() {
        assert_eq!(
            confined_url("postgres://u@h:5432/db", "tg_x"),
            "postgres://u@h:5432/db?options=-csearch_path%3Dtg_x&application_name=tg_x"
        );
        assert_eq!(
            confined_url("postgres://u@h/db?sslmode=disable", "tg_x"),
            "postgres://u@h/db?sslmode=disable&options=-csearch_path%3Dtg_x&application_name=tg_x"
        );
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://…@h/db");
    }
}
