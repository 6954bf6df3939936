//! Email over SMTP (lettre, rustls): a subject and a plain-text body.
//!
//! `smtp_url` forms:
//! - `smtp://[user:pass@]host[:port]` (port 587 by default): STARTTLS is required; a server that
//!   does not offer it, or whose certificate does not verify, gets nothing, credentials least;
//! - `smtps://[user:pass@]host[:port]` (port 465 by default): TLS from the first byte;
//! - `smtp://host[:port]?tls=none`: plaintext, accepted only for a loopback host (`localhost`,
//!   `127.0.0.0/8`, `::1`): a relay on this machine. Without `smtp_url`, mail goes to
//!   `smtp://localhost:25?tls=none`.
//!
//! User and password are percent-decoded. They are secrets: never in an error, a log or `Debug`.
//! A 4xx reply and a failed connection are retried; a 5xx reply is final; so is a TLS failure.

use std::path::PathBuf;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use rustls_pki_types::pem::PemObject;

use crate::http::scrub;
use crate::{Delivered, Message, NotifyError, Receiver, RetryPolicy, truncate};

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://`: plaintext greeting, then STARTTLS, required.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Tls,
    /// `smtp://…?tls=none` on loopback only.
    None,
}

const DEFAULT_SMTP_URL: &str = "smtp://localhost:25?tls=none";
const DEFAULT_FROM: &str = "Windlass <windlass@localhost>";

/// An email receiver.
#[derive(Clone)]
pub struct Email {
    name: String,
    to: Vec<Mailbox>,
    from: Mailbox,
    host: String,
    port: u16,
    security: SmtpSecurity,
    credentials: Option<(String, String)>,
    ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("name", &self.name)
            .field("to", &self.to.iter().map(ToString::to_string).collect::<Vec<_>>())
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("authenticated", &self.credentials.is_some())
            .finish_non_exhaustive()
    }
}

use windlass_http::percent::decode_utf8 as percent_decode;

impl Email {
    /// `to`: the recipients; `from`: the sender (`Windlass <windlass@localhost>` when `None`);
    /// `smtp_url`: the server, in the forms the module describes. Errors never quote the URL.
    pub fn new(name: &str, to: &[String], from: Option<&str>, smtp_url: Option<&str>) -> Result<Self, NotifyError> {
        let bad = |message: String| NotifyError::BadUrl { receiver: name.to_owned(), message };
        if to.is_empty() {
            return Err(bad("an email receiver needs at least one recipient in `to`".into()));
        }
        let to = to
            .iter()
            .map(|address| address.parse::<Mailbox>().map_err(|_| bad(format!("`{address}` is not an email address"))))
            .collect::<Result<Vec<_>, _>>()?;
        let from_text = from.unwrap_or(DEFAULT_FROM);
        let from = from_text.parse::<Mailbox>().map_err(|_| bad(format!("`{from_text}` is not an email address")))?;
        let url = url::Url::parse(smtp_url.unwrap_or(DEFAULT_SMTP_URL))
            .map_err(|err| bad(format!("`smtp_url` is not a URL ({err})")))?;
        let host = match url.host() {
            Some(url::Host::Domain(domain)) => domain.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(bad("`smtp_url` names no host".into())),
        };
        // smtp:// is not a scheme the URL standard knows, so an IPv4 address arrives as a name.
        let loopback = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => host.eq_ignore_ascii_case("localhost"),
        };
        let mut tls = None;
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), tls) {
                ("tls", None) => tls = Some(value.into_owned()),
                _ => return Err(bad(format!("`smtp_url` takes one query parameter, `tls`, not `{key}`"))),
            }
        }
        if !matches!(url.path(), "" | "/") {
            return Err(bad("`smtp_url` has a path; it takes none".into()));
        }
        let security = match (url.scheme(), tls.as_deref()) {
            ("smtp", None | Some("required")) => SmtpSecurity::StartTls,
            ("smtps", None) => SmtpSecurity::Tls,
            ("smtp", Some("none")) if loopback => SmtpSecurity::None,
            ("smtp", Some("none")) => {
                return Err(bad(format!(
                    "`tls=none` sends mail and credentials in plaintext, so it is accepted only for a loopback \
                     host (localhost, 127.0.0.1, ::1), not `{host}`"
                )));
            }
            ("smtp", Some(other)) => {
                return Err(bad(format!("`tls={other}` is not known; use `tls=required` (the default) or `tls=none`")));
            }
            ("smtps", Some(_)) => return Err(bad("`smtps://` is TLS already; it takes no `tls` parameter".into())),
            (scheme, _) => return Err(bad(format!("`smtp_url` must start with smtp:// or smtps://, not {scheme}://"))),
        };
        let port = url.port().unwrap_or(if security == SmtpSecurity::Tls { 465 } else { 587 });
        let credentials = if url.username().is_empty() {
            None
        } else {
            let user = percent_decode(url.username());
            let password = percent_decode(url.password().unwrap_or(""));
            match (user, password) {
                (Some(user), Some(password)) => Some((user, password)),
                _ => return Err(bad("the credentials in `smtp_url` are not valid percent-encoded UTF-8".into())),
            }
        };
        Ok(Email { name: name.to_owned(), to, from, host, port, security, credentials, ca_file: None })
    }

    /// Trusts the CA certificates in `path` instead of the system's (a private CA).
    pub fn with_ca_file(mut self, path: PathBuf) -> Self {
        self.ca_file = Some(path);
        self
    }

    pub fn security(&self) -> SmtpSecurity {
        self.security
    }

    /// The email for `message`: the title as subject, then the text, the fields and where it
    /// came from, as plain text.
    fn email(&self, message: &Message) -> Result<lettre::Message, lettre::error::Error> {
        let mut body = format!("{}\n\n", message.title);
        if !message.text.is_empty() {
            body.push_str(&format!("{}\n\n", message.text));
        }
        for (name, value) in &message.fields {
            body.push_str(&format!("{name}: {value}\n"));
        }
        if let Some(deploy_id) = &message.deploy_id {
            body.push_str(&format!("deploy: {deploy_id}\n"));
        }
        body.push_str(&format!(
            "\n-- \n{} · {} · {}\nSent by Windlass\n",
            message.event, message.environment, message.at
        ));
        let subject: String = truncate(&message.title.replace(['\r', '\n'], " "), 200);
        let mut builder = lettre::Message::builder().from(self.from.clone()).subject(subject);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder.header(ContentType::TEXT_PLAIN).body(body)
    }

    fn secrets(&self) -> Vec<String> {
        match &self.credentials {
            Some((user, password)) => {
                let b64 = |bytes: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
                let mut secrets = vec![password.clone(), b64(password.as_bytes())];
                // What AUTH PLAIN and AUTH LOGIN put on the wire.
                secrets.push(b64(format!("\0{user}\0{password}").as_bytes()));
                secrets.push(b64(user.as_bytes()));
                secrets.push(user.clone());
                secrets
            }
            None => Vec::new(),
        }
    }

    fn tls_parameters(&self) -> Result<TlsParameters, TlsSetupError> {
        let bundle = match &self.ca_file {
            Some(path) => path.clone(),
            None => std::env::var_os("SSL_CERT_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into()),
        };
        let certificates = rustls_pki_types::CertificateDer::pem_file_iter(&bundle)
            .map_err(|source| TlsSetupError::Read { bundle: bundle.clone(), source })?;
        let mut builder = TlsParameters::builder(self.host.clone()).certificate_store(CertificateStore::None);
        let mut check = rustls::RootCertStore::empty();
        let mut trusted = 0;
        for certificate in certificates.flatten() {
            // Only what rustls accepts as a root: one odd entry in a system bundle is skipped.
            if check.add(certificate.clone()).is_ok()
                && let Ok(certificate) = Certificate::from_der(certificate.to_vec())
            {
                builder = builder.add_root_certificate(certificate);
                trusted += 1;
            }
        }
        if trusted == 0 {
            return Err(TlsSetupError::NoCertificate { bundle });
        }
        builder.build_rustls().map_err(TlsSetupError::Build)
    }

    fn transport(&self, tls: Option<TlsParameters>, retry: &RetryPolicy) -> AsyncSmtpTransport<Tokio1Executor> {
        let tls = match (self.security, tls) {
            (SmtpSecurity::StartTls, Some(parameters)) => Tls::Required(parameters),
            (SmtpSecurity::Tls, Some(parameters)) => Tls::Wrapper(parameters),
            _ => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.host.clone())
            .port(self.port)
            .timeout(Some(retry.timeout))
            .tls(tls);
        if let Some((user, password)) = &self.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        builder.build()
    }
}

/// What an SMTP failure means for the next attempt.
enum Failure {
    /// A 5xx reply: final.
    Permanent(u16, String),
    /// A TLS failure or a mistake on our side: final.
    Fatal(String),
    /// A 4xx reply, a lost or refused connection, a timeout: try again.
    Transient(String),
}

/// Why TLS towards the SMTP server could not be set up (before any connection).
#[derive(Debug, thiserror::Error)]
enum TlsSetupError {
    #[error("cannot read CA certificates from {} ({source})", bundle.display())]
    Read { bundle: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("{} holds no CA certificate", bundle.display())]
    NoCertificate { bundle: PathBuf },
    #[error("{0}")]
    Build(#[source] lettre::transport::smtp::Error),
}

/// The TLS error somewhere in `err`'s chain (lettre reports a failed handshake as a connection
/// error wrapping it), as text.
fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(tls) = io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls.to_string());
        }
        next = err.source();
    }
    None
}

fn classify(err: &lettre::transport::smtp::Error, host: &str) -> Failure {
    let text = err.to_string();
    if let Some(code) = err.status() {
        let status = code.to_string().parse::<u16>().unwrap_or(0);
        let reply = std::error::Error::source(err).map(ToString::to_string).unwrap_or_default();
        let reply = format!("{status} {}", reply.trim());
        return if err.is_permanent() { Failure::Permanent(status, reply) } else { Failure::Transient(reply) };
    }
    if let Some(tls) = tls_failure(err) {
        return Failure::Fatal(format!("TLS with {host}: {tls}"));
    }
    if err.is_tls() {
        return Failure::Fatal(format!("TLS with {host}: {text}"));
    }
    if text.contains("STARTTLS is not supported") {
        return Failure::Fatal(format!(
            "TLS with {host}: the server does not offer STARTTLS, which `smtp://` requires (use `smtps://`, or \
             `?tls=none` for a relay on loopback)"
        ));
    }
    if err.is_client() {
        return Failure::Fatal(text);
    }
    Failure::Transient(text)
}

#[async_trait::async_trait]
impl Receiver for Email {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, message: &Message, retry: &RetryPolicy) -> Result<Delivered, NotifyError> {
        let secrets = self.secrets();
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).filter(|s| s.len() >= 3).collect();
        let give_up = |attempts: u32, last: String| NotifyError::GaveUp {
            receiver: self.name.clone(),
            attempts,
            last: scrub(&last, &secrets),
        };
        let email = self.email(message).map_err(|err| give_up(1, format!("cannot build the email: {err}")))?;
        let tls = match self.security {
            SmtpSecurity::None => None,
            _ => Some(self.tls_parameters().map_err(|err| give_up(1, format!("TLS with {}: {err}", self.host)))?),
        };
        let transport = self.transport(tls, retry);
        let attempts = retry.attempts.max(1);
        let mut delay = retry.first_delay;
        let mut last = String::new();
        for attempt in 1..=attempts {
            match transport.send(email.clone()).await {
                Ok(response) => {
                    let status = response.code().to_string().parse::<u16>().unwrap_or(250);
                    return Ok(Delivered { receiver: self.name.clone(), attempts: attempt, status, dedup_key: None });
                }
                Err(err) => match classify(&err, &self.host) {
                    Failure::Permanent(status, reply) => {
                        return Err(NotifyError::Refused {
                            receiver: self.name.clone(),
                            status,
                            body: truncate(&scrub(&reply, &secrets), 500),
                        });
                    }
                    Failure::Fatal(text) => return Err(give_up(attempt, text)),
                    Failure::Transient(text) => last = scrub(&text, &secrets),
                },
            }
            if attempt < attempts {
                tracing::warn!(receiver = self.name, attempt, %last, "email not delivered; retrying in {delay:?}");
                tokio::time::sleep(delay.min(retry.max_delay)).await;
                delay = (delay * 2).min(retry.max_delay);
            }
        }
        Err(give_up(attempts, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(url: &str) -> Result<Email, NotifyError> {
        Email::new("mail", &["devops@maily.example".into()], Some("alerts@maily.example"), Some(url))
    }

    #[test]
    fn url_forms_choose_the_protection() {
        assert_eq!(email("smtp://mail.example").unwrap().security(), SmtpSecurity::StartTls);
        assert_eq!(email("smtp://mail.example").unwrap().port, 587);
        assert_eq!(email("smtps://mail.example").unwrap().port, 465);
        assert_eq!(email("smtp://127.0.0.1:2525?tls=none").unwrap().security(), SmtpSecurity::None);
        assert_eq!(email("smtp://[::1]:2525?tls=none").unwrap().host, "::1");
        let remote = email("smtp://user:hunter2@mail.example?tls=none").unwrap_err().to_string();
        assert!(remote.contains("loopback") && !remote.contains("hunter2"), "{remote}");
        assert!(email("http://mail.example").is_err());
        assert!(email("smtp://mail.example?tls=maybe").is_err());
    }

    #[test]
    fn credentials_are_decoded_and_kept_out_of_debug() {
        let receiver = email("smtp://ops%40maily.example:p%40ss%3Aword@mail.example:587").unwrap();
        assert_eq!(receiver.credentials, Some(("ops@maily.example".into(), "p@ss:word".into())));
        let debug = format!("{receiver:?}");
        assert!(!debug.contains("p@ss") && debug.contains("authenticated: true"), "{debug}");
    }
}
