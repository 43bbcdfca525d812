//! TLS for the listeners: rustls with the ring provider (the client crate's
//! choice; no second crypto library), ALPN `h2` and `http/1.1`, and a
//! certificate that is reloaded when its files change.
//!
//! Certificates are renewed on disk (cert-manager, certbot, a mounted
//! secret) more often than servers are restarted, so [`Tls::watch`] polls
//! the files' modification time and size every few seconds. Polling, not
//! inotify: it needs no dependency, works through the symlink swaps
//! Kubernetes does for mounted secrets, and costs two `stat` calls.
//! A pair that does not load (half written, key not matching) is logged
//! and the current certificate is kept.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often [`Tls::watch`] looks at the certificate files.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// A TLS server configuration whose certificate follows its files.
/// Cloning shares the certificate, so the main and admin listeners serve
/// the same one.
#[derive(Clone)]
pub struct Tls {
    config: Arc<ServerConfig>,
    cert: Arc<ReloadingCert>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert.cert_path)
            .field("key", &self.cert.key_path)
            .finish()
    }
}

impl Tls {
    /// Loads the PEM certificate chain at `cert` and the PEM private key at
    /// `key`. Fails, naming the file, when either cannot be read or parsed
    /// or when the key does not belong to the certificate.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamp = Stamp::read(cert, key).context("reading the TLS files")?;
        let current = load_pair(cert, key, &provider)?;
        let resolver = Arc::new(ReloadingCert {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            provider: provider.clone(),
            current: RwLock::new(Arc::new(current)),
            seen: std::sync::Mutex::new(Some(stamp)),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("rustls protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // Both on the same port: gRPC and HTTP/2 clients ask for h2,
        // browsers and curl --http1.1 for http/1.1.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            cert: resolver,
        })
    }

    /// An acceptor for incoming connections.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    /// The certificate chain currently presented, leaf first.
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.cert.current().cert.clone()
    }

    /// Reloads the certificate whenever its files change, every `every`,
    /// until `token` is cancelled.
    pub async fn watch(self, every: Duration, token: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = tick.tick() => {}
            }
            let cert = self.cert.clone();
            // File reads and key parsing are blocking, if brief.
            let _ = tokio::task::spawn_blocking(move || cert.reload_if_changed()).await;
        }
    }
}

/// When the pair of files was last seen changed: modification time and
/// size of each. A rewrite within the file system's time granularity
/// usually changes the size; a swapped symlink changes both.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp([(Option<SystemTime>, u64); 2]);

impl Stamp {
    fn read(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let one = |path: &Path| -> anyhow::Result<(Option<SystemTime>, u64)> {
            let meta = std::fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok((meta.modified().ok(), meta.len()))
        };
        Ok(Self([one(cert)?, one(key)?]))
    }
}

/// The [`ResolvesServerCert`] every handshake asks: the current pair,
/// swapped in place by [`ReloadingCert::reload_if_changed`].
struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamp when they were last looked at (`None`: they could
    /// not be read), loaded or not, so a broken pair is reported once, not
    /// every interval.
    seen: std::sync::Mutex<Option<Stamp>>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    fn current(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a complete Arc: a writer only ever
        // replaces it whole.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn reload_if_changed(&self) {
        let read = Stamp::read(&self.cert_path, &self.key_path);
        let stamp = read.as_ref().ok().cloned();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == stamp {
                return;
            }
            seen.clone_from(&stamp);
        }
        if let Err(e) = read {
            tracing::warn!(
                error = format!("{e:#}"),
                "TLS certificate files unreadable; keeping the current certificate"
            );
            return;
        }
        match load_pair(&self.cert_path, &self.key_path, &self.provider) {
            Ok(pair) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "the changed TLS certificate does not load; keeping the current one"
            ),
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Reads and checks a certificate chain and its key.
fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let cert_pem =
        std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        bail!("{}: no PEM certificate in it", cert.display());
    }
    let key_pem = std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("{}: not a PEM private key", key.display()))?;
    CertifiedKey::from_der(chain, private, provider).with_context(|| {
        format!(
            "{} and {}: the key does not fit the certificate or is not supported",
            key.display(),
            cert.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_garbage_files_fail_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let e = Tls::load(&cert, &key).unwrap_err();
        assert!(format!("{e:#}").contains("cert.pem"), "{e:#}");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let e = Tls::load(&cert, &key).unwrap_err();
        assert!(format!("{e:#}").contains("cert.pem"), "{e:#}");
    }
}
