//! HTTP/JSON transcoding end to end, with curl over HTTP/1.1 and h2c, as a
//! grpc-gateway user drives it: CRUD of every service, pagination, field
//! masks, etags, every error status a client can cause, credentials, and
//! request ids.

use serde_json::{Value, json};
use tollgate_e2e::{
    TestServer,
    curl::{self, Response, Version},
    each_backend,
};

/// curl against one server, one HTTP version, one credential.
struct Http<'a> {
    server: &'a TestServer,
    version: Version,
    key: Option<String>,
}

impl Http<'_> {
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        extra: &[&str],
    ) -> anyhow::Result<Response> {
        let mut args: Vec<String> = vec!["-X".into(), method.into()];
        if let Some(key) = &self.key {
            args.push("-H".into());
            args.push(format!("authorization: Bearer {key}"));
        }
        // Through a file: a body can be larger than an argument may be.
        let dir = tempfile::tempdir()?;
        if let Some(body) = body {
            let file = dir.path().join("body.json");
            std::fs::write(&file, body.to_string())?;
            args.extend(["-H".into(), "content-type: application/json".into()]);
            args.extend(["--data-binary".into(), format!("@{}", file.display())]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let url = format!("http://{}{path}", self.server.grpc_addr());
        curl::request(self.version, &url, &args).await
    }

    /// Sends and expects `status`, returning the JSON body.
    async fn expect(
        &self,
        status: u16,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let r = self.send(method, path, body, &[]).await?;
        anyhow::ensure!(
            r.status == status,
            "{method} {path} ({:?}): expected {status}, got {}: {}",
            self.version,
            r.status,
            r.text()
        );
        r.json()
    }
}

/// The first `google.rpc.BadRequest` field violation of an error body.
fn violation(error: &Value) -> Option<(String, String)> {
    error["details"].as_array()?.iter().find_map(|d| {
        (d["@type"] == "type.googleapis.com/google.rpc.BadRequest").then(|| {
            let v = &d["fieldViolations"][0];
            (
                v["field"].as_str().unwrap_or("").to_owned(),
                v["description"].as_str().unwrap_or("").to_owned(),
            )
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_round_trips_over_http1_and_h2c() {
    if curl::bin().is_none() {
        return;
    }
    each_backend(async |server: &mut TestServer| {
        for (i, version) in Version::ALL.into_iter().enumerate() {
            let admin = Http {
                server,
                version,
                key: Some(server.admin_key().to_owned()),
            };
            let org = format!("web{i}");
            let o = format!("/v1/organizations/{org}");

            // Organizations: create (id from the query), get, update with a
            // mask and an etag, a stale etag refused.
            let created = admin
                .expect(200, "POST", &format!("/v1/organizations?organizationId={org}"), Some(&json!({"displayName": "Web"})))
                .await?;
            assert_eq!(created["name"], format!("organizations/{org}"));
            assert_eq!(created["state"], "ACTIVE");
            assert!(created["createTime"].as_str().is_some_and(|t| t.ends_with('Z')), "{created}");
            let got = admin.expect(200, "GET", &o, None).await?;
            assert_eq!(got["displayName"], "Web");
            let updated = admin
                .expect(
                    200,
                    "PATCH",
                    &format!("{o}?updateMask=displayName"),
                    Some(&json!({"displayName": "Web 2", "etag": got["etag"]})),
                )
                .await?;
            assert_eq!(updated["displayName"], "Web 2");
            assert_ne!(updated["etag"], got["etag"]);
            let stale = admin
                .expect(409, "PATCH", &format!("{o}?update_mask=display_name"), Some(&json!({"displayName": "Web 3", "etag": got["etag"]})))
                .await?;
            assert_eq!(stale["code"], 10, "ABORTED: {stale}");
            let dup = admin
                .expect(409, "POST", &format!("/v1/organizations?organizationId={org}"), Some(&json!({"displayName": "Again"})))
                .await?;
            assert_eq!(dup["code"], 6, "ALREADY_EXISTS: {dup}");

            // Users, with a custom verb.
            let user = admin
                .expect(
                    200,
                    "POST",
                    &format!("{o}/users?userId=bob"),
                    Some(&json!({"displayName": "Bob", "email": "bob@example.com", "roles": ["viewer"]})),
                )
                .await?;
            assert_eq!(user["name"], format!("organizations/{org}/users/bob"));
            assert_eq!(user["hasPassword"], false);
            let user = admin
                .expect(200, "POST", &format!("{o}/users/bob:setPassword"), Some(&json!({"password": "correct horse battery staple"})))
                .await?;
            assert_eq!(user["hasPassword"], true, "{user}");
            let user = admin
                .expect(200, "PATCH", &format!("{o}/users/bob?updateMask=roles"), Some(&json!({"roles": ["editor"]})))
                .await?;
            assert_eq!(user["roles"], json!(["editor"]));
            let users = admin.expect(200, "GET", &format!("{o}/users"), None).await?;
            assert_eq!(users["users"][0]["name"], user["name"]);

            // Service accounts and their keys; the minted key works over HTTP
            // until it is revoked.
            let sa = admin
                .expect(
                    200,
                    "POST",
                    &format!("{o}/serviceAccounts?serviceAccountId=ci"),
                    Some(&json!({"displayName": "CI", "roles": ["viewer"]})),
                )
                .await?;
            assert_eq!(sa["name"], format!("organizations/{org}/serviceAccounts/ci"));
            let sa = admin
                .expect(200, "PATCH", &format!("{o}/serviceAccounts/ci?updateMask=description"), Some(&json!({"description": "builds"})))
                .await?;
            assert_eq!(sa["description"], "builds");
            let sas = admin.expect(200, "GET", &format!("{o}/serviceAccounts"), None).await?;
            assert_eq!(sas["serviceAccounts"].as_array().map(Vec::len), Some(1));
            let key = admin
                .expect(200, "POST", &format!("{o}/serviceAccounts/ci/apiKeys"), Some(&json!({"displayName": "deploy"})))
                .await?;
            let secret = key["secret"].as_str().unwrap_or_default().to_owned();
            assert!(secret.starts_with("tg_"), "{key}");
            let ci = Http {
                server,
                version,
                key: Some(secret.clone()),
            };
            ci.expect(200, "GET", &o, None).await?;
            let key_path = format!("/v1/{}", key["name"].as_str().unwrap_or_default());
            let fetched = admin.expect(200, "GET", &key_path, None).await?;
            assert_eq!(fetched["secret"], "", "the secret is shown once: {fetched}");
            let keys = admin.expect(200, "GET", &format!("{o}/serviceAccounts/ci/apiKeys"), None).await?;
            assert_eq!(keys["apiKeys"][0]["name"], key["name"]);
            let revoked = admin.expect(200, "POST", &format!("{key_path}:revoke"), Some(&json!({}))).await?;
            assert!(revoked["revokeTime"].is_string(), "{revoked}");
            let refused = ci.expect(401, "GET", &o, None).await?;
            assert_eq!(refused["code"], 16);

            // A user's own key (the additional binding).
            let ukey = admin.expect(200, "POST", &format!("{o}/users/bob/apiKeys"), Some(&json!({}))).await?;
            assert!(ukey["name"].as_str().is_some_and(|n| n.contains("/users/bob/apiKeys/")), "{ukey}");

            // Deletes, children first; then the organization is gone.
            admin.expect(200, "DELETE", &format!("{o}/serviceAccounts/ci"), None).await?;
            let deleted = admin.expect(200, "DELETE", &format!("{o}/users/bob"), None).await?;
            assert_eq!(deleted, json!({}), "Empty renders as {{}}");
            admin.expect(200, "DELETE", &format!("{o}?force=true"), None).await?;
            let gone = admin.expect(404, "GET", &o, None).await?;
            assert_eq!(gone["code"], 5);
            assert!(gone["message"].as_str().is_some_and(|m| m.contains(&org)), "{gone}");
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_paginate_and_filter() {
    if curl::bin().is_none() {
        return;
    }
    each_backend(async |server: &mut TestServer| {
        let admin = Http {
            server,
            version: Version::Http1,
            key: Some(server.admin_key().to_owned()),
        };
        for i in 0..5 {
            admin
                .expect(
                    200,
                    "POST",
                    &format!("/v1/organizations?organizationId=page{i}"),
                    Some(&json!({"displayName": format!("Page {i}")})),
                )
                .await?;
        }
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = admin
                .expect(
                    200,
                    "GET",
                    &format!("/v1/organizations?pageSize=2&pageToken={token}"),
                    None,
                )
                .await?;
            let orgs = page["organizations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(orgs.len() <= 2, "{page}");
            seen.extend(
                orgs.iter()
                    .map(|o| o["name"].as_str().unwrap_or_default().to_owned()),
            );
            token = page["nextPageToken"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(seen.len(), 6, "root and five: {seen:?}");
        let filtered = admin
            .expect(
                200,
                "GET",
                "/v1/organizations?filter=display_name%3D%22Page%203%22",
                None,
            )
            .await?;
        assert_eq!(
            filtered["organizations"].as_array().map(Vec::len),
            Some(1),
            "{filtered}"
        );
        // Snake case names work in the query string too.
        let page = admin
            .expect(200, "GET", "/v1/organizations?page_size=1", None)
            .await?;
        assert_eq!(page["organizations"].as_array().map(Vec::len), Some(1));
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_grpc_gateway_statuses_and_bodies() {
    if curl::bin().is_none() {
        return;
    }
    each_backend(async |server: &mut TestServer| {
        for version in Version::ALL {
            let admin = Http {
                server,
                version,
                key: Some(server.admin_key().to_owned()),
            };
            let anon = Http {
                server,
                version,
                key: None,
            };

            // 404 for an unknown path, in the same JSON shape.
            let e = admin.expect(404, "GET", "/v1/nothing/here", None).await?;
            assert_eq!(e["code"], 5);
            assert!(e["message"].is_string() && e["details"].is_array(), "{e}");

            // 405 with Allow for a known path.
            let r = admin
                .send("PUT", "/v1/organizations/root", Some(&json!({})), &[])
                .await?;
            assert_eq!(r.status, 405, "{}", r.text());
            assert_eq!(r.header("allow"), Some("DELETE, GET, PATCH"));
            assert_eq!(r.json()?["code"], 12);

            // 400: malformed JSON, an unknown field and a type error, each
            // named; an unknown query parameter.
            let r = admin
                .send(
                    "POST",
                    "/v1/organizations?organizationId=bad",
                    None,
                    &[
                        "-H",
                        "content-type: application/json",
                        "--data-binary",
                        "{\"displayName\": ",
                    ],
                )
                .await?;
            assert_eq!(r.status, 400, "{}", r.text());
            assert_eq!(r.json()?["code"], 3);
            let e = admin
                .expect(
                    400,
                    "POST",
                    "/v1/organizations?organizationId=bad",
                    Some(&json!({"displayNmae": "x"})),
                )
                .await?;
            let (field, _) = violation(&e).ok_or_else(|| anyhow::anyhow!("no violation: {e}"))?;
            assert!(field.contains("displayNmae"), "{e}");
            let e = admin
                .expect(
                    400,
                    "POST",
                    "/v1/organizations/root/users?userId=x",
                    Some(&json!({"displayName": "X", "email": "x@example.com", "roles": "admin"})),
                )
                .await?;
            assert!(
                violation(&e).is_some_and(|(f, _)| f.contains("roles")),
                "{e}"
            );
            let e = admin
                .expect(400, "GET", "/v1/organizations?pageSise=1", None)
                .await?;
            assert!(violation(&e).is_some_and(|(f, _)| f == "pageSise"), "{e}");
            let e = admin
                .expect(400, "GET", "/v1/organizations?pageSize=many", None)
                .await?;
            assert!(violation(&e).is_some_and(|(f, _)| f == "pageSize"), "{e}");
            // The server's own validation, through the same shape.
            let e = admin
                .expect(
                    400,
                    "POST",
                    "/v1/organizations?organizationId=Not_Valid",
                    Some(&json!({"displayName": "x"})),
                )
                .await?;
            assert!(violation(&e).is_some(), "{e}");

            // 413 over the body limit; the server answers the next call.
            let big = json!({"displayName": "x".repeat(5 * 1024 * 1024)});
            let r = admin
                .send(
                    "POST",
                    "/v1/organizations?organizationId=big",
                    Some(&big),
                    &[],
                )
                .await?;
            assert_eq!(r.status, 413, "{}", r.text());
            assert_eq!(r.json()?["code"], 8);

            // 415 for a body that is not JSON.
            let r = admin
                .send(
                    "POST",
                    "/v1/organizations?organizationId=form",
                    None,
                    &[
                        "-H",
                        "content-type: application/x-www-form-urlencoded",
                        "--data-binary",
                        "displayName=x",
                    ],
                )
                .await?;
            assert_eq!(r.status, 415, "{}", r.text());
            assert_eq!(r.json()?["code"], 3);

            // 401 without credentials, 403 with too little.
            let e = anon
                .expect(401, "GET", "/v1/organizations/root", None)
                .await?;
            assert_eq!(e["code"], 16);
            // Without credentials the body is not even parsed: refused by
            // the same layer as over gRPC, before any work on it.
            let r = anon
                .send(
                    "POST",
                    "/v1/organizations?organizationId=anon",
                    None,
                    &[
                        "-H",
                        "content-type: application/json",
                        "--data-binary",
                        "{\"displayName\": ",
                    ],
                )
                .await?;
            assert_eq!(r.status, 401, "{}", r.text());
            let viewer = admin
                .expect(
                    200,
                    "POST",
                    &format!(
                        "/v1/organizations/root/serviceAccounts?serviceAccountId=viewer{}",
                        version as u8
                    ),
                    Some(&json!({"displayName": "V", "roles": ["viewer"]})),
                )
                .await?;
            let key = admin
                .expect(
                    200,
                    "POST",
                    &format!(
                        "/v1/{}/apiKeys",
                        viewer["name"].as_str().unwrap_or_default()
                    ),
                    Some(&json!({})),
                )
                .await?;
            let viewer = Http {
                server,
                version,
                key: key["secret"].as_str().map(str::to_owned),
            };
            let e = viewer
                .expect(
                    403,
                    "POST",
                    "/v1/organizations/root/users?userId=nope",
                    Some(&json!({"displayName": "N", "email": "n@example.com"})),
                )
                .await?;
            assert_eq!(e["code"], 7);

            // 504 when the deadline (Grpc-Timeout) passes first: hashing a
            // password in a test build takes far longer than 100 ms. Not
            // 1 ms: the request body must have arrived when the answer
            // goes, or the server answers early and then resets the
            // request's stream with NO_ERROR (RFC 9113 §8.1), which
            // Debian's curl 7.88 reports as error 92 without the status.
            let slow = format!("slow{}", version as u8);
            admin
                .expect(
                    200,
                    "POST",
                    &format!("/v1/organizations/root/users?userId={slow}"),
                    Some(&json!({"displayName": "S", "email": format!("{slow}@example.com")})),
                )
                .await?;
            let r = admin
                .send(
                    "POST",
                    &format!("/v1/organizations/root/users/{slow}:setPassword"),
                    Some(&json!({"password": "correct horse battery staple"})),
                    &["-H", "grpc-timeout: 100m"],
                )
                .await?;
            assert_eq!(r.status, 504, "{}", r.text());
            assert_eq!(r.json()?["code"], 4);

            // FAILED_PRECONDITION is 400: an organization with members.
            admin
                .expect(
                    200,
                    "POST",
                    &format!("/v1/organizations?organizationId=full{}", version as u8),
                    Some(&json!({"displayName": "Full"})),
                )
                .await?;
            admin
                .expect(
                    200,
                    "POST",
                    &format!(
                        "/v1/organizations/full{}/serviceAccounts?serviceAccountId=x",
                        version as u8
                    ),
                    Some(&json!({"displayName": "X"})),
                )
                .await?;
            let e = admin
                .expect(
                    400,
                    "DELETE",
                    &format!("/v1/organizations/full{}", version as u8),
                    None,
                )
                .await?;
            assert_eq!(e["code"], 9, "{e}");
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_pass_as_grpc_gateway_passes_them() {
    if curl::bin().is_none() {
        return;
    }
    each_backend(async |server: &mut TestServer| {
        for version in Version::ALL {
            let admin = Http {
                server,
                version,
                key: None,
            };
            // x-api-key works like Authorization: Bearer.
            let key = format!("x-api-key: {}", server.admin_key());
            let r = admin
                .send(
                    "GET",
                    "/v1/organizations/root",
                    None,
                    &["-H", &key, "-H", "x-request-id: http-req-7"],
                )
                .await?;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.header("x-request-id"), Some("http-req-7"));
            assert_eq!(r.header("content-type"), Some("application/json"));
            // Without one, an id is made up and still echoed, on errors too.
            let r = admin
                .send("GET", "/v1/organizations/root", None, &[])
                .await?;
            assert_eq!(r.status, 401);
            assert!(r.header("x-request-id").is_some_and(|v| !v.is_empty()));
            let r = admin
                .send(
                    "GET",
                    "/v1/organizations/root",
                    None,
                    &["-H", &key, "-H", "grpc-timeout: soon"],
                )
                .await?;
            assert_eq!(
                r.status,
                400,
                "a malformed Grpc-Timeout is refused: {}",
                r.text()
            );
        }
        Ok(())
    })
    .await;
}
