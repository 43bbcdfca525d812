//! The shutdown signal shared by the `tollgate` binary and the benchmark:
//! a future that completes on Ctrl-C (SIGINT) or SIGTERM.
//!
//! It is a plain future rather than a flag so that it can be passed to
//! [`crate::run`] as its `shutdown` argument, which then drains in-flight
//! calls; tests pass their own future instead of a signal.

/// Completes on the first Ctrl-C (SIGINT) or SIGTERM.
///
/// Both are awaited because a terminal sends SIGINT while `kill`, systemd
/// and container runtimes send SIGTERM, and each of them should end the
/// process with a drain rather than the default abrupt exit.
///
/// If a handler cannot be installed, that branch never completes instead of
/// completing at once: the signal then keeps its default action, which
/// still ends the process, and a failed registration must not look like a
/// shutdown request.
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
