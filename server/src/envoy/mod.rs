//! Envoy's gRPC APIs, served so that Envoy and Istio gateways can use
//! Tollgate as their external-authorization and global rate-limit
//! service: [`ext_authz`] and [`rls`]. Both are generated from the
//! vendored Envoy protos (`proto/envoy`), so reflection lists them.

pub mod ext_authz;
pub mod rls;
