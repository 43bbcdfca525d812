//! Method policies, read from the `(tollgate.v1.policy)` option of every
//! method in the compiled descriptors at start-up. The proto is the source
//! of truth: a method without a policy, or naming an unknown permission,
//! stops the server before it listens.

use std::{collections::HashMap, sync::Arc};

use prost_reflect::{DescriptorPool, Value};

use crate::domain::authz::PERMISSIONS;

/// The full name of the option extension.
pub const POLICY_EXTENSION: &str = "tollgate.v1.policy";
/// Services in this package must all carry policies.
pub const PACKAGE: &str = "tollgate.v1";

/// What one method demands of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodPolicy {
    /// Empty only when `public`.
    pub permission: String,
    pub cost: u32,
    pub public: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the descriptor set: {0}")]
    Descriptor(String),
    #[error("the descriptor set does not define the {POLICY_EXTENSION} option")]
    NoExtension,
    #[error(
        "method {0} has no (tollgate.v1.policy) option; every method must declare its permission and cost"
    )]
    Missing(String),
    #[error("method {method} names unknown permission '{permission}'")]
    UnknownPermission { method: String, permission: String },
}

/// The policy of every method, by request path.
#[derive(Debug, Default)]
pub struct Policies {
    by_path: HashMap<String, Arc<MethodPolicy>>,
}

impl Policies {
    /// Reads and checks the policies of every `tollgate.v1` method.
    pub fn load(encoded_fds: &[u8]) -> Result<Self, PolicyError> {
        let pool = DescriptorPool::decode(encoded_fds)
            .map_err(|e| PolicyError::Descriptor(e.to_string()))?;
        let ext = pool
            .get_extension_by_name(POLICY_EXTENSION)
            .ok_or(PolicyError::NoExtension)?;
        let mut by_path = HashMap::new();
        for service in pool.services().filter(|s| s.package_name() == PACKAGE) {
            for method in service.methods() {
                let full = method.full_name().to_owned();
                let options = method.options();
                if !options.has_extension(&ext) {
                    return Err(PolicyError::Missing(full));
                }
                let value = options.get_extension(&ext);
                let Value::Message(m) = value.as_ref() else {
                    return Err(PolicyError::Missing(full));
                };
                let text = |f: &str| {
                    m.get_field_by_name(f)
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                };
                let permission = text("permission");
                let cost = m
                    .get_field_by_name("cost")
                    .and_then(|v| v.as_u32())
                    .unwrap_or(0);
                let public = m
                    .get_field_by_name("public")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                if !public {
                    if permission.is_empty() {
                        return Err(PolicyError::Missing(full));
                    }
                    if !PERMISSIONS.contains(&permission.as_str()) {
                        return Err(PolicyError::UnknownPermission {
                            method: full,
                            permission,
                        });
                    }
                }
                let path = format!("/{}/{}", service.full_name(), method.name());
                by_path.insert(
                    path,
                    Arc::new(MethodPolicy {
                        permission,
                        cost,
                        public,
                    }),
                );
            }
        }
        Ok(Self { by_path })
    }

    pub fn get(&self, path: &str) -> Option<&Arc<MethodPolicy>> {
        self.by_path.get(path)
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.by_path.keys().map(String::as_str)
    }

    /// The names of the services that carry policies.
    pub fn services(&self) -> Vec<String> {
        let mut s: Vec<String> = self
            .by_path
            .keys()
            .filter_map(|p| {
                p.trim_start_matches('/')
                    .split('/')
                    .next()
                    .map(str::to_owned)
            })
            .collect();
        s.sort();
        s.dedup();
        s
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn the_edited_set_keeps_other_policies() {
        // Guards the helper below: only GetUser loses its policy.
        let fds = without_get_user_policy();
        let pool = DescriptorPool::decode(fds.as_slice()).unwrap();
        let ext = pool.get_extension_by_name(POLICY_EXTENSION).unwrap();
        let get_org = pool
            .get_service_by_name("tollgate.v1.OrganizationService")
            .unwrap()
            .methods()
            .find(|m| m.name() == "GetOrganization")
            .unwrap();
        assert!(get_org.options().has_extension(&ext));
    }

    #[test]
    fn every_tollgate_method_has_a_policy() {
        let p = Policies::load(tollgate::FILE_DESCRIPTOR_SET).unwrap();
        let get = p
            .get("/tollgate.v1.OrganizationService/GetOrganization")
            .unwrap();
        assert_eq!(get.permission, "organizations.get");
        assert_eq!(get.cost, 1);
        assert!(!get.public);
        assert_eq!(
            p.get("/tollgate.v1.UserService/SetPassword").unwrap().cost,
            5
        );
        assert!(p.paths().count() >= 20);
        assert_eq!(
            p.services(),
            [
                "tollgate.v1.ApiKeyService",
                "tollgate.v1.OrganizationService",
                "tollgate.v1.ServiceAccountService",
                "tollgate.v1.UserService"
            ]
        );
    }

    /// The real descriptor set with `UserService.GetUser`'s options
    /// cleared. Edited as a dynamic message: prost's own types would drop
    /// every custom option on re-encoding.
    fn without_get_user_policy() -> Vec<u8> {
        let pool = DescriptorPool::decode(tollgate::FILE_DESCRIPTOR_SET).unwrap();
        let fds_desc = pool
            .get_message_by_name("google.protobuf.FileDescriptorSet")
            .unwrap();
        let mut fds =
            prost_reflect::DynamicMessage::decode(fds_desc, tollgate::FILE_DESCRIPTOR_SET).unwrap();
        let Some(Value::List(files)) = fds.get_field_by_name_mut("file") else {
            panic!("file")
        };
        for file in files {
            let Value::Message(file) = file else { continue };
            let Some(Value::List(services)) = file.get_field_by_name_mut("service") else {
                continue;
            };
            for svc in services {
                let Value::Message(svc) = svc else { continue };
                if svc.get_field_by_name("name").unwrap().as_str() != Some("UserService") {
                    continue;
                }
                let Some(Value::List(methods)) = svc.get_field_by_name_mut("method") else {
                    continue;
                };
                for m in methods {
                    let Value::Message(m) = m else { continue };
                    if m.get_field_by_name("name").unwrap().as_str() == Some("GetUser") {
                        m.clear_field_by_name("options");
                    }
                }
            }
        }
        fds.encode_to_vec()
    }

    #[test]
    fn a_method_without_policy_is_named() {
        let fds = without_get_user_policy();
        let err = Policies::load(&fds).unwrap_err();
        assert!(matches!(&err, PolicyError::Missing(m) if m == "tollgate.v1.UserService.GetUser"));
        assert!(err.to_string().contains("tollgate.v1.UserService.GetUser"));
    }
}
