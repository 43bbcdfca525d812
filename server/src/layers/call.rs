//! What the layers learn about one call as it passes: its request id, its
//! principal once authenticated, and whether its client went away. The
//! trace layer makes one per call (one allocation) and logs from it when
//! the call ends; the layers inside fill it in.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicBool, Ordering},
};

use super::request_id::RequestId;
use crate::domain::authz::Principal;

/// One call's facts, in the request extensions as `Arc<Call>`.
#[derive(Debug)]
pub struct Call {
    request_id: RequestId,
    principal: OnceLock<Arc<Principal>>,
    client_gone: AtomicBool,
}

impl Call {
    /// A call known by `request_id`.
    pub fn new(request_id: RequestId) -> Self {
        Self {
            request_id,
            principal: OnceLock::new(),
            client_gone: AtomicBool::new(false),
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
}
