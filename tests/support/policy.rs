//! Edited descriptor sets, for tests that prove the server enforces what
//! the proto's `(tollgate.v1.policy)` option says rather than anything
//! written in the code.

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};

/// The embedded descriptor set with the permission of `service`/`method`
/// (e.g. `OrganizationService`, `GetOrganization`) replaced by
/// `permission`. Edited as a dynamic message: prost's own descriptor types
/// would drop every custom option on re-encoding.
pub fn with_permission(service: &str, method: &str, permission: &str) -> Vec<u8> {
    edited(
        service,
        method,
        "permission",
        Value::String(permission.to_owned()),
    )
}

/// The embedded descriptor set with the cost of `service`/`method`
/// replaced by `cost`.
pub fn with_cost(service: &str, method: &str, cost: u32) -> Vec<u8> {
    edited(service, method, "cost", Value::U32(cost))
}

/// The embedded descriptor set with `field` of the policy of
/// `service`/`method` set to `value`.
fn edited(service: &str, method: &str, field: &str, value: Value) -> Vec<u8> {
    let pool = DescriptorPool::decode(tollgate::FILE_DESCRIPTOR_SET).expect("descriptors decode");
    let ext = pool
        .get_extension_by_name("tollgate.v1.policy")
        .expect("the policy option is defined");
    let fds_desc = pool
        .get_message_by_name("google.protobuf.FileDescriptorSet")
        .expect("descriptor.proto is included");
    let mut fds = DynamicMessage::decode(fds_desc, tollgate::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    let mut edited = 0;
    let Some(Value::List(files)) = fds.get_field_by_name_mut("file") else {
        panic!("no files in the descriptor set")
    };
    for file in files {
        let Value::Message(file) = file else { continue };
        let Some(Value::List(services)) = file.get_field_by_name_mut("service") else {
            continue;
        };
        for svc in services {
            let Value::Message(svc) = svc else { continue };
            if svc
                .get_field_by_name("name")
                .and_then(|v| v.as_str().map(str::to_owned))
                != Some(service.to_owned())
            {
                continue;
            }
            let Some(Value::List(methods)) = svc.get_field_by_name_mut("method") else {
                continue;
            };
            for m in methods {
                let Value::Message(m) = m else { continue };
                if m.get_field_by_name("name")
                    .and_then(|v| v.as_str().map(str::to_owned))
                    != Some(method.to_owned())
                {
                    continue;
                }
                let Some(Value::Message(options)) = m.get_field_by_name_mut("options") else {
                    panic!("{service}/{method} has no options")
                };
                let Value::Message(mut policy) = options.get_extension(&ext).into_owned() else {
                    panic!("{service}/{method} has no policy")
                };
                policy.set_field_by_name(field, value.clone());
                options.set_extension(&ext, Value::Message(policy));
                edited += 1;
            }
        }
    }
    assert_eq!(edited, 1, "{service}/{method} not found exactly once");
    fds.encode_to_vec()
}
