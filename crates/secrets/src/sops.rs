//! SOPS-format encrypted documents (dotenv, YAML and JSON), compatible with the real `sops` 3.x.
//!
//! What a file holds, and how `sops` checks it (verified against the real binary in tests):
//! - each value is `ENC[AES256_GCM,data:<b64>,iv:<b64 32 bytes>,tag:<b64>,type:str|int|float|bool]`,
//!   AES-256-GCM with a 32-byte IV under the file's data key, with the value's key path joined
//!   by `:` plus a trailing `:` (`DB_PASSWORD:`) as additional data; empty values stay empty;
//! - the data key is age-encrypted to each recipient and armored (`sops.age[].enc`);
//! - `sops.mac` is the upper-case hex SHA-512 of all plaintext values in document order,
//!   encrypted with the data key and `sops.lastmodified` (RFC 3339) as additional data, so a
//!   removed, reordered or swapped value is detected too;
//! - keys ending in `unencrypted_suffix` (`_unencrypted`) stay in plain text but are in the MAC.
//!
//! Writing keeps the ciphertext (same IV) of every value that did not change, so a `git diff`
//! shows which secrets changed; only [`Document::rotate`] re-encrypts everything under a new key.
//! Only flat documents (name → scalar) are supported: Windlass secrets are environment variables.

#[allow(deprecated)]
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use yaml_rust2::{Yaml, YamlLoader};
use zeroize::Zeroizing;

use crate::age::{self, Identity, Recipient};
use crate::{SecretValue, SecretsError, validate_name};

type Gcm = aes_gcm::AesGcm<aes_gcm::aes::Aes256, aes_gcm::aead::consts::U32>;

const SOPS_VERSION: &str = "3.11.0";
const DEFAULT_SUFFIX: &str = "_unencrypted";

/// The syntax of a secrets file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Dotenv,
    Yaml,
    Json,
}

impl Format {
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "dotenv" | "env" => Some(Format::Dotenv),
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    /// The file extension Windlass uses: `<env>.enc.<ext>`.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Dotenv => "env",
            Format::Yaml => "yaml",
            Format::Json => "json",
        }
    }

    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?;
        Format::parse(ext)
    }
}

/// The SOPS value type, kept so a value `sops` wrote as `int` is written back as `int`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Float,
    Bool,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Str => "str",
            Kind::Int => "int",
            Kind::Float => "float",
            Kind::Bool => "bool",
        }
    }
}

struct Entry {
    name: String,
    value: SecretValue,
    kind: Kind,
    /// The stored form (`ENC[...]` or the plain text of an unencrypted key) while it is valid.
    stored: Option<String>,
}

/// One recipient entry of `sops.age`.
#[derive(Clone)]
struct AgeEntry {
    recipient: String,
    enc: String,
}

/// A decrypted SOPS document, ready to change and write back.
pub struct Document {
    format: Format,
    entries: Vec<Entry>,
    age: Vec<AgeEntry>,
    data_key: Zeroizing<[u8; 32]>,
    suffix: String,
    lastmodified: String,
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
        f.debug_struct("Document").field("format", &self.format).field("names", &names).finish_non_exhaustive()
    }
}

/// The raw, still-encrypted content of a file.
struct Raw {
    values: Vec<(String, String)>,
    age: Vec<AgeEntry>,
    lastmodified: String,
    mac: String,
    suffix: String,
    others: Vec<String>,
    /// Whether `version` was there: it is written last, so its absence means a truncated file.
    version: bool,
}

fn malformed(file: &str, why: impl Into<String>) -> SecretsError {
    SecretsError::Malformed { file: file.to_owned(), why: why.into() }
}

impl Document {
    /// A new, empty document with a fresh data key, encrypted to `recipients`.
    pub fn new(format: Format, recipients: &[Recipient]) -> Result<Self, SecretsError> {
        let mut doc = Document {
            format,
            entries: Vec::new(),
            age: Vec::new(),
            data_key: random_key()?,
            suffix: DEFAULT_SUFFIX.into(),
            lastmodified: String::new(),
        };
        doc.set_recipients(recipients)?;
        Ok(doc)
    }

    /// The recipients (`age1...`) the data key is encrypted to.
    pub fn recipients(&self) -> Vec<String> {
        self.age.iter().map(|a| a.recipient.clone()).collect()
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// `sops.lastmodified` as read (empty for a new document).
    pub fn lastmodified(&self) -> &str {
        &self.lastmodified
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    pub fn get(&self, name: &str) -> Option<&SecretValue> {
        self.entries.iter().find(|e| e.name == name).map(|e| &e.value)
    }

    pub fn values(&self) -> impl Iterator<Item = (&str, &SecretValue)> {
        self.entries.iter().map(|e| (e.name.as_str(), &e.value))
    }

    /// Sets a value; returns false when it already had exactly this value (nothing changes).
    pub fn set(&mut self, name: &str, value: SecretValue) -> Result<bool, SecretsError> {
        validate_name(name)?;
        match self.entries.iter_mut().find(|e| e.name == name) {
            Some(e) if e.value.expose() == value.expose() => Ok(false),
            Some(e) => {
                e.value = value;
                e.kind = Kind::Str;
                e.stored = None;
                Ok(true)
            }
            None => {
                self.entries.push(Entry { name: name.to_owned(), value, kind: Kind::Str, stored: None });
                Ok(true)
            }
        }
    }

    /// Removes a value; returns whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.name != name);
        before != self.entries.len()
    }

    /// Encrypts the (unchanged) data key to exactly these recipients.
    pub fn set_recipients(&mut self, recipients: &[Recipient]) -> Result<(), SecretsError> {
        if recipients.is_empty() {
            return Err(SecretsError::Config("a secrets file needs at least one recipient".into()));
        }
        let mut age = Vec::new();
        for r in recipients {
            let enc = age::armor(&age::encrypt(&self.data_key[..], std::slice::from_ref(r))?);
            age.push(AgeEntry { recipient: r.encode(), enc });
        }
        self.age = age;
        Ok(())
    }

    /// A new data key: every value is re-encrypted, and the key is encrypted to `recipients`.
    pub fn rotate(&mut self, recipients: &[Recipient]) -> Result<(), SecretsError> {
        self.data_key = random_key()?;
        for e in &mut self.entries {
            e.stored = None;
        }
        self.set_recipients(recipients)
    }

    /// Reads and decrypts a document; `file` names it in errors.
    pub fn decrypt(text: &str, format: Format, identities: &[Identity], file: &str) -> Result<Self, SecretsError> {
        let raw = match format {
            Format::Dotenv => parse_dotenv(text, file)?,
            Format::Yaml | Format::Json => parse_yaml(text, file)?,
        };
        if !raw.others.is_empty() {
            return Err(SecretsError::Unsupported(format!(
                "{file}: uses SOPS features Windlass does not support ({}); only age recipients and the default \
                 unencrypted_suffix are supported",
                raw.others.join(", ")
            )));
        }
        if raw.age.is_empty() {
            return Err(malformed(file, "no age recipients in the SOPS metadata (is this a SOPS file?)"));
        }
        let data_key = unwrap_data_key(&raw.age, identities, file)?;
        let mut entries = Vec::new();
        let mut hash = ring::digest::Context::new(&ring::digest::SHA512);
        for (name, stored) in raw.values {
            let (value, kind) = if stored.is_empty() {
                (Zeroizing::new(Vec::new()), Kind::Str)
            } else if let Some(enc) = stored.strip_prefix("ENC[") {
                decrypt_value(enc, &data_key, &format!("{name}:"))
                    .map_err(|e| e.unwrap_or_else(|| tampered(file, &format!("the value of {name}"))))?
            } else if name.ends_with(&raw.suffix) {
                (Zeroizing::new(stored.clone().into_bytes()), Kind::Str)
            } else {
                return Err(malformed(file, format!("the value of {name} is not encrypted (no ENC[...])")));
            };
            hash.update(&value);
            let text =
                String::from_utf8(value.to_vec()).map_err(|_| malformed(file, format!("{name} is not UTF-8")))?;
            entries.push(Entry { name, value: SecretValue::new(text), kind, stored: Some(stored) });
        }
        let mac = hex::encode_upper(hash.finish().as_ref());
        let stored_mac = raw.mac.strip_prefix("ENC[").ok_or_else(|| malformed(file, "no sops MAC"))?;
        let (decrypted_mac, _) = decrypt_value(stored_mac, &data_key, &raw.lastmodified)
            .map_err(|e| e.unwrap_or_else(|| tampered(file, "the MAC")))?;
        let same = windlass_http::constant_time_eq(&decrypted_mac, mac.as_bytes());
        if !same {
            return Err(tampered(file, "the MAC over all values"));
        }
        Ok(Document { format, entries, age: raw.age, data_key, suffix: raw.suffix, lastmodified: raw.lastmodified })
    }

    /// Encrypts and renders the document; values that did not change keep their ciphertext.
    pub fn encrypt(&mut self) -> Result<String, SecretsError> {
        let now = jiff::Timestamp::now();
        let lastmodified = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let mut hash = ring::digest::Context::new(&ring::digest::SHA512);
        for e in &mut self.entries {
            let bytes = e.value.expose().as_bytes();
            hash.update(bytes);
            if e.stored.is_none() {
                e.stored = Some(if bytes.is_empty() {
                    String::new()
                } else if e.name.ends_with(&self.suffix) {
                    e.value.expose().to_owned()
                } else {
                    encrypt_value(bytes, e.kind, &self.data_key, &format!("{}:", e.name))?
                });
            }
        }
        let mac = hex::encode_upper(hash.finish().as_ref());
        let mac = encrypt_value(mac.as_bytes(), Kind::Str, &self.data_key, &lastmodified)?;
        self.lastmodified = lastmodified;
        let values: Vec<(&str, &str)> =
            self.entries.iter().map(|e| (e.name.as_str(), e.stored.as_deref().unwrap_or(""))).collect();
        let meta = Meta { age: &self.age, lastmodified: &self.lastmodified, mac: &mac, suffix: &self.suffix };
        Ok(match self.format {
            Format::Dotenv => render_dotenv(&values, &meta),
            Format::Yaml => render_yaml(&values, &meta),
            Format::Json => render_json(&values, &meta),
        })
    }
}

fn tampered(file: &str, what: &str) -> SecretsError {
    SecretsError::Tampered { file: file.to_owned(), what: what.to_owned() }
}

fn random_key() -> Result<Zeroizing<[u8; 32]>, SecretsError> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut key[..]).map_err(|e| SecretsError::Crypto(format!("no randomness from the OS: {e}")))?;
    Ok(key)
}

fn unwrap_data_key(age: &[AgeEntry], identities: &[Identity], file: &str) -> Result<Zeroizing<[u8; 32]>, SecretsError> {
    for entry in age {
        let binary = age::dearmor(&entry.enc).map_err(|why| malformed(file, format!("{}: {why}", entry.recipient)))?;
        match age::decrypt(&binary, identities) {
            Ok(key) => {
                let key: [u8; 32] =
                    key.as_slice().try_into().map_err(|_| malformed(file, "the data key is not 32 bytes"))?;
                return Ok(Zeroizing::new(key));
            }
            Err(age::DecryptFailure::NoMatch) => continue,
            Err(age::DecryptFailure::Corrupt(why)) => {
                return Err(tampered(file, &format!("the data key for {} ({why})", entry.recipient)));
            }
        }
    }
    let mine: Vec<String> = identities.iter().map(|i| i.recipient().encode()).collect();
    Err(SecretsError::NotARecipient {
        file: file.to_owned(),
        mine: mine.join(", "),
        recipients: age.iter().map(|a| a.recipient.as_str()).collect::<Vec<_>>().join(", "),
    })
}

// generic-array 0.14 is what aes-gcm 0.10 takes; its deprecation notes are about 1.x.
#[allow(deprecated)]
fn encrypt_value(plain: &[u8], kind: Kind, key: &[u8; 32], aad: &str) -> Result<String, SecretsError> {
    let mut iv = [0u8; 32];
    getrandom::fill(&mut iv).map_err(|e| SecretsError::Crypto(format!("no randomness from the OS: {e}")))?;
    let cipher = Gcm::new(GenericArray::from_slice(key));
    let mut out = cipher
        .encrypt(GenericArray::from_slice(&iv), Payload { msg: plain, aad: aad.as_bytes() })
        .map_err(|_| SecretsError::Crypto("AES-GCM encryption failed".into()))?;
    let tag = out.split_off(out.len() - 16);
    Ok(format!(
        "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{}]",
        STANDARD.encode(&out),
        STANDARD.encode(iv),
        STANDARD.encode(tag),
        kind.name()
    ))
}

#[allow(deprecated)]
/// Decrypts the inside of `ENC[...]` (after `ENC[`); `Err(None)` means authentication failed.
fn decrypt_value(enc: &str, key: &[u8; 32], aad: &str) -> Result<(Zeroizing<Vec<u8>>, Kind), Option<SecretsError>> {
    let bad = || {
        Some(SecretsError::Crypto("a value is not of the form ENC[AES256_GCM,data:...,iv:...,tag:...,type:...]".into()))
    };
    let inner = enc.strip_suffix(']').ok_or_else(bad)?;
    let mut parts = inner.split(',');
    if parts.next() != Some("AES256_GCM") {
        return Err(bad());
    }
    let (mut data, mut iv, mut tag, mut kind) = (None, None, None, Kind::Str);
    for part in parts {
        let (k, v) = part.split_once(':').ok_or_else(bad)?;
        match k {
            "data" => data = Some(STANDARD.decode(v).map_err(|_| None)?),
            "iv" => iv = Some(STANDARD.decode(v).map_err(|_| None)?),
            "tag" => tag = Some(STANDARD.decode(v).map_err(|_| None)?),
            "type" => {
                kind = match v {
                    "str" => Kind::Str,
                    "int" => Kind::Int,
                    "float" => Kind::Float,
                    "bool" => Kind::Bool,
                    other => {
                        return Err(Some(SecretsError::Unsupported(format!("values of SOPS type `{other}`"))));
                    }
                }
            }
            _ => return Err(bad()),
        }
    }
    let (Some(mut data), Some(iv), Some(tag)) = (data, iv, tag) else { return Err(bad()) };
    if iv.len() != 32 || tag.len() != 16 {
        return Err(None);
    }
    data.extend_from_slice(&tag);
    let cipher = Gcm::new(GenericArray::from_slice(key));
    let plain =
        cipher.decrypt(GenericArray::from_slice(&iv), Payload { msg: &data, aad: aad.as_bytes() }).map_err(|_| None)?;
    Ok((Zeroizing::new(plain), kind))
}

// --- dotenv ---

fn parse_dotenv(text: &str, file: &str) -> Result<Raw, SecretsError> {
    let mut values = Vec::new();
    let mut meta: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| malformed(file, format!("line {} has no `=`", n + 1)))?;
        let value = value.replace("\\n", "\n");
        if let Some(m) = key.strip_prefix("sops_") {
            meta.push((m.to_owned(), value));
        } else {
            values.push((key.to_owned(), value));
        }
    }
    let mut raw = Raw {
        values,
        age: Vec::new(),
        lastmodified: String::new(),
        mac: String::new(),
        suffix: DEFAULT_SUFFIX.into(),
        others: Vec::new(),
        version: false,
    };
    let mut age: std::collections::BTreeMap<usize, (Option<String>, Option<String>)> = Default::default();
    for (key, value) in meta {
        if let Some(rest) = key.strip_prefix("age__list_") {
            let (index, field) =
                rest.split_once("__map_").ok_or_else(|| malformed(file, format!("bad key sops_{key}")))?;
            let index: usize = index.parse().map_err(|_| malformed(file, format!("bad key sops_{key}")))?;
            let slot = age.entry(index).or_default();
            match field {
                "recipient" => slot.0 = Some(value),
                "enc" => slot.1 = Some(value),
                _ => {}
            }
            continue;
        }
        match key.as_str() {
            "lastmodified" => raw.lastmodified = value,
            "mac" => raw.mac = value,
            "unencrypted_suffix" => raw.suffix = value,
            "version" => raw.version = !value.is_empty(),
            "mac_only_encrypted" if value == "false" => {}
            other => raw.others.push(other.to_owned()),
        }
    }
    for (_, (recipient, enc)) in age {
        match (recipient, enc) {
            (Some(recipient), Some(enc)) => raw.age.push(AgeEntry { recipient, enc }),
            _ => return Err(malformed(file, "an age entry lacks its recipient or enc (truncated?)")),
        }
    }
    if raw.lastmodified.is_empty() || raw.mac.is_empty() || !raw.version {
        return Err(malformed(file, "the SOPS metadata is incomplete (truncated, or not a SOPS file?)"));
    }
    Ok(raw)
}

struct Meta<'a> {
    age: &'a [AgeEntry],
    lastmodified: &'a str,
    mac: &'a str,
    suffix: &'a str,
}

fn render_dotenv(values: &[(&str, &str)], meta: &Meta<'_>) -> String {
    let esc = |v: &str| v.replace('\n', "\\n");
    let mut out = String::new();
    for (k, v) in values {
        out.push_str(&format!("{k}={}\n", esc(v)));
    }
    let mut lines = Vec::new();
    for (i, a) in meta.age.iter().enumerate() {
        lines.push(format!("sops_age__list_{i}__map_enc={}", esc(&a.enc)));
        lines.push(format!("sops_age__list_{i}__map_recipient={}", a.recipient));
    }
    lines.push(format!("sops_lastmodified={}", meta.lastmodified));
    lines.push(format!("sops_mac={}", meta.mac));
    lines.push(format!("sops_unencrypted_suffix={}", meta.suffix));
    lines.push(format!("sops_version={SOPS_VERSION}"));
    lines.sort();
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

// --- YAML and JSON (JSON is read with the YAML parser, which keeps key order) ---

fn scalar_text(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(if *b { "True".into() } else { "False".into() }),
        Yaml::Null => Some(String::new()),
        _ => None,
    }
}

fn parse_yaml(text: &str, file: &str) -> Result<Raw, SecretsError> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| malformed(file, format!("not valid YAML/JSON: {e}")))?;
    let Some(Yaml::Hash(top)) = docs.into_iter().next() else {
        return Err(malformed(file, "the document is not a mapping"));
    };
    let mut raw = Raw {
        values: Vec::new(),
        age: Vec::new(),
        lastmodified: String::new(),
        mac: String::new(),
        suffix: DEFAULT_SUFFIX.into(),
        others: Vec::new(),
        version: false,
    };
    let mut sops = None;
    for (k, v) in top {
        let key = scalar_text(&k).ok_or_else(|| malformed(file, "a key is not a scalar"))?;
        if key == "sops" {
            sops = Some(v);
            continue;
        }
        let value = scalar_text(&v).ok_or_else(|| {
            SecretsError::Unsupported(format!(
                "{file}: {key} is a nested mapping or list; Windlass secrets are flat name = value pairs"
            ))
        })?;
        raw.values.push((key, value));
    }
    let Some(Yaml::Hash(sops)) = sops else {
        return Err(malformed(file, "no `sops` metadata (truncated, or not a SOPS file?)"));
    };
    for (k, v) in sops {
        let key = scalar_text(&k).unwrap_or_default();
        match key.as_str() {
            "age" => {
                let Yaml::Array(list) = v else { return Err(malformed(file, "sops.age is not a list")) };
                for item in list {
                    let recipient = item["recipient"].as_str().map(str::to_owned);
                    let enc = item["enc"].as_str().map(str::to_owned);
                    match (recipient, enc) {
                        (Some(recipient), Some(enc)) => raw.age.push(AgeEntry { recipient, enc }),
                        _ => return Err(malformed(file, "an age entry lacks its recipient or enc")),
                    }
                }
            }
            "lastmodified" => raw.lastmodified = scalar_text(&v).unwrap_or_default(),
            "mac" => raw.mac = scalar_text(&v).unwrap_or_default(),
            "unencrypted_suffix" => raw.suffix = scalar_text(&v).unwrap_or_default(),
            "version" => raw.version = scalar_text(&v).is_some_and(|t| !t.is_empty()),
            "mac_only_encrypted" if v == Yaml::Boolean(false) => {}
            // sops 3.x writes these empty for the key sources a file does not use.
            "kms" | "gcp_kms" | "azure_kv" | "hc_vault" | "pgp" | "lastmodified_unencrypted"
                if matches!(v, Yaml::Null) || matches!(&v, Yaml::Array(a) if a.is_empty()) => {}
            other => raw.others.push(other.to_owned()),
        }
    }
    if raw.lastmodified.is_empty() || raw.mac.is_empty() || !raw.version {
        return Err(malformed(file, "the SOPS metadata is incomplete (truncated, or not a SOPS file?)"));
    }
    Ok(raw)
}

fn yaml_key(name: &str) -> String {
    let plain = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(
            name.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n" | "sops"
        )
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if plain { name.to_owned() } else { json_string(name) }
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn render_yaml(values: &[(&str, &str)], meta: &Meta<'_>) -> String {
    let mut out = String::new();
    for (k, v) in values {
        let v = if v.starts_with("ENC[") { (*v).to_owned() } else { json_string(v) };
        out.push_str(&format!("{}: {v}\n", yaml_key(k)));
    }
    out.push_str("sops:\n    age:\n");
    for a in meta.age {
        out.push_str(&format!("        - recipient: {}\n          enc: |\n", a.recipient));
        for line in a.enc.lines() {
            out.push_str(&format!("            {line}\n"));
        }
    }
    out.push_str(&format!("    lastmodified: \"{}\"\n", meta.lastmodified));
    out.push_str(&format!("    mac: {}\n", meta.mac));
    out.push_str(&format!("    unencrypted_suffix: {}\n", meta.suffix));
    out.push_str(&format!("    version: {SOPS_VERSION}\n"));
    out
}

fn render_json(values: &[(&str, &str)], meta: &Meta<'_>) -> String {
    let mut out = String::from("{\n");
    for (k, v) in values {
        out.push_str(&format!("\t{}: {},\n", json_string(k), json_string(v)));
    }
    out.push_str("\t\"sops\": {\n\t\t\"age\": [\n");
    let n = meta.age.len();
    for (i, a) in meta.age.iter().enumerate() {
        out.push_str(&format!(
            "\t\t\t{{\n\t\t\t\t\"recipient\": {},\n\t\t\t\t\"enc\": {}\n\t\t\t}}{}\n",
            json_string(&a.recipient),
            json_string(&a.enc),
            if i + 1 < n { "," } else { "" }
        ));
    }
    out.push_str("\t\t],\n");
    out.push_str(&format!("\t\t\"lastmodified\": {},\n", json_string(meta.lastmodified)));
    out.push_str(&format!("\t\t\"mac\": {},\n", json_string(meta.mac)));
    out.push_str(&format!("\t\t\"unencrypted_suffix\": {},\n", json_string(meta.suffix)));
    out.push_str(&format!("\t\t\"version\": \"{SOPS_VERSION}\"\n\t}}\n}}\n"));
    out
}
