//! A real SMTP server for tests: Debian's aiosmtpd (run by `/usr/bin/python3`, not a pyenv
//! python, which lacks the package) on a socket the test bound (fd 3, so the port is ours
//! race-free), with STARTTLS, implicit TLS or none, optional AUTH, and a handler that writes
//! every accepted message as a JSON file the test reads. Certificates are made by the real
//! `openssl`. The server is killed when dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::process::Process;

/// A test CA and a certificate for 127.0.0.1 (and `localhost`) it signed.
pub struct Certificates {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Makes `ca.pem` and `leaf.pem`/`leaf.key` (for IP 127.0.0.1 and DNS localhost) in `dir`.
pub fn certificates(dir: &Path) -> Certificates {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-days", "2", "-subj", "/CN=windlass-test-ca", "-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca, dir);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend(["-subj", "/CN=127.0.0.1", "-keyout", "leaf.key", "-out", "leaf.csr"]);
    openssl(&csr, dir);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let mut sign = vec!["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"];
    sign.extend(["-days", "2", "-extfile", "leaf.ext", "-out", "leaf.pem"]);
    openssl(&sign, dir);
    Certificates { ca: dir.join("ca.pem"), cert: dir.join("leaf.pem"), key: dir.join("leaf.key") }
}

/// How the server protects connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// STARTTLS offered and required before MAIL.
    StartTls,
    /// TLS from the first byte (SMTPS).
    Implicit,
    /// Plaintext only.
    None,
}

/// What the server does.
#[derive(Debug, Clone)]
pub struct SmtpOptions {
    pub tls: SmtpTls,
    /// When set, AUTH (PLAIN/LOGIN) with exactly these is required; anything else gets 535.
    pub credentials: Option<(String, String)>,
    /// The first this many messages are answered `451 4.3.0` (a transient failure).
    pub transient_failures: u32,
    /// Recipients answered `550 5.1.1` (a permanent failure).
    pub reject: Vec<String>,
}

impl SmtpOptions {
    pub fn starttls() -> Self {
        SmtpOptions { tls: SmtpTls::StartTls, credentials: None, transient_failures: 0, reject: Vec::new() }
    }
}

/// A message the server accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The whole message, headers and body.
    pub data: String,
    /// Whether the message came over TLS (STARTTLS or implicit).
    pub tls: bool,
    /// The user that authenticated, if any.
    pub login: Option<String>,
}

impl Received {
    /// The value of header `name` (unfolded), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("").replace("\r\n ", " ").replace("\r\n\t", " ");
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    }

    /// The body as the reader sees it: quoted-printable decoded when the message says so.
    pub fn body(&self) -> String {
        let body = self.data.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or("");
        if !self.header("content-transfer-encoding").is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable")) {
            return body.replace("\r\n", "\n");
        }
        let joined = body.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let escaped = (bytes[i] == b'=')
                .then(|| joined.get(i + 1..i + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok()))
                .flatten();
            match escaped {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                }
                None => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).replace("\r\n", "\n")
    }
}

const RUNNER: &str = r#"
import asyncio, json, os, socket, ssl, sys
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

config = json.loads(sys.argv[1])
state = {"count": 0, "transient": config["transient_failures"]}

class Store:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in config["reject"]:
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if state["transient"] > 0:
            state["transient"] -= 1
            return "451 4.3.0 temporarily unable to accept, try again later"
        state["count"] += 1
        login = None
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode("utf8", "replace")
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.original_content.decode("utf8", "replace"),
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "login": login,
        }
        path = os.path.join(config["dir"], "%06d.json" % state["count"])
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 2.0.0 OK stored"

def authenticator(server, session, envelope, mechanism, auth_data):
    expected = config["credentials"]
    ok = (isinstance(auth_data, LoginPassword) and expected is not None
          and auth_data.login.decode("utf8", "replace") == expected[0]
          and auth_data.password.decode("utf8", "replace") == expected[1])
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

async def main():
    sock = socket.socket(fileno=3)
    context = None
    if config["tls"] != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(config["cert"], config["key"])
    options = {"hostname": "smtp.windlass.test"}
    if config["tls"] == "starttls":
        options.update(tls_context=context, require_starttls=True)
    if config["credentials"] is not None:
        # With implicit TLS aiosmtpd does not see the TLS (it sits below it), so only STARTTLS
        # mode has it check for TLS before AUTH itself.
        options.update(authenticator=authenticator, auth_required=True, auth_require_tls=config["tls"] == "starttls")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Store(), **options), sock=sock,
                                      ssl=context if config["tls"] == "implicit" else None)
    print("smtp listening", flush=True)
    await server.serve_forever()

asyncio.run(main())
"#;

/// A running aiosmtpd; killed on drop.
pub struct SmtpServer {
    pub address: SocketAddr,
    /// The CA that signed the server's certificate (for `with_ca_file`).
    pub ca_file: PathBuf,
    _process: Process,
    dir: tempfile::TempDir,
}

/// Starts aiosmtpd as `options` say.
pub fn start(options: SmtpOptions) -> SmtpServer {
    let dir = crate::tempdir();
    let certificates = certificates(dir.path());
    let mailbox = dir.path().join("mailbox");
    std::fs::create_dir(&mailbox).unwrap();
    let runner = dir.path().join("smtp_runner.py");
    std::fs::write(&runner, RUNNER).unwrap();
    let config = json!({
        "dir": mailbox,
        "tls": match options.tls { SmtpTls::StartTls => "starttls", SmtpTls::Implicit => "implicit", SmtpTls::None => "none" },
        "cert": certificates.cert,
        "key": certificates.key,
        "credentials": options.credentials.as_ref().map(|(user, password)| json!([user, password])),
        "transient_failures": options.transient_failures,
        "reject": options.reject,
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let mut command = Command::new("/usr/bin/python3");
    command
        .arg(&runner)
        .arg(config.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // aiosmtpd 1.4 warns about its own use of `Session.login_data`.
        .env("PYTHONWARNINGS", "ignore::DeprecationWarning");
    let process = Process::start_with_listeners(command, &[&listener]);
    drop(listener);
    process.wait_for_line("smtp listening");
    SmtpServer { address, ca_file: certificates.ca, _process: process, dir }
}

impl SmtpServer {
    /// `<scheme>://[userinfo@]127.0.0.1:<port><suffix>`.
    pub fn url(&self, scheme: &str, userinfo: Option<&str>, suffix: &str) -> String {
        let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        format!("{scheme}://{userinfo}{}{suffix}", self.address)
    }

    /// Every message accepted so far, in order.
    pub fn received(&self) -> Vec<Received> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("mailbox"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|path| {
                let record: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                Received {
                    mail_from: record["mail_from"].as_str().unwrap_or_default().to_owned(),
                    rcpt_tos: record["rcpt_tos"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                        .unwrap_or_default(),
                    data: record["data"].as_str().unwrap_or_default().to_owned(),
                    tls: record["tls"].as_bool().unwrap_or(false),
                    login: record["login"].as_str().map(str::to_owned),
                }
            })
            .collect()
    }
}
