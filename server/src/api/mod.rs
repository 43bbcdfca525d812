//! One module per proto service. A handler parses and validates the
//! request, names the organization it targets to the [`Caller`] permit
//! (which holds the permission the proto declares), calls the store with
//! the caller's write context, and converts the row.

pub mod api_keys;
pub mod authorization;
pub mod error;
pub mod events;
pub mod oauth_clients;
pub mod organizations;
pub mod rate_limit_policies;
pub mod rate_limits;
pub mod service_accounts;
pub mod signing_keys;
pub mod tokens;
pub mod usage;
pub mod users;
pub mod webhooks;

use tollgate::tollgate::v1::user;
use tonic::{Request, Status};

use crate::{
    domain::{
        Error, FieldViolation, Result,
        authz::{Principal, Roles},
    },
    layers::{Call, Caller},
};

/// The permit the authorize layer left for this call, taken out of the
/// call (moved, not cloned: its principal and policy are shared by every
/// concurrent call of the same caller, and each reference count touched is
/// a cache line the cores pass around). Its absence on a non-public method
/// is a wiring bug, answered as UNAUTHENTICATED rather than trusting
/// anyone.
pub fn caller<T>(req: &mut Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<std::sync::Arc<Call>>()
        .and_then(|call| call.take_permit())
        .ok_or_else(|| {
            Error::Unauthenticated(crate::layers::authenticate::CREDENTIALS_REQUIRED.into()).into()
        })
}

pub use crate::domain::timestamp;

/// A protobuf timestamp to microseconds, naming `field` when invalid.
pub fn micros(field: &str, ts: &prost_types::Timestamp) -> Result<i64> {
    if !(0..1_000_000_000).contains(&ts.nanos) || !(0..=253_402_300_799).contains(&ts.seconds) {
        return Err(Error::invalid(field, "is not a valid timestamp"));
    }
    Ok(ts.seconds * 1_000_000 + i64::from(ts.nanos / 1000))
}

/// The filter and page of a List request. The page token is bound to the
/// collection, parent and filter, so it cannot be replayed against another
/// query.
pub fn list_params(
    collection: &str,
    parent: &str,
    filter: &str,
    page_size: i32,
    page_token: &str,
    fields: &[(&'static str, crate::domain::filter::FieldType)],
) -> Result<(
    Vec<crate::domain::filter::Predicate>,
    crate::domain::page::PageRequest,
)> {
    let predicates = crate::domain::filter::parse(filter, fields)?;
    let page = crate::domain::page::PageRequest::new(
        page_size,
        page_token,
        &format!("{collection}\n{parent}\n{filter}"),
    )?;
    Ok((predicates, page))
}

/// The state of a new principal: ACTIVE when unset.
pub fn initial_state(field: &str, state: i32) -> Result<i16, FieldViolation> {
    if state == user::State::Unspecified as i32 {
        Ok(user::State::Active as i16)
    } else {
        principal_state(field, state)
    }
}

/// A settable principal state (`User.State` and `ServiceAccount.State`
/// share their numbers), or the violation naming `field`.
pub fn principal_state(field: &str, state: i32) -> Result<i16, FieldViolation> {
    match user::State::try_from(state) {
        Ok(s @ (user::State::Active | user::State::Disabled)) => Ok(s as i16),
        _ => Err(FieldViolation::new(field, "must be ACTIVE or DISABLED")),
    }
}

/// The guard of writes to a principal (or its keys): `caller` may not act
/// on a principal holding roles above its own in `org`. The store runs it
/// on the roles it reads inside the write's transaction.
pub fn manage_guard(
    caller: &Principal,
    org: &str,
    field: &'static str,
) -> impl Fn(&Roles) -> Result<()> + Send + 'static + use<> {
    let caller = caller.clone();
    let org = org.to_owned();
    move |roles: &Roles| caller.check_may_manage(&org, roles, field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for m in [0, 1, 1_767_225_600_123_456, 999_999] {
            assert_eq!(micros("t", &timestamp(m)).unwrap(), m);
        }
        let bad = prost_types::Timestamp {
            seconds: 1,
            nanos: -1,
        };
        assert!(micros("t", &bad).is_err());
    }
}
