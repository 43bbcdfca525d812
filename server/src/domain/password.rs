//! Passwords: argon2id with the crate's default (OWASP) parameters, in the
//! PHC string format so parameters can be raised later without a migration.
//!
//! Each hash takes 19 MiB and tens of milliseconds of CPU, so hashing runs
//! through a [`Hasher`] that bounds how many run at once: without it a burst
//! of SetPassword calls grows the process by gigabytes.

use std::{sync::Arc, time::Duration};

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use tokio::sync::Semaphore;

use super::{Error, FieldViolation, Result};

/// Shortest password, in characters.
pub const MIN_LEN: usize = 12;
/// Longest password, in characters.
pub const MAX_LEN: usize = 1024;

/// How long a hash waits for a free slot before the call is refused as
/// RESOURCE_EXHAUSTED: long enough to ride out a short burst, short enough
/// that callers do not pile up behind the limit.
pub const PERMIT_WAIT: Duration = Duration::from_secs(2);

/// Memory reserved per concurrent hash: argon2's 19 MiB block matrix twice
/// over, for the allocator's slack, the blocking thread and the request.
const BYTES_PER_HASH: u64 = 2 * argon2::Params::DEFAULT_M_COST as u64 * 1024;

/// Runs argon2 hashes on the blocking pool, at most `permits` at a time.
/// Cheap to clone; clones share the limit.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    limit: usize,
    wait: Duration,
}

impl Hasher {
    /// A hasher running at most `limit` (at least 1) hashes at once, whose
    /// callers wait at most `wait` for a turn.
    pub fn new(limit: usize, wait: Duration) -> Self {
        let limit = limit.max(1);
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            wait,
        }
    }

    /// The default limit: one hash per CPU, fewer when half the available
    /// memory cannot hold that many, and never less than one.
    pub fn default_limit() -> usize {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let by_memory = available_memory()
            .map(|bytes| usize::try_from(bytes / 2 / BYTES_PER_HASH).unwrap_or(usize::MAX))
            .unwrap_or(cpus);
        cpus.min(by_memory).max(1)
    }

    /// How many hashes may run at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Hashes `password` when a slot is free, or fails with
    /// `ResourceExhausted` after waiting [`Hasher::new`]'s `wait`.
    pub async fn hash(&self, password: String) -> Result<String> {
        self.run(move || {
            metrics::counter!("tollgate_password_hashes_total").increment(1);
            hash(&password)
        })
        .await?
    }

    /// Verifies `password` against `phc` under the same limit as
    /// [`Hasher::hash`] (a verify costs what a hash costs). With `None`
    /// (an unknown user, or one without a password) it verifies against
    /// [`DUMMY_HASH`] and answers false, so the answer takes as long as
    /// for a wrong password of a real user.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool> {
        self.run(move || {
            metrics::counter!("tollgate_password_verifications_total").increment(1);
            match phc {
                Some(phc) => verify(&password, &phc),
                None => {
                    let _ = verify(&password, DUMMY_HASH);
                    false
                }
            }
        })
        .await
    }

    /// Runs `work` on the blocking pool under the limit. The slot moves
    /// into the blocking task, so a caller that goes away mid-hash does not
    /// free it before the hash ends.
    async fn run<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| Error::ResourceExhausted {
                reason: "PASSWORD_HASHING_BUSY",
                message: "too many passwords are being set at once; retry later".into(),
                retry_after: Duration::from_secs(1),
            })?
            .map_err(|e| Error::Internal(format!("hash limiter: {e}")))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| Error::Internal(format!("hash task: {e}")))
    }
}

/// Bytes of memory this process may still use: the kernel's estimate of
/// available memory, capped by the cgroup limit when there is one.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib.saturating_mul(1024))?;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    Some(cgroup.map_or(available, |c| c.min(available)))
}

/// An argon2id hash with the default parameters, of a password nobody
/// knows: what a sign-in of an unknown user is verified against, so it
/// costs what a real user's does.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$iKdLVmuwy3nnKLkC6F/xvA$vaDVrJKc1CTrfNj0reCJNGz09nxR0uxTRYAXQEOuL0A";

/// Checks a new password's length (in characters).
pub fn validate(field: &str, password: &str) -> Result<(), FieldViolation> {
    let n = password.chars().count();
    if !(MIN_LEN..=MAX_LEN).contains(&n) {
        return Err(FieldViolation::new(
            field,
            format!("must be {MIN_LEN} to {MAX_LEN} characters"),
        ));
    }
    Ok(())
}

/// Hashes a password. CPU-heavy: call it off the async workers.
pub fn hash(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("argon2: {e}")))
}

/// Verifies a password against a stored PHC string.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_hash_costs_what_a_real_one_does() {
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        let real_hash = hash("correct horse battery").unwrap();
        let real = PasswordHash::new(&real_hash).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.params, real.params);
        assert!(!verify("", DUMMY_HASH));
    }

    #[tokio::test]
    async fn verify_without_a_hash_is_false() {
        let hasher = Hasher::new(1, Duration::from_secs(5));
        let h = hash("correct horse battery").unwrap();
        assert!(
            hasher
                .verify("correct horse battery".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(!hasher.verify("wrong".into(), Some(h)).await.unwrap());
        assert!(!hasher.verify("anything".into(), None).await.unwrap());
    }

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &h));
        assert!(!verify("wrong horse battery", &h));
        assert!(!verify("x", "not a hash"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_limit_bounds_concurrent_work() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        let hasher = Hasher::new(2, Duration::from_secs(30));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let (hasher, running, peak) = (hasher.clone(), running.clone(), peak.clone());
                tokio::spawn(async move {
                    hasher
                        .run(move || {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(20));
                            running.fetch_sub(1, Ordering::SeqCst);
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_full_hasher_refuses_after_waiting() {
        let hasher = Hasher::new(1, Duration::from_millis(50));
        let busy = hasher.clone();
        let (started, wait) = tokio::sync::oneshot::channel();
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let holder = tokio::spawn(async move {
            busy.run(move || {
                let _ = started.send(());
                let _ = hold.recv();
            })
            .await
        });
        wait.await.unwrap();
        match hasher.hash("correct horse battery".into()).await {
            Err(Error::ResourceExhausted { retry_after, .. }) => {
                assert!(retry_after > Duration::ZERO)
            }
            other => panic!("{other:?}"),
        }
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        assert!(hasher.hash("correct horse battery".into()).await.is_ok());
    }

    #[test]
    fn the_default_limit_is_at_least_one_and_at_most_the_cpus() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert!((1..=cpus).contains(&Hasher::default_limit()));
    }

    #[test]
    fn lengths() {
        assert!(validate("password", "short").is_err());
        assert!(validate("password", &"x".repeat(12)).is_ok());
        assert!(validate("password", &"x".repeat(1025)).is_err());
    }
}
