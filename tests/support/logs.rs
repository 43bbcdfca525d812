//! The log lines of this test process: the servers a test binary starts
//! log through its one global `tracing` subscriber, which a test installs
//! with [`Capture`] as its writer.

use std::sync::Mutex;

/// Everything written so far.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// A writer into the process's captured log (`with_writer(|| Capture)`).
pub struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured log, as text.
pub fn captured() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}
