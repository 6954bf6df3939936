//! Where the API is served: plain TCP, or TLS (rustls, TLS 1.2 and 1.3, HTTP/1.1 by ALPN) when
//! `[server] tls = { cert, key }` is configured. Both go through `axum::serve`, so the HTTP
//! handling is the same on either; TLS adds a handshake deadline and a cap on handshakes in
//! progress. The API's own read, header and idle timeouts and connection limits are not here
//! yet (issue #19, "an API that holds under abuse"). The certificate is read at start: a new
//! one takes a restart.
//!
//! This module binds and accepts; it must not know about routes or the control plane. The key
//! file must be private (no group or world bits), as the age identity is: whoever reads it can
//! impersonate the server to every CLI and token holder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// A client that has not finished its TLS handshake by then is dropped (slowloris).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("[server] tls: cannot read the certificate {}: {source}", path.display())]
    Certificate { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("[server] tls: {} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("[server] tls: cannot read the private key {}: {source}", path.display())]
    Key { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("[server] tls: cannot read the private key {}: {source}", path.display())]
    KeyFile { path: PathBuf, source: std::io::Error },
    #[error(
        "[server] tls: the private key {} is accessible by other users (mode {mode:03o}), so Windlass refuses \
         to use it; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyNotPrivate { path: PathBuf, mode: u32 },
    #[error("[server] tls: the certificate {} and key {} do not make a TLS config: {source}", cert.display(), key.display())]
    Config { cert: PathBuf, key: PathBuf, source: rustls::Error },
}

/// The certificate and key files, already resolved against the config file's directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The `[server] tls` of `config`, with paths relative to `config_path`'s directory.
    pub fn from_config(config: &windlass_config::Config, config_path: &Path) -> Option<TlsFiles> {
        let tls = config.server.tls.as_ref()?;
        let dir = windlass_config::config_dir(config_path);
        Some(TlsFiles { cert: dir.join(&tls.cert), key: dir.join(&tls.key) })
    }
}

/// Refuses a key file that other users may read or write (only regular files are checked).
fn check_key_private(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|source| TlsError::KeyFile { path: path.to_owned(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_file() && mode & 0o077 != 0 {
        return Err(TlsError::KeyNotPrivate { path: path.to_owned(), mode });
    }
    Ok(())
}

/// Reads the certificate chain and the (private) key into a server config for HTTP/1.1.
pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, TlsError> {
    let (cert, key) = (&files.cert, &files.key);
    check_key_private(key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|source| TlsError::Certificate { path: cert.clone(), source })?
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Certificate { path: cert.clone(), source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.clone() });
    }
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key { path: key.clone(), source })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, private_key))
        .map_err(|source| TlsError::Config { cert: cert.clone(), key: key.clone(), source })?;
    // The API is served by HTTP/1.1 only (axum's http1 feature).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A bound listener, plain or TLS, and the address it is bound to.
pub enum Bound {
    Plain(TcpListener),
    Tls(TlsListener),
}

impl Bound {
    /// Binds `address`; with `tls`, the certificate and key are read (and checked) first, so a
    /// bad pair stops the server before it listens.
    pub async fn bind(address: SocketAddr, tls: Option<&TlsFiles>) -> Result<Bound, BindError> {
        let config = tls.map(server_config).transpose()?;
        let listener = TcpListener::bind(address).await.map_err(|source| BindError::Listen { address, source })?;
        Ok(match config {
            None => Bound::Plain(listener),
            Some(config) => Bound::Tls(TlsListener {
                tcp: listener,
                acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
                handshakes: FuturesUnordered::new(),
            }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Bound::Plain(listener) => listener.local_addr(),
            Bound::Tls(listener) => listener.tcp.local_addr(),
        }
    }

    /// `https` or `http`, for what the server announces.
    pub fn scheme(&self) -> &'static str {
        match self {
            Bound::Plain(_) => "http",
            Bound::Tls(_) => "https",
        }
    }

    /// Serves `app` until the listener fails.
    pub async fn serve(self, app: axum::Router) -> std::io::Result<()> {
        match self {
            Bound::Plain(listener) => axum::serve(listener, app).await,
            Bound::Tls(listener) => axum::serve(listener, app).await,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: SocketAddr, source: std::io::Error },
}

impl From<BindError> for crate::ServerError {
    fn from(err: BindError) -> Self {
        match err {
            BindError::Tls(err) => crate::ServerError::Tls(err),
            BindError::Listen { address, source } => crate::ServerError::Listen { address, source },
        }
    }
}

/// TLS handshakes in progress at most; a flood of silent connections waits in the kernel's
/// backlog instead of holding file descriptors here.
const MAX_HANDSHAKES: usize = 1024;

type Handshake = Pin<Box<dyn Future<Output = Option<(TlsStream<TcpStream>, SocketAddr)>> + Send>>;

/// Accepts TCP connections and hands out those whose TLS handshake succeeded. Handshakes run
/// side by side inside `accept` (which `axum::serve` polls all the time), so one slow client
/// holds up nobody and no task is spawned for it.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handshakes: FuturesUnordered<Handshake>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                // At the cap, handshakes in progress finish (or time out) before more are taken.
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_HANDSHAKES => match accepted {
                    Ok((stream, client)) => {
                        let handshake = self.acceptor.accept(stream);
                        self.handshakes.push(Box::pin(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                                Ok(Ok(tls)) => Some((tls, client)),
                                Ok(Err(err)) => {
                                    tracing::debug!(%client, %err, "TLS handshake failed");
                                    None
                                }
                                Err(_) => None,
                            }
                        }));
                    }
                    // Out of file descriptors and the like: pause rather than spin.
                    // (Handshakes in progress go on meanwhile: the pause is a branch of this
                    // select, not a sleep that holds it.)
                    Err(err) => {
                        tracing::warn!(%err, "cannot accept a connection");
                        let pause = tokio::time::sleep(Duration::from_millis(50));
                        tokio::pin!(pause);
                        loop {
                            tokio::select! {
                                () = &mut pause => break,
                                Some(done) = self.handshakes.next(), if !self.handshakes.is_empty() => {
                                    if let Some(connection) = done {
                                        return connection;
                                    }
                                }
                            }
                        }
                    }
                },
                Some(done) = self.handshakes.next(), if !self.handshakes.is_empty() => {
                    if let Some(connection) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_other_users_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("server.key");
        std::fs::write(&key, "not a key").expect("write");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let files = TlsFiles { cert: dir.path().join("server.pem"), key: key.clone() };
        let err = server_config(&files).expect_err("refused");
        assert!(matches!(err, TlsError::KeyNotPrivate { mode: 0o644, .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        // Private now: what fails is the missing certificate.
        assert!(matches!(server_config(&files), Err(TlsError::Certificate { .. })));
    }
}
