//! TLS termination: certificates from PEM files, ALPN offering HTTP/2 and HTTP/1.1, and reload
//! without restart — the files are checked every second and a changed pair replaces the server
//! config for new connections (a pair that does not load is reported and the old one kept).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate {}: {source}", path.display())]
    Certificate { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("{} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("cannot read the private key {}: {source}", path.display())]
    Key { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("the certificate {} and key {} do not make a TLS config: {source}", cert.display(), key.display())]
    Config { cert: PathBuf, key: PathBuf, source: rustls::Error },
}

/// The server config for new TLS connections, replaced when the files change.
#[derive(Debug)]
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    /// The protocols offered by ALPN (the admin API speaks HTTP/1.1 only).
    alpn: Vec<Vec<u8>>,
    current: ArcSwap<ServerConfig>,
    loaded_from: std::sync::Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads a certificate chain and key and builds a server config offering h2 and HTTP/1.1.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|source| TlsError::Certificate { path: cert.to_owned(), source })?
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Certificate { path: cert.to_owned(), source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.to_owned() });
    }
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key { path: key.to_owned(), source })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, private_key))
        .map_err(|source| TlsError::Config { cert: cert.to_owned(), key: key.to_owned(), source })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl Certificates {
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Self, TlsError> {
        Self::load_offering(cert, key, vec![b"h2".to_vec(), b"http/1.1".to_vec()])
    }

    /// For the admin listener, which serves HTTP/1.1 only.
    pub fn load_for_admin(cert: PathBuf, key: PathBuf) -> Result<Self, TlsError> {
        Self::load_offering(cert, key, vec![b"http/1.1".to_vec()])
    }

    fn load_offering(cert: PathBuf, key: PathBuf, alpn: Vec<Vec<u8>>) -> Result<Self, TlsError> {
        let mut config = server_config(&cert, &key)?;
        config.alpn_protocols.clone_from(&alpn);
        let stamps = (modified(&cert), modified(&key));
        Ok(Certificates {
            current: ArcSwap::from_pointee(config),
            loaded_from: std::sync::Mutex::new(stamps),
            cert,
            key,
            alpn,
        })
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Reloads when either file changed; `Ok(true)` when a new pair took effect.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamps = (modified(&self.cert), modified(&self.key));
        let mut loaded = self.loaded_from.lock().unwrap_or_else(|e| e.into_inner());
        if *loaded == stamps {
            return Ok(false);
        }
        // Remember the attempt either way: a broken pair is reported once, not every second.
        *loaded = stamps;
        let mut config = server_config(&self.cert, &self.key)?;
        config.alpn_protocols.clone_from(&self.alpn);
        self.current.store(Arc::new(config));
        Ok(true)
    }
}

/// How long a client of the admin listener may take to finish its TLS handshake.
const ADMIN_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The admin API's listener when it serves TLS: handshakes run in tasks of their own (a client
/// that stalls its handshake holds up no one else) and finished ones are handed to axum.
pub struct AdminTlsListener {
    local: std::net::SocketAddr,
    handshaken: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<crate::admin::guard::GuardedIo<tokio::net::TcpStream>>,
        std::net::SocketAddr,
    )>,
}

impl AdminTlsListener {
    /// Starts accepting on `listener` (in the current runtime); the accept task ends when this
    /// listener is dropped.
    pub fn start(
        listener: crate::admin::guard::GuardedListener,
        certificates: Arc<Certificates>,
    ) -> std::io::Result<Self> {
        let local = axum::serve::Listener::local_addr(&listener)?;
        let (sender, handshaken) = tokio::sync::mpsc::channel(64);
        // Lives as long as the listener (it ends when the receiver is dropped).
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            loop {
                // Within the admin listener's cap: a handshake starts only when a place is free.
                let (stream, client) = tokio::select! {
                    accepted = listener.accept_guarded() => accepted,
                    () = sender.closed() => return,
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(certificates.current());
                let sender = sender.clone();
                // One handshake, bounded by its timeout.
                #[allow(clippy::disallowed_methods)]
                tokio::spawn(async move {
                    match tokio::time::timeout(ADMIN_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, client)).await;
                        }
                        Ok(Err(err)) => tracing::debug!(%client, "admin TLS handshake: {err}"),
                        Err(_) => tracing::debug!(%client, "admin TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(AdminTlsListener { local, handshaken })
    }
}

impl axum::serve::Listener for AdminTlsListener {
    type Io = tokio_rustls::server::TlsStream<crate::admin::guard::GuardedIo<tokio::net::TcpStream>>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(accepted) => accepted,
            // The accept task holds a sender as long as this listener lives: not reached, but
            // never answer with a made-up connection.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
