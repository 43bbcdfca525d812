//! Every SQL statement, observed through diesel's instrumentation hook: its
//! latency by operation (`tollgate_db_query_duration_seconds{operation}`),
//! and inside a recorded call a client span named `SELECT users` with
//! `db.system.name`, `db.operation.name` and `db.collection.name`.
//!
//! Only the statement's head is read (the SQL text diesel renders before
//! its bind values), and only the operation and the table are kept: no
//! value of a query reaches a span or a label.

use std::{fmt::Write as _, sync::OnceLock, time::Instant};

use diesel::connection::{Instrumentation, InstrumentationEvent};
use metrics::Histogram;
use opentelemetry::{KeyValue, trace::SpanKind};

use super::child::Span;

/// The operations a statement is counted under (a fixed label set).
const OPERATIONS: [&str; 6] = [
    "select",
    "insert",
    "update",
    "delete",
    "transaction",
    "other",
];

fn latency(operation: usize) -> &'static Histogram {
    static H: OnceLock<[Histogram; 6]> = OnceLock::new();
    &H.get_or_init(|| {
        OPERATIONS
            .map(|op| metrics::histogram!("tollgate_db_query_duration_seconds", "operation" => op))
    })[operation]
}

/// Up to [`Head::CAP`] bytes of a statement's rendering; formatting stops
/// there (diesel renders the SQL first, then the binds, which are never
/// read).
struct Head {
    buf: String,
}

impl Head {
    const CAP: usize = 240;

    fn of(query: &dyn std::fmt::Display) -> String {
        let mut head = Head {
            buf: String::with_capacity(Self::CAP),
        };
        // Err only when the cap is reached: what was kept is enough.
        let _ = write!(head, "{query}");
        let mut buf = head.buf;
        if let Some(end) = buf.find(" -- binds:") {
            buf.truncate(end);
        }
        buf
    }
}

impl std::fmt::Write for Head {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = Self::CAP - self.buf.len();
        if s.len() <= room {
            self.buf.push_str(s);
            return Ok(());
        }
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.buf.push_str(&s[..cut]);
        Err(std::fmt::Error)
    }
}

/// A table name as it appears after `FROM`, `INTO` or `UPDATE`, or as the
/// qualifier of the first selected column (diesel's `"users"."id"` on
/// PostgreSQL, `` `users`.`id` `` on SQLite).
fn identifier(s: &str) -> Option<&str> {
    let s = s.trim_start();
    let s = s.strip_prefix(['"', '`']).unwrap_or(s);
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    let name = &s[..end];
    (!name.is_empty() && name.len() <= 63 && !name.as_bytes()[0].is_ascii_digit()).then_some(name)
}

/// The word after the first `keyword` (case-insensitive, whole word).
fn after<'a>(sql: &'a str, keyword: &str) -> Option<&'a str> {
    let upper = sql.to_ascii_uppercase();
    let mut from = 0;
    while let Some(at) = upper[from..].find(keyword) {
        let start = from + at;
        let end = start + keyword.len();
        let before_ok = start == 0 || !upper.as_bytes()[start - 1].is_ascii_alphanumeric();
        let after_ok = upper
            .as_bytes()
            .get(end)
            .is_some_and(|b| b.is_ascii_whitespace() || *b == b'"' || *b == b'`');
        if before_ok && after_ok {
            return identifier(&sql[end..]);
        }
        from = end;
    }
    None
}

/// The statement's operation (an index into [`OPERATIONS`]) and its
/// table, if it names one within its head.
fn classify(sql: &str) -> (usize, Option<&str>) {
    let sql = sql.trim_start();
    let verb = sql
        .split(|c: char| c.is_ascii_whitespace() || c == ';')
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    match verb.as_str() {
        "SELECT" | "WITH" => {
            let table = after(sql, "FROM").or_else(|| {
                // A long column list pushes FROM past the head; diesel
                // qualifies every column with its table.
                let q = sql.find(['"', '`'])?;
                let name = identifier(&sql[q..])?;
                sql[q + name.len() + 2..].starts_with('.').then_some(name)
            });
            (0, table)
        }
        "INSERT" => (1, after(sql, "INTO")),
        "UPDATE" => (2, identifier(&sql[6..])),
        "DELETE" => (3, after(sql, "FROM")),
        "BEGIN" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" => (4, None),
        _ => (5, None),
    }
}

/// The observer set on every pooled connection.
pub struct QueryObserver {
    /// `sqlite` or `postgresql` (`db.system.name`).
    system: &'static str,
    /// The statement running: when it started and its operation.
    running: Option<(Instant, usize)>,
    span: Span,
}

impl QueryObserver {
    /// An observer for a connection to `system`.
    pub fn new(system: &'static str) -> Self {
        Self {
            system,
            running: None,
            span: Span::NONE,
        }
    }
}

impl Instrumentation for QueryObserver {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { query, .. } => {
                let head = Head::of(query);
                let (operation, table) = classify(&head);
                self.running = Some((Instant::now(), operation));
                // The parent is the call's context, attached on this
                // blocking thread by `Db::run`.
                if let Some(parent) = super::sampled_context() {
                    // The statement's own verb (BEGIN, COMMIT, PRAGMA…)
                    // where the label folds several into one.
                    let verb = head
                        .split(|c: char| c.is_ascii_whitespace() || c == ';')
                        .next()
                        .filter(|v| v.len() <= 16 && v.bytes().all(|b| b.is_ascii_alphabetic()))
                        .map(str::to_ascii_uppercase);
                    let op = match (operation, verb) {
                        (4 | 5, Some(v)) => v,
                        _ => OPERATIONS[operation].to_ascii_uppercase(),
                    };
                    let name = match table {
                        Some(t) => format!("{op} {t}"),
                        None => op.clone(),
                    };
                    let system = self.system;
                    let table = table.map(str::to_owned);
                    self.span =
                        Span::under(&parent, name, SpanKind::Client, Vec::new(), move || {
                            let mut a = vec![
                                KeyValue::new("db.system.name", system),
                                KeyValue::new("db.operation.name", op),
                            ];
                            if let Some(t) = table {
                                a.push(KeyValue::new("db.collection.name", t));
                            }
                            a
                        });
                }
            }
            InstrumentationEvent::FinishQuery { error, .. } => {
                if let Some((started, operation)) = self.running.take() {
                    latency(operation).record(started.elapsed().as_secs_f64());
                }
                let span = std::mem::replace(&mut self.span, Span::NONE);
                if error.is_some() {
                    span.fail("statement failed");
                }
                span.end();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_classified_by_operation_and_table() {
        let long_select = format!(
            "SELECT \"users\".\"id\", {} FROM \"users\" WHERE \"users\".\"name\" = $1",
            "\"users\".\"x\", ".repeat(40)
        );
        let head = Head::of(&format!("{long_select} -- binds: [\"secret\"]"));
        assert!(head.len() <= Head::CAP && !head.contains("secret"));
        assert_eq!(classify(&head), (0, Some("users")));
        assert_eq!(
            classify("SELECT 1 FROM principals WHERE x = ?"),
            (0, Some("principals"))
        );
        assert_eq!(
            classify("INSERT INTO \"events\" (\"id\") VALUES ($1)"),
            (1, Some("events"))
        );
        assert_eq!(classify("UPDATE \"jobs\" SET a = 1"), (2, Some("jobs")));
        assert_eq!(
            classify("DELETE FROM \"refresh_tokens\" WHERE 1"),
            (3, Some("refresh_tokens"))
        );
        assert_eq!(
            classify("SELECT `users`.`id`, `users`.`name` FROM"),
            (0, Some("users"))
        );
        assert_eq!(
            classify("INSERT INTO `organizations` (`id`) VALUES (?)"),
            (1, Some("organizations"))
        );
        assert_eq!(classify("BEGIN IMMEDIATE"), (4, None));
        assert_eq!(classify("COMMIT"), (4, None));
        assert_eq!(classify("PRAGMA busy_timeout = 1"), (5, None));
        assert_eq!(classify("SELECT 1"), (0, None));
        assert_eq!(classify(""), (5, None));
    }

    #[test]
    fn the_head_is_bounded_on_a_char_boundary() {
        let sql = format!("SELECT '{}'", "é".repeat(500));
        let head = Head::of(&sql);
        assert!(head.len() <= Head::CAP);
    }
}
