//! Tower layers every gRPC request passes, outermost first: `trace` (span,
//! metrics) then `authenticate` (credential → principal, permission check).
//! Rate limiting plugs in after `authenticate`, reading the method cost.

pub mod authenticate;
pub mod trace;

pub use authenticate::AuthenticateLayer;
pub use trace::{RpcMetrics, TraceLayer};

use std::{future::Future, pin::Pin};

/// The boxed future our layers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
