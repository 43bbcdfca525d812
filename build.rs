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
    "proto/tollgate/v1/oauth_client.proto",
    "proto/tollgate/v1/token.proto",
    "proto/tollgate/v1/authorization.proto",
    "proto/tollgate/v1/rate_limit.proto",
    "proto/tollgate/v1/usage.proto",
    "proto/tollgate/v1/webhook.proto",
    "proto/tollgate/v1/event.proto",
    "proto/tollgate/v1/event_service.proto",
    // Envoy's external authorization and global rate-limit services, with
    // what they import (vendored from envoyproxy/data-plane-api, cncf/xds
    // and protoc-gen-validate, Apache-2.0): served natively and listed by
    // reflection.
    "proto/envoy/annotations/deprecation.proto",
    "proto/envoy/config/core/v3/address.proto",
    "proto/envoy/config/core/v3/backoff.proto",
    "proto/envoy/config/core/v3/base.proto",
    "proto/envoy/config/core/v3/extension.proto",
    "proto/envoy/config/core/v3/http_uri.proto",
    "proto/envoy/config/core/v3/socket_option.proto",
    "proto/envoy/extensions/common/ratelimit/v3/ratelimit.proto",
    "proto/envoy/service/auth/v3/attribute_context.proto",
    "proto/envoy/service/auth/v3/external_auth.proto",
    "proto/envoy/service/ratelimit/v3/rls.proto",
    "proto/envoy/type/v3/http_status.proto",
    "proto/envoy/type/v3/percent.proto",
    "proto/envoy/type/v3/ratelimit_unit.proto",
    "proto/envoy/type/v3/semantic_version.proto",
    "proto/envoy/type/v3/token_bucket.proto",
    "proto/udpa/annotations/migrate.proto",
    "proto/udpa/annotations/status.proto",
    "proto/udpa/annotations/versioning.proto",
    "proto/validate/validate.proto",
    "proto/xds/annotations/v3/status.proto",
    "proto/xds/core/v3/context_params.proto",
    "proto/google/rpc/status.proto",
    "proto/google/rpc/error_details.proto",
    "proto/google/rpc/code.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;

    // What `tonic_prost_build::Builder::compile_with_config` would set, done
    // here because the stubs come from two generators (see `Stubs`).
    let mut config = prost_build::Config::new();
    config
        .protoc_executable(protoc)
        .type_attribute(".", "#[allow(clippy::all)]")
        .file_descriptor_set_path(out.join("tollgate_descriptor.bin"))
        .include_file("tollgate_protos.rs")
        .service_generator(Box::new(Stubs {
            client: tonic_prost_build::configure()
                .build_server(false)
                .service_generator(),
            server: tonic_prost_build::configure()
                .build_client(false)
                .codec_path("crate::codec::RequestCodec")
                .service_generator(),
        }));
    config.compile_protos(PROTOS, &[PathBuf::from("proto"), well_known])?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}

/// Client stubs with tonic's prost codec, server stubs with
/// `codec::RequestCodec`, which answers an undecodable request with
/// INVALID_ARGUMENT. tonic-prost-build takes one codec for both sides, and a
/// client that cannot decode a response has not sent an invalid argument:
/// for it the failure stays INTERNAL.
struct Stubs {
    client: Box<dyn prost_build::ServiceGenerator>,
    server: Box<dyn prost_build::ServiceGenerator>,
}

impl prost_build::ServiceGenerator for Stubs {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        self.client.generate(service.clone(), buf);
        self.server.generate(service, buf);
    }

    fn finalize(&mut self, buf: &mut String) {
        self.client.finalize(buf);
        self.server.finalize(buf);
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        self.client.finalize_package(package, buf);
        self.server.finalize_package(package, buf);
    }
}
