//! The Connect protocol on the gRPC port, spoken by curl as any HTTP
//! client would: unary JSON and protobuf POSTs, GETs for methods without
//! side effects, errors in Connect's JSON, and a streaming call with
//! envelopes. (buf curl's Connect client is in `buf_curl.rs`.)

use base64::Engine as _;
use prost::Message as _;
use tollgate_e2e::{
    TestServer,
    curl::{self, Version},
    each_backend, v1,
};

fn url(server: &TestServer, method: &str) -> String {
    format!("http://{}/tollgate.v1.{method}", server.grpc_addr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_in_json_and_protobuf() {
    if curl::bin().is_none() {
        return;
    }
    each_backend(async |server: &mut TestServer| {
        let bearer = format!("authorization: Bearer {}", server.admin_key());
        for (i, version) in Version::ALL.into_iter().enumerate() {
            let body = format!(
                r#"{{"organizationId":"conn{i}","organization":{{"displayName":"Connect {i}"}}}}"#
            );
            let r = curl::request(
                version,
                &url(server, "OrganizationService/CreateOrganization"),
                &[
                    "-H",
                    "content-type: application/json",
                    "-H",
                    &bearer,
                    "--data-binary",
                    &body,
                ],
            )
            .await?;
            assert_eq!(r.status, 200, "{version:?}: {}", r.text());
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert!(
                r.header("x-request-id").is_some_and(|v| !v.is_empty()),
                "an id is assigned and echoed"
            );
            let json = r.json()?;
            assert_eq!(json["name"], format!("organizations/conn{i}"));
            assert_eq!(json["displayName"], format!("Connect {i}"));
            assert_eq!(json["state"], "ACTIVE", "enums by name: {json}");

            // The same call in protobuf.
            let request = v1::GetOrganizationRequest {
                name: format!("organizations/conn{i}"),
            };
            let dir = tempfile::tempdir()?;
            let file = dir.path().join("req.bin");
            std::fs::write(&file, request.encode_to_vec())?;
            let r = curl::request(
                version,
                &url(server, "OrganizationService/GetOrganization"),
                &[
                    "-H",
                    "content-type: application/proto",
                    "-H",
                    &format!("x-api-key: {}", server.admin_key()),
                    "--data-binary",
                    &format!("@{}", file.display()),
                ],
            )
            .await?;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.header("content-type"), Some("application/proto"));
            let org = v1::Organization::decode(r.body.as_slice())?;
            assert_eq!(org.display_name, format!("Connect {i}"));
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_is_offered_for_methods_without_side_effects_only() {
    if curl::bin().is_none() {
        return;
    }
    each_backend(async |server: &mut TestServer| {
        let key = format!("x-api-key: {}", server.admin_key());
        let json = r#"{"name":"organizations/root"}"#;
        let encoded: String = url_encode(json);
        let r = curl::request(
            Version::Http1,
            &format!(
                "{}?connect=v1&encoding=json&message={encoded}",
                url(server, "OrganizationService/GetOrganization")
            ),
            &["-H", &key, "-H", "x-request-id: trace-me-42"],
        )
        .await?;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("x-request-id"),
            Some("trace-me-42"),
            "the caller's id is echoed"
        );
        assert_eq!(r.json()?["name"], "organizations/root");

        let proto = v1::GetOrganizationRequest {
            name: "organizations/root".into(),
        }
        .encode_to_vec();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(proto);
        let r = curl::request(
            Version::H2c,
            &format!(
                "{}?encoding=proto&base64=1&message={b64}",
                url(server, "OrganizationService/GetOrganization")
            ),
            &["-H", &key],
        )
        .await?;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            v1::Organization::decode(r.body.as_slice())?.name,
            "organizations/root"
        );

        // CreateOrganization has side effects: no GET.
        let r = curl::request(
            Version::Http1,
            &format!(
                "{}?encoding=json&message=%7B%7D",
                url(server, "OrganizationService/CreateOrganization")
            ),
            &["-H", &key],
        )
        .await?;
        assert_eq!(r.status, 405, "{}", r.text());
        assert_eq!(r.header("allow"), Some("POST"));

        // A GET without an encoding names the parameter.
        let r = curl::request(
            Version::Http1,
            &url(server, "OrganizationService/GetOrganization"),
            &["-H", &key],
        )
        .await?;
        assert_eq!(r.status, 400, "{}", r.text());
        let e = r.json()?;
        assert_eq!(e["code"], "invalid_argument");
        assert_eq!(
            e["details"][1]["debug"]["fieldViolations"][0]["field"], "encoding",
            "{e}"
        );
        Ok(())
    })
    .await;
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_follow_the_connect_protocol() {
    if curl::bin().is_none() {
        return;
    }
    each_backend(async |server: &mut TestServer| {
        let bearer = format!("authorization: Bearer {}", server.admin_key());
        let get = url(server, "OrganizationService/GetOrganization");
        let post = |args: Vec<String>| {
            let get = get.clone();
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                curl::request(Version::Http1, &get, &args).await
            }
        };
        let json_ct = "content-type: application/json".to_owned();

        // Missing resource: 404, code by name, the resource in the message.
        let r = post(vec![
            "-H".into(),
            json_ct.clone(),
            "-H".into(),
            bearer.clone(),
            "-d".into(),
            r#"{"name":"organizations/ghost"}"#.into(),
        ])
        .await?;
        assert_eq!(r.status, 404);
        let e = r.json()?;
        assert_eq!(e["code"], "not_found");
        assert!(
            e["message"]
                .as_str()
                .unwrap_or("")
                .contains("organizations/ghost"),
            "{e}"
        );
        let info = e["details"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["type"] == "google.rpc.ErrorInfo"))
            .cloned();
        assert!(
            info.is_some_and(|i| i["value"].is_string() && i["debug"]["reason"] == "NOT_FOUND"),
            "{e}"
        );

        // No credentials: 401 unauthenticated.
        let r = post(vec![
            "-H".into(),
            json_ct.clone(),
            "-d".into(),
            r#"{"name":"organizations/root"}"#.into(),
        ])
        .await?;
        assert_eq!(
            (r.status, r.json()?["code"].clone()),
            (401, "unauthenticated".into())
        );

        // An unknown JSON field is refused, not ignored.
        let r = post(vec![
            "-H".into(),
            json_ct.clone(),
            "-H".into(),
            bearer.clone(),
            "-d".into(),
            r#"{"nmae":"organizations/root"}"#.into(),
        ])
        .await?;
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()?["code"], "invalid_argument");

        // A field the server validates: BadRequest names it.
        let r = post(vec![
            "-H".into(),
            json_ct.clone(),
            "-H".into(),
            bearer.clone(),
            "-d".into(),
            r#"{"name":"bogus"}"#.into(),
        ])
        .await?;
        assert_eq!(r.status, 400, "{}", r.text());
        let e = r.json()?;
        let br = e["details"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["type"] == "google.rpc.BadRequest"))
            .cloned();
        assert!(
            br.is_some_and(|b| b["debug"]["fieldViolations"][0]["field"] == "name"),
            "{e}"
        );

        // Not a Connect content type: 415.
        let r = post(vec![
            "-H".into(),
            "content-type: text/plain".into(),
            "-H".into(),
            bearer.clone(),
            "-d".into(),
            "hi".into(),
        ])
        .await?;
        assert_eq!(r.status, 415, "{}", r.text());

        // A malformed timeout header.
        let r = post(vec![
            "-H".into(),
            json_ct.clone(),
            "-H".into(),
            "connect-timeout-ms: soon".into(),
            "-H".into(),
            bearer.clone(),
            "-d".into(),
            r#"{"name":"organizations/root"}"#.into(),
        ])
        .await?;
        assert_eq!(r.status, 400, "{}", r.text());

        // A body over the 4 MiB limit: 413, and the server stays up.
        let dir = tempfile::tempdir()?;
        let big = dir.path().join("big.json");
        std::fs::write(
            &big,
            format!(r#"{{"name":"{}"}}"#, "a".repeat(5 * 1024 * 1024)),
        )?;
        let r = post(vec![
            "-H".into(),
            json_ct.clone(),
            "-H".into(),
            bearer.clone(),
            "--data-binary".into(),
            format!("@{}", big.display()),
        ])
        .await?;
        assert_eq!(r.status, 413, "{}", r.text());
        let r = post(vec![
            "-H".into(),
            json_ct,
            "-H".into(),
            bearer,
            "-d".into(),
            r#"{"name":"organizations/root"}"#.into(),
        ])
        .await?;
        assert_eq!(r.status, 200);
        Ok(())
    })
    .await;
}

/// A streaming call in Connect's JSON envelopes: server reflection (a
/// bidirectional method) answers one request and the stream ends with an
/// end-of-stream message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_calls_use_envelopes_and_end_of_stream() {
    if curl::bin().is_none() {
        return;
    }
    each_backend(async |server: &mut TestServer| {
        let message = br#"{"listServices":""}"#;
        let mut envelope = vec![0u8];
        envelope.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
        envelope.extend_from_slice(message);
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("env.bin");
        std::fs::write(&file, &envelope)?;
        for version in Version::ALL {
            let r = curl::request(
                version,
                &format!(
                    "http://{}/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                    server.grpc_addr()
                ),
                &[
                    "-H",
                    "content-type: application/connect+json",
                    "--data-binary",
                    &format!("@{}", file.display()),
                ],
            )
            .await?;
            assert_eq!(r.status, 200, "{version:?}: {}", r.text());
            assert_eq!(r.header("content-type"), Some("application/connect+json"));
            let envelopes = split_envelopes(&r.body)?;
            assert_eq!(envelopes.len(), 2, "{version:?}: {}", r.text());
            let (flags, first) = &envelopes[0];
            assert_eq!(*flags, 0);
            let first: serde_json::Value = serde_json::from_slice(first)?;
            let services = first["listServicesResponse"]["service"].to_string();
            assert!(
                services.contains("tollgate.v1.OrganizationService"),
                "{first}"
            );
            let (flags, end) = &envelopes[1];
            assert_eq!(*flags, 2, "the last envelope ends the stream");
            let end: serde_json::Value = serde_json::from_slice(end)?;
            assert!(end.get("error").is_none(), "{end}");
        }
        Ok(())
    })
    .await;
}

fn split_envelopes(mut body: &[u8]) -> anyhow::Result<Vec<(u8, Vec<u8>)>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        anyhow::ensure!(body.len() >= 5, "a truncated envelope header");
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        anyhow::ensure!(body.len() >= 5 + len, "a truncated envelope");
        out.push((body[0], body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    Ok(out)
}

/// CORS is off by default; with `--cors-allow-origin` a browser on that
/// origin gets its preflight answered and may read the gRPC-Web status and
/// request id, on HTTP/JSON, Connect and gRPC-Web alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_allowed_origins_only() {
    if curl::bin().is_none() {
        return;
    }
    let backend = tollgate_e2e::Backend::Sqlite;
    let mut closed = TestServer::start(&backend).await.unwrap();
    let preflight = |addr: std::net::SocketAddr, origin: &'static str, path: &'static str| async move {
        curl::request(
            Version::Http1,
            &format!("http://{addr}{path}"),
            &[
                "-X",
                "OPTIONS",
                "-H",
                &format!("origin: {origin}"),
                "-H",
                "access-control-request-method: POST",
                "-H",
                "access-control-request-headers: content-type,x-api-key",
            ],
        )
        .await
        .unwrap()
    };
    let r = preflight(
        closed.grpc_addr(),
        "https://app.example.com",
        "/v1/organizations",
    )
    .await;
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "off by default: {:?}",
        r.headers
    );
    closed.stop().await.unwrap();

    let mut open = TestServer::start_configured(&backend, |c| {
        c.cors_allow_origin = vec!["https://app.example.com".into()];
    })
    .await
    .unwrap();
    let addr = open.grpc_addr();
    for path in [
        "/v1/organizations",
        "/tollgate.v1.OrganizationService/GetOrganization",
    ] {
        let r = preflight(addr, "https://app.example.com", path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://app.example.com")
        );
        let allowed = r
            .header("access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(allowed.contains("x-api-key"), "{path}: {allowed}");
        let r = preflight(addr, "https://evil.example.com", path).await;
        assert!(
            r.header("access-control-allow-origin").is_none(),
            "{path}: {:?}",
            r.headers
        );
    }
    // The actual call carries the CORS headers too.
    let r = curl::request(
        Version::Http1,
        &format!("http://{addr}/v1/organizations/root"),
        &[
            "-H",
            "origin: https://app.example.com",
            "-H",
            &format!("x-api-key: {}", open.admin_key()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(
        exposed.contains("grpc-status") && exposed.contains("x-request-id"),
        "{exposed}"
    );
    open.stop().await.unwrap();
}
