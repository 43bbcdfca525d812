//! The `tollgate.v1` methods as the embedded descriptors declare them, so
//! table-driven tests can require a row for every method.

use std::collections::BTreeSet;

use prost::Message as _;
use prost_types::{MethodDescriptorProto, method_options::IdempotencyLevel};

/// `Service/Method` of every `tollgate.v1` method for which `keep` holds.
pub fn methods(keep: impl Fn(&MethodDescriptorProto) -> bool) -> BTreeSet<String> {
    let fds = prost_types::FileDescriptorSet::decode(tollgate::FILE_DESCRIPTOR_SET)
        .expect("the embedded descriptor set decodes");
    fds.file
        .iter()
        .filter(|f| f.package() == "tollgate.v1")
        .flat_map(|f| &f.service)
        .flat_map(|s| {
            s.method
                .iter()
                .filter(|m| keep(m))
                .map(move |m| format!("{}/{}", s.name(), m.name()))
        })
        .collect()
}

/// Whether a method declares `idempotency_level = NO_SIDE_EFFECTS` (a
/// read); every other method is a write.
pub fn is_read(m: &MethodDescriptorProto) -> bool {
    m.options
        .as_ref()
        .and_then(|o| o.idempotency_level)
        .is_some_and(|l| l == IdempotencyLevel::NoSideEffects as i32)
}
