//! Generated Tollgate types and gRPC stubs, compiled from `proto/` by
//! `build.rs`. The server and the client crate both build on this crate, so
//! there is exactly one copy of every message type.
//!
//! Never edit what this crate generates: change `proto/` instead. The one
//! hand-written module, [`codec`], is the server stubs' codec.
#![forbid(unsafe_code)]
#![allow(clippy::all, missing_docs, rustdoc::all)]

pub mod codec;

include!(concat!(env!("OUT_DIR"), "/tollgate_protos.rs"));

/// The encoded `FileDescriptorSet` of every proto this crate compiles,
/// including its imports. Reflection serves it, and the server reads the
/// `tollgate.v1.policy` method options from it at start-up.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tollgate_descriptor.bin"));
