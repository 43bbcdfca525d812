//! Compiles `proto/` into the generated types, the gRPC stubs and the encoded
//! file descriptor set that reflection and the policy reader use. protoc comes
//! from `protoc-bin-vendored`, so a fresh machine needs nothing but cargo.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/tollgate/v1/policy.proto",
    "proto/tollgate/v1/organization.proto",
    "proto/tollgate/v1/user.proto",
    "proto/tollgate/v1/service_account.proto",
    "proto/tollgate/v1/api_key.proto",
    "proto/tollgate/v1/event.proto",
    "proto/google/rpc/status.proto",
    "proto/google/rpc/error_details.proto",
    "proto/google/rpc/code.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);

    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("tollgate_descriptor.bin"))
        .include_file("tollgate_protos.rs")
        .emit_rerun_if_changed(false)
        .compile_with_config(
            config,
            &PROTOS.iter().map(PathBuf::from).collect::<Vec<_>>(),
            &[PathBuf::from("proto"), well_known],
        )?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
