//! Compiles `proto/echo.proto`, the bare-tonic baseline service, with the
//! vendored protoc so that building the bench needs nothing but cargo.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .compile_with_config(
            config,
            &[PathBuf::from("proto/echo.proto")],
            &[PathBuf::from("proto")],
        )?;

    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
