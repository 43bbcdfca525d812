//! Compiles the test-only protos beside this file (package
//! `tollgate.testing.v1`) into message types, server and client stubs and
//! a file descriptor set for `tollgate_e2e::testing_proto`. The
//! `google.api` annotations come from the workspace's `proto/`, the
//! well-known types from protoc-bin-vendored, like the root `build.rs`.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("testing_descriptor.bin"))
        .compile_with_config(
            config,
            &[PathBuf::from("proto/tollgate/testing/v1/transcode.proto")],
            &[
                PathBuf::from("proto"),
                PathBuf::from("../proto"),
                protoc_bin_vendored::include_path()?,
            ],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
