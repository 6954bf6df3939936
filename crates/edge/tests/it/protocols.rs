//! HTTP/2 with prior knowledge (h2c), and TLS with ALPN (h2 and HTTP/1.1), certificates reloaded
//! without a restart. Certificates are made by the real `openssl` tool.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use windlass_edge::{EdgeOptions, TlsOptions};

use crate::harness::*;

fn openssl(args: &[&str], dir: &Path) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A test CA (`ca.pem`), once per directory.
pub(crate) fn make_ca(dir: &Path) {
    openssl(
        &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
            .into_iter()
            .chain(["-subj", "/CN=windlass-test-ca", "-keyout", "ca.key", "-out", "ca.pem"])
            .collect::<Vec<_>>(),
        dir,
    );
}

/// A server certificate for `api.localhost` signed by the test CA, with the given common name,
/// put in place by rename as a certificate manager would.
pub(crate) fn make_certificate(dir: &Path, common_name: &str) {
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:api.localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let subject = format!("/CN={common_name}");
    openssl(
        &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", &subject]
            .into_iter()
            .chain(["-keyout", "edge.key.new", "-out", "edge.csr"])
            .collect::<Vec<_>>(),
        dir,
    );
    openssl(
        &["x509", "-req", "-in", "edge.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"]
            .into_iter()
            .chain(["-extfile", "leaf.ext", "-out", "edge.pem.new"])
            .collect::<Vec<_>>(),
        dir,
    );
    std::fs::rename(dir.join("edge.key.new"), dir.join("edge.key")).unwrap();
    std::fs::rename(dir.join("edge.pem.new"), dir.join("edge.pem")).unwrap();
}

/// Connects over TLS trusting `ca`, offering `alpn`; returns the stream and the server's certificate.
pub(crate) async fn tls_connect(
    address: std::net::SocketAddr,
    ca: &Path,
    alpn: &[&[u8]],
) -> (tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Vec<u8>) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("api.localhost").unwrap(), tcp)
        .await
        .unwrap();
    let peer = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (tls, peer)
}

pub(crate) async fn h2_get<T>(io: T, uri: &str) -> (hyper::Version, String)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(hyper::Request::get(uri).body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
    let version = response.version();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (version, String::from_utf8_lossy(&body).into_owned())
}

pub(crate) fn version_in(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body).unwrap()["version"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn http2_with_prior_knowledge() {
    let demo = Demo::start("v1");
    let edge = start_edge(
        spec(vec![("api", service("api.localhost", vec![("blue", pool(&[&demo], 100))]))]),
        settings(),
        None,
    );
    let tcp = tokio::net::TcpStream::connect(edge.address).await.unwrap();
    let (version, body) = h2_get(tcp, "http://api.localhost/version").await;
    assert_eq!(version, hyper::Version::HTTP_2);
    assert_eq!(version_in(&body), "v1");
    // The client must stay responsive while the edge drains (HTTP/2 shutdown is a GOAWAY and
    // PING exchange), so stop the edge off this runtime's thread.
    tokio::task::spawn_blocking(move || edge.stop()).await.unwrap();
}

#[tokio::test]
async fn tls_with_alpn_and_certificates_reloaded_without_restart() {
    let demo = Demo::start("v1");
    let dir = windlass_testkit::tempdir();
    make_ca(dir.path());
    make_certificate(dir.path(), "first");
    let edge = windlass_edge::start(EdgeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        settings: settings(),
        initial: spec(vec![("api", service("api.localhost", vec![("blue", pool(&[&demo], 100))]))]),
        state_path: None,
        tls: Some(TlsOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: dir.path().join("edge.pem"),
            key: dir.path().join("edge.key"),
        }),
        admin_tls: None,
    })
    .unwrap();
    let tls_address = edge.tls_address.unwrap();

    let (tls, first_cert) = tls_connect(tls_address, &dir.path().join("ca.pem"), &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (version, body) = h2_get(tls, "https://api.localhost/echo").await;
    assert_eq!(version, hyper::Version::HTTP_2);
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");

    let (tls, _) = tls_connect(tls_address, &dir.path().join("ca.pem"), &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("/version").header("host", "api.localhost").body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_11);
    assert_eq!(version_in(&String::from_utf8_lossy(&response.into_body().collect().await.unwrap().to_bytes())), "v1");

    // A new certificate on disk is served to new connections, with no restart. (The mtime must
    // move: the files are replaced by rename with new contents.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    make_certificate(dir.path(), "second");
    let ca = dir.path().join("ca.pem");
    eventually("the new certificate is served", || {
        let ca = ca.clone();
        let first_cert = first_cert.clone();
        async move { tls_connect(tls_address, &ca, &[b"h2"]).await.1 != first_cert }
    })
    .await;
    edge.stop();
}
