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

use prost_reflect::DescriptorPool;
use serde_json::{Value, json};
use tollgate_e2e::{Backend, TestServer, http, peers};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the HTTP front door"]
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
    //   mask does not name.
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
        "positive_data_acceptance,negative_data_rejection",
        "--max-examples",
        "20",
        "--generation-with-security-parameters",
        "false",
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--no-color",
    ]);
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "{}", show(&output));
    server.stop().await.unwrap();
}
