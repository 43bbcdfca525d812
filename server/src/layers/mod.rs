//! Tower layers every request to the main listener passes, outermost
//! first: `trace` (request id, span, metrics), `authenticate` (credential → principal),
//! `authorize` (the method's policy → a [`Caller`] permit or a refusal).
//! `rate_limit` (the method's cost against the caller's policies).

pub mod authenticate;
pub mod authorize;
pub mod call;
pub mod rate_limit;
pub mod request_id;
pub mod trace;

pub use authenticate::{AuthenticateLayer, Authentication};
pub use authorize::{AuthorizeLayer, Caller};
pub use call::Call;
pub use rate_limit::RateLimitLayer;
pub use request_id::RequestId;
pub use trace::{RpcMetrics, TraceLayer};

use std::{future::Future, pin::Pin};

/// The boxed future our layers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
