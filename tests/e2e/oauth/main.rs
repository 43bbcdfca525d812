//! Issue 8 end to end: scopes, AuthorizationService, and (as they land)
//! the OAuth 2.1 / OIDC provider driven by independent clients.

mod authorization;
mod browser;
mod client_crate;
mod pyjwt;
mod scopes;
mod signin;
mod tokens;
mod web;
