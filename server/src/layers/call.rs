//! What the layers learn about one call as it passes: its request id, its
//! principal once authenticated, and whether its client went away. The
//! trace layer makes one per call (one allocation) and logs from it when
//! the call ends; the layers inside fill it in.
//!
//! It also carries what one layer hands the next: `authenticate`'s
//! [`Authentication`] to `authorize`, and `authorize`'s [`Caller`] permit
//! to the rate limiter and the handler. Through this one value rather than
//! as request extensions of their own: each extension is a boxed value in
//! a hash map that grows past three entries, and these two were an insert
//! and a remove each on every call.

use std::sync::{
    Arc, Mutex, MutexGuard, OnceLock,
    atomic::{AtomicBool, Ordering},
};

use super::{authenticate::Authentication, authorize::Caller, request_id::RequestId};
use crate::domain::authz::Principal;

/// One call's facts, in the request extensions as `Arc<Call>`.
#[derive(Debug)]
pub struct Call {
    request_id: RequestId,
    principal: OnceLock<Arc<Principal>>,
    client_gone: AtomicBool,
    /// Only ever locked by the task serving the call, so never contended.
    handoff: Mutex<Handoff>,
}

/// What one layer leaves for the next.
#[derive(Debug, Default)]
struct Handoff {
    authentication: Option<Authentication>,
    permit: Option<Caller>,
}

impl Call {
    /// A call known by `request_id`.
    pub fn new(request_id: RequestId) -> Self {
        Self {
            request_id,
            principal: OnceLock::new(),
            client_gone: AtomicBool::new(false),
            handoff: Mutex::default(),
        }
    }

    /// The request id.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }

    /// Records who is calling; the first record wins.
    pub fn set_principal(&self, principal: Arc<Principal>) {
        let _ = self.principal.set(principal);
    }

    /// Who is calling, once authenticated.
    pub fn principal(&self) -> Option<&Arc<Principal>> {
        self.principal.get()
    }

    /// Notes that reading the request failed: the client reset the stream
    /// or closed the connection.
    pub fn mark_client_gone(&self) {
        self.client_gone.store(true, Ordering::Release);
    }

    /// Whether the client went away.
    pub fn client_gone(&self) -> bool {
        self.client_gone.load(Ordering::Acquire)
    }

    fn handoff(&self) -> MutexGuard<'_, Handoff> {
        // Nothing panics while holding it; a poisoned lock still holds
        // whole values.
        self.handoff.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leaves what `authenticate` found for `authorize`.
    pub fn set_authentication(&self, authentication: Authentication) {
        self.handoff().authentication = Some(authentication);
    }

    /// What `authenticate` found, taken: anonymous when nothing was left.
    pub fn take_authentication(&self) -> Authentication {
        self.handoff()
            .authentication
            .take()
            .unwrap_or(Authentication::Anonymous)
    }

    /// Leaves `authorize`'s permit for the rate limiter and the handler.
    pub fn set_permit(&self, permit: Caller) {
        self.handoff().permit = Some(permit);
    }

    /// The permit, taken (moved, not cloned: its principal and policy are
    /// shared by every concurrent call of the same caller).
    pub fn take_permit(&self) -> Option<Caller> {
        self.handoff().permit.take()
    }

    /// Runs `f` on the permit, if there is one, without taking it.
    pub fn with_permit<T>(&self, f: impl FnOnce(Option<&Caller>) -> T) -> T {
        f(self.handoff().permit.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Error;

    #[test]
    fn authentication_is_handed_over_once() {
        let call = Call::new(RequestId::assign());
        assert!(matches!(
            call.take_authentication(),
            Authentication::Anonymous
        ));
        call.set_authentication(Authentication::Refused(Error::Unauthenticated("x".into())));
        assert!(matches!(
            call.take_authentication(),
            Authentication::Refused(_)
        ));
        assert!(matches!(
            call.take_authentication(),
            Authentication::Anonymous
        ));
        assert!(call.take_permit().is_none());
        assert!(call.with_permit(|p| p.is_none()));
    }
}
