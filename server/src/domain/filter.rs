//! The AIP-160 subset List methods accept: comparisons joined by `AND`,
//! e.g. `state = ACTIVE AND create_time > "2026-01-01T00:00:00Z"`.
//!
//! Hand-written because the Rust crates for AIP-160 either pull in a full
//! CEL engine or are unmaintained; this grammar is a dozen lines.

use std::str::FromStr;

use super::{Error, Result};

/// The field name used in violations.
const FIELD: &str = "filter";

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`: any field type.
    Eq,
    /// `!=`: any field type.
    Ne,
    /// `<`: timestamps only.
    Lt,
    /// `<=`: timestamps only.
    Le,
    /// `>`: timestamps only.
    Gt,
    /// `>=`: timestamps only.
    Ge,
}

/// The type of a filterable field, which decides its operators and how its
/// value is read.
#[derive(Debug, Clone, Copy)]
pub enum FieldType {
    /// A proto enum, compared with = and != to one of `values`, named as
    /// the proto names them (`name` is the generated `as_str_name`), so no
    /// enum name or number is written twice.
    Enum {
        /// The values a filter may name.
        values: &'static [i32],
        /// The proto's name of a value.
        name: fn(i32) -> Option<&'static str>,
    },
    /// Text, compared with = and !=.
    Text,
    /// A timestamp in RFC 3339, compared with any operator.
    Timestamp,
    /// A timestamp that may be unset (`ApiKey.last_used_time`): compared
    /// like [`FieldType::Timestamp`], where an unset field matches no
    /// comparison (as NULL in SQL), and `= null` / `!= null` ask whether
    /// it is unset / set.
    OptionalTimestamp,
}

/// The value of a predicate, already converted to the stored form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Enum codes and timestamps (microseconds).
    Int(i64),
    /// Text fields, as written in the filter.
    Text(String),
    /// `null`, for an [`FieldType::OptionalTimestamp`] compared with = or
    /// != only.
    Null,
}

/// One checked condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predicate {
    /// The filtered field, as the List method named it.
    pub field: &'static str,
    /// How the field is compared with `value`.
    pub op: Op,
    /// What the field is compared with.
    pub value: Value,
}

/// Parses `filter` against the fields a List method allows.
pub fn parse(filter: &str, fields: &[(&'static str, FieldType)]) -> Result<Vec<Predicate>> {
    let tokens = tokenize(filter)?;
    let mut out = Vec::new();
    let mut it = tokens.into_iter().peekable();
    while it.peek().is_some() {
        if !out.is_empty() {
            match it.next() {
                Some(Token::Word(w)) if w == "AND" => {}
                other => {
                    return Err(bad(format!(
                        "expected AND, found {}",
                        describe(other.as_ref())
                    )));
                }
            }
        }
        let name = match it.next() {
            Some(Token::Word(w)) => w,
            other => {
                return Err(bad(format!(
                    "expected a field name, found {}",
                    describe(other.as_ref())
                )));
            }
        };
        let op = match it.next() {
            Some(Token::Op(op)) => op,
            other => {
                return Err(bad(format!(
                    "expected an operator after '{name}', found {}",
                    describe(other.as_ref())
                )));
            }
        };
        let raw = match it.next() {
            Some(Token::Word(w)) | Some(Token::Quoted(w)) => w,
            other => {
                return Err(bad(format!(
                    "expected a value after '{name}', found {}",
                    describe(other.as_ref())
                )));
            }
        };
        let Some((field, ty)) = fields.iter().find(|(f, _)| *f == name) else {
            let names: Vec<_> = fields.iter().map(|(f, _)| *f).collect();
            return Err(bad(format!(
                "cannot filter on '{name}'; filterable fields: {}",
                names.join(", ")
            )));
        };
        let value = match ty {
            FieldType::Enum { values, name } => {
                ensure_equality(field, op)?;
                let code = values
                    .iter()
                    .copied()
                    .find(|v| name(*v) == Some(raw.as_str()))
                    .ok_or_else(|| {
                        let names: Vec<_> = values.iter().filter_map(|v| name(*v)).collect();
                        bad(format!(
                            "'{raw}' is not a value of {field}; expected one of {}",
                            names.join(", ")
                        ))
                    })?;
                Value::Int(i64::from(code))
            }
            FieldType::Text => {
                ensure_equality(field, op)?;
                // No stored text holds them (see `validate::bounded_text`),
                // and PostgreSQL refuses a NUL in a text parameter outright.
                if raw
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\t')
                {
                    return Err(bad(format!(
                        "the value of {field} must not contain control characters"
                    )));
                }
                Value::Text(raw)
            }
            FieldType::OptionalTimestamp if raw == "null" => {
                ensure_equality(field, op)
                    .map_err(|_| bad(format!("{field} compares with null only by = and !=")))?;
                Value::Null
            }
            FieldType::Timestamp | FieldType::OptionalTimestamp => {
                let ts = prost_types::Timestamp::from_str(&raw)
                    .map_err(|_| bad(format!("'{raw}' is not an RFC 3339 time for {field}")))?;
                Value::Int(ts.seconds.saturating_mul(1_000_000) + i64::from(ts.nanos / 1000))
            }
        };
        out.push(Predicate { field, op, value });
    }
    Ok(out)
}

fn ensure_equality(field: &str, op: Op) -> Result<()> {
    if matches!(op, Op::Eq | Op::Ne) {
        Ok(())
    } else {
        Err(bad(format!("{field} supports only = and !=")))
    }
}

fn bad(description: String) -> Error {
    Error::invalid(FIELD, description)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Op(Op),
}

fn describe(t: Option<&Token>) -> String {
    match t {
        None => "the end of the filter".into(),
        Some(Token::Word(w)) => format!("'{w}'"),
        Some(Token::Quoted(w)) => format!("\"{w}\""),
        Some(Token::Op(op)) => format!("operator {op:?}"),
    }
}

fn tokenize(s: &str) -> Result<Vec<Token>> {
    if s.len() > 2000 {
        return Err(bad("must be at most 2000 characters".into()));
    }
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(_, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '"' => {
                chars.next();
                let mut v = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, e)) => v.push(e),
                            None => break,
                        },
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => v.push(c),
                    }
                }
                if !closed {
                    return Err(bad("unterminated string".into()));
                }
                out.push(Token::Quoted(v));
            }
            '=' => {
                chars.next();
                out.push(Token::Op(Op::Eq));
            }
            '!' | '<' | '>' => {
                chars.next();
                let eq = chars.peek().is_some_and(|&(_, n)| n == '=');
                if eq {
                    chars.next();
                }
                out.push(Token::Op(match (c, eq) {
                    ('!', true) => Op::Ne,
                    ('<', false) => Op::Lt,
                    ('<', true) => Op::Le,
                    ('>', false) => Op::Gt,
                    ('>', true) => Op::Ge,
                    _ => return Err(bad("'!' must be followed by '='".into())),
                }));
            }
            c if c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | '@') => {
                let mut w = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | '@' | '+') {
                        w.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Word(w));
            }
            other => return Err(bad(format!("unexpected character '{other}'"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[(&str, FieldType)] = &[
        (
            "state",
            FieldType::Enum {
                values: &[1, 2],
                name: |v| match v {
                    1 => Some("ACTIVE"),
                    2 => Some("DISABLED"),
                    _ => None,
                },
            },
        ),
        ("display_name", FieldType::Text),
        ("create_time", FieldType::Timestamp),
        ("last_used_time", FieldType::OptionalTimestamp),
    ];

    #[test]
    fn parses_conjunctions() {
        let p = parse(
            r#"state = ACTIVE AND display_name != "Acme \"Inc\"" AND create_time >= "2026-01-01T00:00:00Z""#,
            FIELDS,
        )
        .unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[0],
            Predicate {
                field: "state",
                op: Op::Eq,
                value: Value::Int(1)
            }
        );
        assert_eq!(p[1].value, Value::Text("Acme \"Inc\"".into()));
        assert_eq!(p[1].op, Op::Ne);
        assert_eq!(p[2].op, Op::Ge);
        assert_eq!(p[2].value, Value::Int(1_767_225_600_000_000));
        assert!(parse("", FIELDS).unwrap().is_empty());
        assert!(parse("   ", FIELDS).unwrap().is_empty());
    }

    #[test]
    fn optional_timestamps_compare_and_test_for_null() {
        let p = parse(
            r#"last_used_time < "2026-01-01T00:00:00Z" AND last_used_time != null"#,
            FIELDS,
        )
        .unwrap();
        assert_eq!(p[0].op, Op::Lt);
        assert_eq!(p[0].value, Value::Int(1_767_225_600_000_000));
        assert_eq!(p[1].op, Op::Ne);
        assert_eq!(p[1].value, Value::Null);
        let p = parse(r#"last_used_time = "null""#, FIELDS).unwrap();
        assert_eq!(p[0].value, Value::Null, "quoted or not");
    }

    #[test]
    fn rejects_bad_filters_naming_the_field() {
        for bad in [
            "state",
            "state =",
            "state = NOPE",
            "state > ACTIVE",
            "colour = red",
            "state = ACTIVE OR state = DISABLED",
            "state = ACTIVE AND",
            "display_name = \"open",
            "create_time > yesterday",
            "display_name < x",
            "state ! ACTIVE",
            "(state = ACTIVE)",
            "display_name = \"a\u{0}b\"",
            "display_name = \"\u{1b}[31m\"",
            "create_time = null",
            "last_used_time < null",
            "last_used_time = nil",
        ] {
            match parse(bad, FIELDS) {
                Err(Error::InvalidArgument(v)) => assert_eq!(v.0[0].field, "filter", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
