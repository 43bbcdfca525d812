//! The OpenAPI document, checked by tools that share no code with it:
//! openapi-spec-validator (PyPI) validates it against the OpenAPI 3.1
//! specification, and schemathesis (PyPI) checks it against a live server.
//! Both come from the virtualenv `TOLLGATE_TEST_VENV` names (default: the
//! workspace's `.venv`); a missing tool skips its test with a line on
//! stderr, or fails it under `TOLLGATE_TEST_STRICT=1`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::{Value, json};
use tollgate_e2e::{Backend, TestServer, fixtures, http, peers, rpc::RpcResult as _, v1};
use tollgate_server::{
    domain::names::{OrgName, id_segment_pattern},
    http::{
        openapi::{self, ApiInfo},
        routes::Routes,
    },
};

/// The document of the embedded descriptors, through the public API the
/// server calls.
fn our_document() -> Value {
    let pool = DescriptorPool::decode(tollgate::FILE_DESCRIPTOR_SET).unwrap();
    let services: Vec<_> = pool
        .services()
        .filter(|s| s.package_name() == "tollgate.v1")
        .collect();
    let routes = Routes::compile(&pool, &services).unwrap();
    openapi::document(&pool, &routes, &ApiInfo::default())
}

fn validator() -> Option<PathBuf> {
    peers::venv_tool("openapi-spec-validator tests", "openapi-spec-validator")
}

/// Runs openapi-spec-validator on `doc`, written to a temporary file.
fn validate(validator: &Path, doc: &Value) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    Command::new(validator)
        .args(["--schema", "3.1", "--validation-errors", "all"])
        .arg(&file)
        .output()
        .unwrap()
}

fn show(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_document_passes_openapi_spec_validator() {
    let Some(validator) = validator() else {
        return;
    };
    let output = validate(&validator, &our_document());
    assert!(output.status.success(), "{}", show(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("OK"),
        "{}",
        show(&output)
    );
}

#[test]
fn the_validator_is_not_vacuous() {
    // The same document with a path parameter the path does not declare,
    // and a `$ref` to nothing: both must be refused, or a pass above
    // would prove nothing.
    let Some(validator) = validator() else {
        return;
    };
    let mut doc = our_document();
    let get = &mut doc["paths"]["/v1/organizations/{organization}"]["get"];
    get["parameters"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "nope", "in": "path", "required": true, "schema": {} }));
    let output = validate(&validator, &doc);
    assert!(!output.status.success(), "{}", show(&output));
    assert!(show(&output).contains("'nope'"), "{}", show(&output));

    let mut doc = our_document();
    doc["paths"]["/v1/organizations/{organization}"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"] = json!({ "$ref": "#/components/schemas/Nope" });
    let output = validate(&validator, &doc);
    assert!(!output.status.success(), "{}", show(&output));
    assert!(
        show(&output).contains("/components/schemas/Nope"),
        "{}",
        show(&output)
    );
}

#[test]
fn the_id_pattern_agrees_with_the_server_name_parser() {
    // The path parameters' pattern, evaluated by Python's regex engine,
    // against the server's own resource-name parser, on the edges of the
    // rule (JSON Schema patterns are unanchored searches, as `re.search`).
    let Some(python) = peers::venv_tool("the id pattern test", "python3") else {
        return;
    };
    let samples = [
        "a",
        "root",
        "a-b",
        "0abc",
        "0190a7e2-7b7c-7cc2-9a35-0f4b2d0f6a11",
        &"a".repeat(63),
        &"a".repeat(64),
        "",
        "a-",
        "-a",
        "A",
        "a_b",
        "a.b",
        "a b",
        "ü",
        "a:b",
    ];
    let script = "import json, re, sys\n\
                  pattern, samples = json.load(sys.stdin)\n\
                  print(json.dumps([re.search(pattern, s) is not None for s in samples]))";
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let input = json!([id_segment_pattern(), samples]).to_string();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", show(&output));
    let matched: Vec<bool> = serde_json::from_slice(&output.stdout).unwrap();
    for (sample, matched) in samples.iter().zip(matched) {
        let parsed = OrgName::parse("name", &format!("organizations/{sample}")).is_ok();
        assert_eq!(
            matched, parsed,
            "{sample:?}: pattern {matched}, server {parsed}"
        );
    }
}

/// A message as the transcoder encodes it: proto3 JSON with every field
/// without presence kept at its default (prost-reflect's serializer with
/// `skip_default_fields(false)`).
fn transcoded<M: prost::Message>(pool: &DescriptorPool, full_name: &str, message: &M) -> Value {
    let desc = pool.get_message_by_name(full_name).unwrap();
    let dynamic = DynamicMessage::decode(desc, message.encode_to_vec().as_slice()).unwrap();
    dynamic
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new().skip_default_fields(false),
        )
        .unwrap()
}

/// The error body of a failed call: its `google.rpc.Status` with details.
fn transcoded_error(pool: &DescriptorPool, status: &tonic::Status) -> Value {
    let desc = pool.get_message_by_name("google.rpc.Status").unwrap();
    let dynamic = DynamicMessage::decode(desc, status.details()).unwrap();
    let json = dynamic
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new().skip_default_fields(false),
        )
        .unwrap();
    assert_eq!(json["code"], status.code() as i32, "{json}");
    json
}

/// Validates each `(label, schema, instance)` with Python's jsonschema
/// (JSON Schema 2020-12, formats checked), `$ref`s resolved in `doc`.
/// Returns the failures, one line each.
fn json_schema_failures(
    python: &Path,
    doc: &Value,
    samples: &[(String, Value, Value)],
) -> Vec<String> {
    let script = "import json, sys\n\
                  from jsonschema import Draft202012Validator as V\n\
                  doc, samples = json.load(sys.stdin)\n\
                  for label, schema, instance in samples:\n\
                  \x20   root = dict(schema, components=doc['components'])\n\
                  \x20   for e in V(root, format_checker=V.FORMAT_CHECKER).iter_errors(instance):\n\
                  \x20       print(label + ': ' + e.message.replace('\\n', ' ')[:300])";
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let input = json!([doc, samples]).to_string();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", show(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_responses_encoded_as_proto3_json_match_the_document() {
    // Until the HTTP front door serves them, the messages of real calls
    // encoded the way the transcoder encodes them (see `transcoded`) must
    // validate against the documented schema of the operation that
    // returns them: the `200` schema by path and method, `default` for
    // errors.
    let Some(python) = peers::venv_tool("the response schema test", "python3") else {
        return;
    };
    let doc = our_document();
    let pool = DescriptorPool::decode(tollgate::FILE_DESCRIPTOR_SET).unwrap();
    let mut server = TestServer::start(&Backend::Sqlite).await.unwrap();
    let admin = server.admin();
    let mut samples: Vec<(String, Value, Value)> = Vec::new();
    let mut ok = |path: &str, verb: &str, name: &str, json: Value| {
        let schema =
            doc["paths"][path][verb]["responses"]["200"]["content"]["application/json"]["schema"]
                .clone();
        assert!(schema.is_object(), "no 200 schema for {verb} {path}");
        samples.push((format!("{verb} {path} ({name})"), schema, json));
    };
    let org = "/v1/organizations/{organization}";
    let user = "/v1/organizations/{organization}/users/{user}";
    let sa = "/v1/organizations/{organization}/serviceAccounts/{serviceAccount}";
    let sa_keys = "/v1/organizations/{organization}/serviceAccounts/{serviceAccount}/apiKeys";
    let user_key = "/v1/organizations/{organization}/users/{user}/apiKeys/{apiKey}";

    let acme = fixtures::create_org(&admin, "acme", "Acme").await;
    ok(
        "/v1/organizations",
        "post",
        "created",
        transcoded(&pool, "tollgate.v1.Organization", &acme),
    );
    let root = admin
        .organizations()
        .get_organization(v1::GetOrganizationRequest {
            name: "organizations/root".into(),
        })
        .await
        .expect_ok();
    ok(
        org,
        "get",
        "root",
        transcoded(&pool, "tollgate.v1.Organization", &root),
    );
    let list = admin
        .organizations()
        .list_organizations(v1::ListOrganizationsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect_ok();
    assert!(!list.next_page_token.is_empty());
    ok(
        "/v1/organizations",
        "get",
        "a page",
        transcoded(&pool, "tollgate.v1.ListOrganizationsResponse", &list),
    );
    let updated = admin
        .organizations()
        .update_organization(v1::UpdateOrganizationRequest {
            organization: Some(v1::Organization {
                name: acme.name.clone(),
                state: v1::organization::State::Suspended as i32,
                ..Default::default()
            }),
            update_mask: fixtures::mask(&["state"]),
        })
        .await
        .expect_ok();
    ok(
        org,
        "patch",
        "suspended",
        transcoded(&pool, "tollgate.v1.Organization", &updated),
    );

    let alice = fixtures::create_user(&admin, "root", "alice", &[]).await;
    ok(
        "/v1/organizations/{organization}/users",
        "post",
        "no roles",
        transcoded(&pool, "tollgate.v1.User", &alice),
    );
    let alice = admin
        .users()
        .set_password(v1::SetPasswordRequest {
            name: alice.name.clone(),
            password: "correct horse battery staple".into(),
        })
        .await
        .expect_ok();
    ok(
        &format!("{user}:setPassword"),
        "post",
        "with password",
        transcoded(&pool, "tollgate.v1.User", &alice),
    );
    let users = admin
        .users()
        .list_users(v1::ListUsersRequest {
            parent: "organizations/root".into(),
            ..Default::default()
        })
        .await
        .expect_ok();
    ok(
        "/v1/organizations/{organization}/users",
        "get",
        "last page",
        transcoded(&pool, "tollgate.v1.ListUsersResponse", &users),
    );

    let ci = fixtures::create_sa(&admin, "root", "ci", &["viewer"]).await;
    ok(
        sa,
        "get",
        "created",
        transcoded(&pool, "tollgate.v1.ServiceAccount", &ci),
    );
    let key = fixtures::create_key(&admin, &ci.name, "ci key").await;
    ok(
        sa_keys,
        "post",
        "with its secret",
        transcoded(&pool, "tollgate.v1.ApiKey", &key),
    );
    let keys = admin
        .api_keys()
        .list_api_keys(v1::ListApiKeysRequest {
            parent: ci.name.clone(),
            ..Default::default()
        })
        .await
        .expect_ok();
    ok(
        sa_keys,
        "get",
        "one key",
        transcoded(&pool, "tollgate.v1.ListApiKeysResponse", &keys),
    );
    let user_key_msg = fixtures::create_key(&admin, &alice.name, "alice key").await;
    let revoked = admin
        .api_keys()
        .revoke_api_key(v1::RevokeApiKeyRequest {
            name: user_key_msg.name.clone(),
            ..Default::default()
        })
        .await
        .expect_ok();
    assert!(revoked.revoke_time.is_some());
    ok(
        &format!("{user_key}:revoke"),
        "post",
        "revoked",
        transcoded(&pool, "tollgate.v1.ApiKey", &revoked),
    );
    // google.protobuf.Empty is `()` in Rust.
    admin
        .users()
        .delete_user(v1::DeleteUserRequest {
            name: alice.name.clone(),
            ..Default::default()
        })
        .await
        .expect_ok();
    ok(
        user,
        "delete",
        "empty",
        transcoded(&pool, "google.protobuf.Empty", &()),
    );

    // Errors, with their details.
    let error_schema =
        doc["paths"][user]["get"]["responses"]["default"]["content"]["application/json"]["schema"]
            .clone();
    let missing = admin
        .users()
        .get_user(v1::GetUserRequest {
            name: alice.name.clone(),
        })
        .await
        .expect_failure();
    samples.push((
        "not found".into(),
        error_schema.clone(),
        transcoded_error(&pool, &missing),
    ));
    let invalid = admin
        .users()
        .create_user(v1::CreateUserRequest {
            parent: "organizations/root".into(),
            user: Some(v1::User::default()),
            user_id: "Not An Id".into(),
        })
        .await
        .expect_failure();
    let invalid = transcoded_error(&pool, &invalid);
    assert!(
        invalid["details"].as_array().is_some_and(|d| d.len() > 1),
        "{invalid}"
    );
    samples.push(("invalid argument".into(), error_schema, invalid));
    server.stop().await.unwrap();

    let failures = json_schema_failures(&python, &doc, &samples);
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The check can fail: a response without a field the document
    // requires, and a 64-bit integer as a number, are refused.
    let (label, schema, mut instance) = samples[1].clone();
    instance.as_object_mut().unwrap().remove("etag");
    let mut status = samples.last().unwrap().clone();
    status.2["details"] = json!([{ "no": "type" }]);
    let failures = json_schema_failures(&python, &doc, &[(label, schema, instance), status]);
    assert_eq!(failures.len(), 2, "{failures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors_and_responses_as_documented() {
    let Some(schemathesis) = peers::venv_tool("schemathesis tests", "schemathesis") else {
        return;
    };
    let mut server = TestServer::start(&Backend::Sqlite).await.unwrap();
    let addr = server.grpc_addr();

    // The served document is the one the descriptors give.
    let response = http::get(addr, openapi::PATH).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let served: Value = serde_json::from_str(&response.body).unwrap();
    let ours = our_document();
    assert_eq!(served["paths"], ours["paths"]);
    assert_eq!(served["components"], ours["components"]);

    // Every operation (all GETs, and create, update, delete and the
    // custom methods) with the admin key, so calls get past
    // authorization. Excluded checks, on purpose:
    // - positive_data_acceptance: the server validates more than a schema
    //   can say (name lengths, a state other than STATE_UNSPECIFIED, a
    //   page size that is not negative, existing resources), so valid
    //   documents meet 400 and 404;
    // - negative_data_rejection: proto3 JSON accepts more than the
    //   canonical form documented (`null` for any field, enum numbers,
    //   proto field names), and an update may omit a REQUIRED field its
    //   mask does not name;
    // - ignored_auth: it drops the credentials it knows of, but the admin
    //   key goes in through `-H` on every request, so the "unauthenticated"
    //   call still carries it (refusals without a key are tested in
    //   http_json.rs and, per method, in authz_matrix.rs).
    // Also excluded: the watch, whose stream stays open until the client
    // leaves, which schemathesis reports as a failed connection (its HTTP
    // forms are tested in watch.rs).
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(schemathesis);
    cmd.current_dir(dir.path()).args([
        "run",
        &format!("http://{addr}{}", openapi::PATH),
        "--url",
        &format!("http://{addr}"),
        "-H",
        &format!("authorization: Bearer {}", server.admin_key()),
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance,negative_data_rejection,ignored_auth",
        "--max-examples",
        "20",
        "--generation-with-security-parameters",
        "false",
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--exclude-path-regex",
        ":watch$",
        "--no-color",
    ]);
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "{}", show(&output));
    server.stop().await.unwrap();
}
