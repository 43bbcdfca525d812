//! Applies checked AIP-160 predicates to a boxed diesel query.

/// `apply_op!(query, column, op, value)`: one filter clause per operator.
macro_rules! apply_op {
    ($q:expr, $col:expr, $op:expr, $v:expr) => {{
        use diesel::ExpressionMethods as _;
        use $crate::domain::filter::Op;
        match $op {
            Op::Eq => $q.filter($col.eq($v)),
            Op::Ne => $q.filter($col.ne($v)),
            Op::Lt => $q.filter($col.lt($v)),
            Op::Le => $q.filter($col.le($v)),
            Op::Gt => $q.filter($col.gt($v)),
            Op::Ge => $q.filter($col.ge($v)),
        }
    }};
}
pub(crate) use apply_op;

/// `apply_null!(query, column, op)`: `= null` as IS NULL, `!= null` as IS
/// NOT NULL (the parser allows no other operator with null).
macro_rules! apply_null {
    ($q:expr, $col:expr, $op:expr) => {{
        use diesel::ExpressionMethods as _;
        use $crate::domain::filter::Op;
        match $op {
            Op::Eq => $q.filter($col.is_null()),
            Op::Ne => $q.filter($col.is_not_null()),
            Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                return Err($crate::domain::Error::Internal(
                    "an ordering comparison with null".into(),
                ));
            }
        }
    }};
}
pub(crate) use apply_null;

use crate::domain::{
    Error, Result,
    filter::{Predicate, Value},
};

/// The integer value of a predicate, or an internal error: the parser
/// already checked types, so a mismatch here is a bug.
pub fn int(p: &Predicate) -> Result<i64> {
    match &p.value {
        Value::Int(v) => Ok(*v),
        Value::Text(_) | Value::Null => Err(Error::Internal(format!(
            "filter {} expects a number",
            p.field
        ))),
    }
}

/// The integer value of a predicate on a field that may be unset; `None`
/// for `null`.
pub fn optional_int(p: &Predicate) -> Result<Option<i64>> {
    match &p.value {
        Value::Null => Ok(None),
        _ => int(p).map(Some),
    }
}

/// The text value of a predicate.
pub fn text(p: &Predicate) -> Result<String> {
    match &p.value {
        Value::Text(v) => Ok(v.clone()),
        Value::Int(_) | Value::Null => {
            Err(Error::Internal(format!("filter {} expects text", p.field)))
        }
    }
}

/// An enum code as stored.
pub fn small(p: &Predicate) -> Result<i16> {
    i16::try_from(int(p)?).map_err(|_| Error::Internal(format!("filter {} out of range", p.field)))
}

/// The error for a predicate on a field the table does not have.
pub fn unknown(p: &Predicate) -> Error {
    Error::Internal(format!("no column for filter field {}", p.field))
}
