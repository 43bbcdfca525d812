//! `TokenService.ListSigningKeys` and `TokenService.RotateSigningKey`, for
//! the `TokenService` implementation to delegate to. Both are for platform
//! admins: the permission is checked against the `root` organization.

use tollgate::tollgate::v1::{
    ListSigningKeysRequest, ListSigningKeysResponse, RotateSigningKeyRequest, SigningKey,
};
use tonic::{Request, Response, Status};

use super::caller;
use crate::{
    domain::{Error, authz::ROOT_ORG},
    oauth::keys::{Algorithm, KeyRing},
    store::Store,
};

/// The signing-key methods of `TokenService`.
#[derive(Clone)]
pub struct SigningKeys {
    store: Store,
    keys: KeyRing,
}

impl SigningKeys {
    /// Serves the keys of `keys`, stored in `store`.
    pub fn new(store: Store, keys: KeyRing) -> Self {
        Self { store, keys }
    }

    /// `ListSigningKeys`: the keys, newest first, public parts only.
    pub async fn list(
        &self,
        mut req: Request<ListSigningKeysRequest>,
    ) -> Result<Response<ListSigningKeysResponse>, Status> {
        caller(&mut req)?.authorize(ROOT_ORG)?;
        let signing_keys = self
            .keys
            .list(&self.store, req.get_ref().show_retired)
            .await?;
        Ok(Response::new(ListSigningKeysResponse { signing_keys }))
    }

    /// `RotateSigningKey`: a new key of the algorithm, published now.
    pub async fn rotate(
        &self,
        mut req: Request<RotateSigningKeyRequest>,
    ) -> Result<Response<SigningKey>, Status> {
        let caller = caller(&mut req)?;
        caller.authorize(ROOT_ORG)?;
        let req = req.get_ref();
        let alg = Algorithm::parse(&req.algorithm)
            .ok_or_else(|| Error::invalid("algorithm", "must be one of EdDSA, ES256, RS256"))?;
        let key = self
            .keys
            .rotate(&self.store, &caller.write_context(), alg, req.immediate)
            .await?;
        Ok(Response::new(key))
    }
}
