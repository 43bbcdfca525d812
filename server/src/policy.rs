//! Method policies, read from the `(tollgate.v1.policy)` option of every
//! method in the compiled descriptors at start-up. The proto is the source
//! of truth: a method without a policy, or naming an unknown permission,
//! stops the server before it listens. The infrastructure services we
//! serve beside `tollgate.v1` (health, reflection) are registered here as
//! public, read from their own descriptor sets, so no layer keeps a list of
//! paths of its own.

use std::{collections::HashMap, sync::Arc};

use prost_reflect::{DescriptorPool, Value};
pub use tollgate::tollgate::v1::MethodPolicy;

use crate::domain::authz::Permission;

/// The full name of the option extension.
pub const POLICY_EXTENSION: &str = "tollgate.v1.policy";
/// Services in this package must all carry policies.
pub const PACKAGE: &str = "tollgate.v1";
/// Envoy's external-authorization and global rate-limit services, which
/// Tollgate serves for gateways. Envoy calls them without credentials of
/// its own (expose the port to the mesh only, or put mTLS in front); what
/// they decide rests on the credentials and descriptors inside each
/// request, and they are free of charge (cost 0) so the gateway is never
/// limited by its own checks.
pub const ENVOY_PACKAGES: [&str; 2] = ["envoy.service.auth.v3", "envoy.service.ratelimit.v3"];

/// The descriptor sets of the services served beside `tollgate.v1` that
/// anyone may call: load balancers probe health without credentials, and
/// grpcurl and buf list services before they know a key.
pub fn public_infrastructure() -> [&'static [u8]; 3] {
    [
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]
}

/// Why the policies could not be read; each names the method at fault.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The descriptor set does not decode.
    #[error("cannot read the descriptor set: {0}")]
    Descriptor(String),
    /// The descriptor set lacks `policy.proto`.
    #[error("the descriptor set does not define the {POLICY_EXTENSION} option")]
    NoExtension,
    /// A `tollgate.v1` method without its option, or with an empty one.
    #[error(
        "method {0} has no (tollgate.v1.policy) option; every method must declare its permission and cost"
    )]
    Missing(String),
    /// The option does not decode as a `MethodPolicy`.
    #[error("method {method} has an unreadable (tollgate.v1.policy) option: {reason}")]
    Unreadable {
        /// The method's full name.
        method: String,
        /// The decode error.
        reason: String,
    },
    /// The permission is not `collection.verb` with a known verb.
    #[error(
        "method {method} names unknown permission '{permission}'; expected collection.verb with verb one of get, list, create, update, delete, revoke, setPassword"
    )]
    UnknownPermission {
        /// The method's full name.
        method: String,
        /// The permission as written.
        permission: String,
    },
}

/// What a call to one method demands, decided once at start-up: the option
/// as the proto declares it, and its permission parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The request path, `/package.Service/Method`, also the metrics label.
    pub path: Box<str>,
    /// The option as declared; `cost` is what the rate limiter charges.
    pub declared: MethodPolicy,
    /// What the caller needs; `None` when the method is public.
    pub permission: Option<Permission>,
}

impl Policy {
    /// Whether anonymous callers may call the method.
    pub fn is_public(&self) -> bool {
        self.permission.is_none()
    }
}

/// The policy of every served method, by request path.
#[derive(Debug, Default)]
pub struct Policies {
    /// Looked up on every call; foldhash rather than SipHash, as the keys
    /// are the served methods, never chosen by a client.
    by_path: HashMap<Box<str>, Arc<Policy>, foldhash::fast::RandomState>,
    /// `tollgate.v1` services, for per-service health.
    services: Vec<String>,
}

impl Policies {
    /// Reads and checks the policies of every `tollgate.v1` method in
    /// `encoded_fds`, and registers the public infrastructure services.
    pub fn load(encoded_fds: &[u8]) -> Result<Self, PolicyError> {
        let pool = DescriptorPool::decode(encoded_fds)
            .map_err(|e| PolicyError::Descriptor(e.to_string()))?;
        Self::from_pool(&pool)
    }

    /// [`Policies::load`] from descriptors already decoded: the server
    /// reads them from the pool the HTTP protocols use, since decoding the
    /// set (with its comments) is the largest part of start-up.
    pub fn from_pool(pool: &DescriptorPool) -> Result<Self, PolicyError> {
        let mut policies = Self::default();
        policies.load_tollgate(pool)?;
        for fds in public_infrastructure() {
            policies.load_public(fds)?;
        }
        Ok(policies)
    }

    fn load_tollgate(&mut self, pool: &DescriptorPool) -> Result<(), PolicyError> {
        let ext = pool
            .get_extension_by_name(POLICY_EXTENSION)
            .ok_or(PolicyError::NoExtension)?;
        for service in pool
            .services()
            .filter(|s| ENVOY_PACKAGES.contains(&s.package_name()))
        {
            for method in service.methods() {
                self.insert(Policy {
                    path: format!("/{}/{}", service.full_name(), method.name()).into(),
                    declared: MethodPolicy {
                        public: true,
                        ..MethodPolicy::default()
                    },
                    permission: None,
                });
            }
        }
        for service in pool.services().filter(|s| s.package_name() == PACKAGE) {
            self.services.push(service.full_name().to_owned());
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
                let declared: MethodPolicy =
                    m.transcode_to().map_err(|e| PolicyError::Unreadable {
                        method: full.clone(),
                        reason: e.to_string(),
                    })?;
                let permission = if declared.public {
                    None
                } else if declared.permission.is_empty() {
                    return Err(PolicyError::Missing(full));
                } else {
                    Some(Permission::parse(&declared.permission).ok_or_else(|| {
                        PolicyError::UnknownPermission {
                            method: full.clone(),
                            permission: declared.permission.clone(),
                        }
                    })?)
                };
                self.insert(Policy {
                    path: format!("/{}/{}", service.full_name(), method.name()).into(),
                    declared,
                    permission,
                });
            }
        }
        self.services.sort();
        Ok(())
    }

    /// Registers every method of every service in `encoded_fds` as public
    /// and free (the infrastructure services; tests add their own).
    pub fn load_public(&mut self, encoded_fds: &[u8]) -> Result<(), PolicyError> {
        let pool = DescriptorPool::decode(encoded_fds)
            .map_err(|e| PolicyError::Descriptor(e.to_string()))?;
        for service in pool.services() {
            for method in service.methods() {
                self.insert(Policy {
                    path: format!("/{}/{}", service.full_name(), method.name()).into(),
                    declared: MethodPolicy {
                        public: true,
                        ..MethodPolicy::default()
                    },
                    permission: None,
                });
            }
        }
        Ok(())
    }

    fn insert(&mut self, policy: Policy) {
        self.by_path.insert(policy.path.clone(), Arc::new(policy));
    }

    /// The policy of the method at `path`; `None` for paths we do not serve.
    pub fn get(&self, path: &str) -> Option<&Arc<Policy>> {
        self.by_path.get(path)
    }

    /// Every served method's path, infrastructure included.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.by_path.keys().map(AsRef::as_ref)
    }

    /// Every served method's policy.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.by_path.values()
    }

    /// The names of the `tollgate.v1` services, sorted.
    pub fn services(&self) -> &[String] {
        &self.services
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::domain::authz::Verb;

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
        assert_eq!(
            get.permission,
            Some(Permission {
                collection: "organizations".into(),
                verb: Verb::Get
            })
        );
        assert_eq!(get.declared.cost, 1);
        assert!(!get.is_public());
        assert_eq!(
            p.get("/tollgate.v1.UserService/SetPassword")
                .unwrap()
                .declared
                .cost,
            5
        );
        assert!(p.paths().count() >= 20);
        // The infrastructure is public, read from its own descriptors.
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(p.get(path).unwrap().is_public(), "{path}");
        }
        // The only public tollgate.v1 methods are those where the OAuth
        // client authenticates in the request.
        let mut public: Vec<&str> = p
            .iter()
            .filter(|p| p.path.starts_with("/tollgate.v1.") && p.is_public())
            .map(|p| &*p.path)
            .collect();
        public.sort_unstable();
        assert_eq!(
            public,
            [
                "/tollgate.v1.TokenService/IssueToken",
                "/tollgate.v1.TokenService/RevokeToken"
            ]
        );
        assert_eq!(
            p.services(),
            [
                "tollgate.v1.ApiKeyService",
                "tollgate.v1.AuthorizationService",
                "tollgate.v1.EventService",
                "tollgate.v1.OAuthClientService",
                "tollgate.v1.OrganizationService",
                "tollgate.v1.RateLimitPolicyService",
                "tollgate.v1.RateLimitService",
                "tollgate.v1.ServiceAccountService",
                "tollgate.v1.TokenService",
                "tollgate.v1.UsageService",
                "tollgate.v1.UserService",
                "tollgate.v1.WebhookService"
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
