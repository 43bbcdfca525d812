//! Webhook signatures checked by an independent implementation: the
//! reference `standardwebhooks` package from PyPI
//! (`tests/peers/webhook_verify.py`) verifies what Tollgate signs, with
//! either secret during a rotation's overlap, and refuses a tampered body
//! or a wrong secret.

use std::{io::Write as _, process::Command};

use tollgate_e2e::peers;
use tollgate_server::webhooks::signature::{Secret, headers};

/// What the reference implementation says of `body` sent with `headers`,
/// verified with `secret`.
fn verify(
    python: &std::path::Path,
    secret: &str,
    headers: &[(&str, String)],
    body: &str,
) -> String {
    let case = serde_json::json!({
        "secret": secret,
        "headers": headers.iter().cloned().collect::<std::collections::HashMap<_, _>>(),
        "body": body,
    });
    let mut child = Command::new(python)
        .arg(peers::workspace_root().join("tests/peers/webhook_verify.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(case.to_string().as_bytes())
        .expect("the case is written");
    let out = child.wait_with_output().expect("python finishes");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_reference_implementation_verifies_our_signatures() {
    let Some(python) = peers::venv_tool("webhook signature interop", "python3") else {
        return;
    };
    let has_package = Command::new(&python)
        .args(["-c", "import standardwebhooks"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_package {
        peers::skip(
            "webhook signature interop",
            "the virtualenv lacks standardwebhooks (.venv/bin/pip install standardwebhooks)",
        );
        return;
    }
    let (old, new) = (Secret::generate(), Secret::generate());
    let keys = [Secret::parse(&old).unwrap(), Secret::parse(&new).unwrap()];
    let body = r#"{"type":"apiKey.revoked","data":{"id":"42"}}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sent = headers(&keys, "msg_42", now, body.as_bytes());
    // During a rotation, a receiver holding either secret accepts it.
    assert_eq!(verify(&python, &old, &sent, body), "ok");
    assert_eq!(verify(&python, &new, &sent, body), "ok");
    // After it, the new secret alone.
    let after = headers(&keys[1..], "msg_43", now, body.as_bytes());
    assert_eq!(verify(&python, &new, &after, body), "ok");
    assert!(verify(&python, &old, &after, body).starts_with("refused"));
    // A tampered body, or a stale timestamp, is refused.
    assert!(verify(&python, &new, &sent, &body.replace("42", "43")).starts_with("refused"));
    let stale = headers(&keys, "msg_44", now - 3600, body.as_bytes());
    assert!(verify(&python, &new, &stale, body).starts_with("refused"));
}
