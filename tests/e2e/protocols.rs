//! One port, four protocols, one request path: native gRPC (the client
//! crate), Connect, gRPC-Web and HTTP/JSON (curl) make the same calls and
//! get the same answers from the same layers: authentication, permissions
//! and the per-method metrics do not depend on the protocol. This binary
//! holds one test: the metrics recorder is process-wide.

use prost::Message as _;
use tollgate_e2e::{
    Code, TestServer,
    curl::{self, Version},
    each_backend,
    fixtures::{create_key, create_sa},
    http, v1,
};

const GET: &str = "/tollgate.v1.OrganizationService/GetOrganization";
const CREATE_SA: &str = "/tollgate.v1.ServiceAccountService/CreateServiceAccount";

/// `tollgate_grpc_requests_total` of `method` with `code`.
async fn count(server: &TestServer, method: &str, code: &str) -> anyhow::Result<f64> {
    let body = http::get(server.admin_addr(), "/metrics").await?.body;
    Ok(body
        .lines()
        .filter(|l| {
            l.starts_with("tollgate_grpc_requests_total{")
                && l.contains(&format!("method=\"{method}\""))
                && l.contains(&format!("code=\"{code}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// The gRPC status a call made over `protocol` ended with.
async fn call(
    server: &TestServer,
    protocol: &str,
    key: Option<&str>,
    method: &str,
    request: &[u8],
    json: &str,
) -> anyhow::Result<Code> {
    let base = format!("http://{}", server.grpc_addr());
    let auth = key.map(|k| format!("x-api-key: {k}"));
    let mut args: Vec<String> = Vec::new();
    if let Some(a) = &auth {
        args.extend(["-H".into(), a.clone()]);
    }
    let dir = tempfile::tempdir()?;
    Ok(match protocol {
        "grpc" => {
            let client = match key {
                Some(k) => server.client(k),
                None => server.builder().connect_lazy()?,
            };
            // The client crate's typed stubs.
            let status = match method {
                GET => client
                    .organizations()
                    .get_organization(v1::GetOrganizationRequest::decode(request)?)
                    .await
                    .err(),
                _ => client
                    .service_accounts()
                    .create_service_account(v1::CreateServiceAccountRequest::decode(request)?)
                    .await
                    .err(),
            };
            status.map_or(Code::Ok, |s| s.code())
        }
        "connect" => {
            args.extend([
                "-H".into(),
                "content-type: application/json".into(),
                "--data-binary".into(),
                json.into(),
            ]);
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = curl::request(Version::Http1, &format!("{base}{method}"), &a).await?;
            if r.status == 200 {
                Code::Ok
            } else {
                connect_code(r.json()?["code"].as_str().unwrap_or(""))
            }
        }
        "grpc-web" => {
            let file = dir.path().join("body");
            let mut framed = vec![0u8];
            framed.extend_from_slice(&u32::try_from(request.len())?.to_be_bytes());
            framed.extend_from_slice(request);
            std::fs::write(&file, framed)?;
            args.extend([
                "-H".into(),
                "content-type: application/grpc-web+proto".into(),
                "--data-binary".into(),
                format!("@{}", file.display()),
            ]);
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = curl::request(Version::Http1, &format!("{base}{method}"), &a).await?;
            anyhow::ensure!(r.status == 200, "gRPC-Web answers 200: {}", r.status);
            grpc_web_status(&r)?
        }
        _ => {
            let (verb, path) = match method {
                GET => ("GET", "/v1/organizations/root".to_owned()),
                _ => (
                    "POST",
                    "/v1/organizations/root/serviceAccounts?serviceAccountId=viaweb".to_owned(),
                ),
            };
            args.extend(["-X".into(), verb.into()]);
            if verb == "POST" {
                args.extend([
                    "-H".into(),
                    "content-type: application/json".into(),
                    "--data-binary".into(),
                    r#"{"displayName":"X"}"#.into(),
                ]);
            }
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = curl::request(Version::H2c, &format!("{base}{path}"), &a).await?;
            if r.status == 200 {
                Code::Ok
            } else {
                Code::from(i32::try_from(r.json()?["code"].as_i64().unwrap_or(2))?)
            }
        }
    })
}

fn connect_code(name: &str) -> Code {
    match name {
        "unauthenticated" => Code::Unauthenticated,
        "permission_denied" => Code::PermissionDenied,
        "not_found" => Code::NotFound,
        "invalid_argument" => Code::InvalidArgument,
        _ => Code::Unknown,
    }
}

/// The status in a gRPC-Web response: the trailers frame (flag 0x80), or
/// the headers of a trailers-only answer.
fn grpc_web_status(r: &curl::Response) -> anyhow::Result<Code> {
    if let Some(s) = r.header("grpc-status") {
        return Ok(Code::from(s.parse::<i32>()?));
    }
    let mut body = r.body.as_slice();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let frame = body.get(5..5 + len).unwrap_or_default();
        if body[0] & 0x80 != 0 {
            let text = String::from_utf8_lossy(frame);
            let status = text
                .lines()
                .find_map(|l| l.strip_prefix("grpc-status:"))
                .ok_or_else(|| anyhow::anyhow!("no grpc-status in {text}"))?;
            return Ok(Code::from(status.trim().parse::<i32>()?));
        }
        body = &body[(5 + len).min(body.len())..];
    }
    anyhow::bail!("no trailers in the gRPC-Web response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_passes_the_same_layers() {
    if curl::bin().is_none() {
        return;
    }
    each_backend(async |server: &mut TestServer| {
        let admin = server.admin();
        let sa = create_sa(&admin, "root", "watcher", &["viewer"]).await;
        let viewer = create_key(&admin, &sa.name, "viewer key").await.secret;
        let get = v1::GetOrganizationRequest {
            name: "organizations/root".into(),
        }
        .encode_to_vec();
        let get_json = r#"{"name":"organizations/root"}"#;
        let create = v1::CreateServiceAccountRequest {
            parent: "organizations/root".into(),
            service_account_id: "viaweb".into(),
            service_account: Some(v1::ServiceAccount {
                display_name: "X".into(),
                ..Default::default()
            }),
        }
        .encode_to_vec();
        let create_json = r#"{"parent":"organizations/root","serviceAccountId":"viaweb","serviceAccount":{"displayName":"X"}}"#;

        let protocols = ["grpc", "connect", "grpc-web", "http-json"];
        let before = (
            count(server, GET, "OK").await?,
            count(server, GET, "UNAUTHENTICATED").await?,
            count(server, CREATE_SA, "PERMISSION_DENIED").await?,
        );
        for protocol in protocols {
            let admin_key = server.admin_key().to_owned();
            assert_eq!(call(server, protocol, Some(&admin_key), GET, &get, get_json).await?, Code::Ok, "{protocol}");
            assert_eq!(call(server, protocol, None, GET, &get, get_json).await?, Code::Unauthenticated, "{protocol}");
            assert_eq!(
                call(server, protocol, Some(&viewer), CREATE_SA, &create, create_json).await?,
                Code::PermissionDenied,
                "{protocol}: a viewer may not create, whatever the protocol"
            );
        }
        let n = protocols.len() as f64;
        assert_eq!(count(server, GET, "OK").await? - before.0, n, "one OK per protocol");
        assert_eq!(count(server, GET, "UNAUTHENTICATED").await? - before.1, n);
        assert_eq!(count(server, CREATE_SA, "PERMISSION_DENIED").await? - before.2, n);
        Ok(())
    })
    .await;
}
