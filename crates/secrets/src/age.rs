//! The age v1 file format (<https://age-encryption.org/v1>), X25519 recipients only, written
//! here over `x25519-dalek` and `ring` so that Windlass needs neither the `age` binary nor a
//! large dependency tree. SOPS stores the data key of a file age-encrypted to each recipient
//! and ASCII-armored; this module reads and writes exactly that, so files interoperate with the
//! real `sops` and `age` tools in both directions.
//!
//! Only what SOPS needs is here: X25519 stanzas (other stanza types are skipped when
//! decrypting, as age does), the header MAC, the STREAM payload and the armor. Reading is as
//! strict as the spec: `tests/age_cctv.rs` runs every C2SP CCTV vector that uses these.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ring::{aead, hkdf, hmac};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::SecretsError;

const INTRO: &str = "age-encryption.org/v1";
const X25519_INFO: &[u8] = b"age-encryption.org/v1/X25519";
const CHUNK: usize = 64 * 1024;
const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";
const ARMOR_END: &str = "-----END AGE ENCRYPTED FILE-----";
const RECIPIENT_HRP: &str = "age";
const IDENTITY_HRP: &str = "age-secret-key-";

/// An age X25519 public key, `age1...`.
#[derive(Clone, PartialEq, Eq)]
pub struct Recipient {
    key: [u8; 32],
}

impl Recipient {
    pub fn parse(text: &str) -> Result<Self, SecretsError> {
        let text = text.trim();
        let bad =
            |why: &str| SecretsError::BadKey(format!("`{text}` is not an age recipient ({why}); expected age1..."));
        if text.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("recipients are lowercase"));
        }
        let (hrp, data) = bech32_decode(text).map_err(|e| bad(&e.0))?;
        if hrp != RECIPIENT_HRP {
            return Err(bad("wrong prefix"));
        }
        let key: [u8; 32] = data.try_into().map_err(|_| bad("wrong length"))?;
        Ok(Recipient { key })
    }

    pub fn encode(&self) -> String {
        bech32_encode(RECIPIENT_HRP, &self.key)
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encode())
    }
}

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recipient({})", self.encode())
    }
}

/// An age X25519 secret key, `AGE-SECRET-KEY-1...`; zeroized on drop, never printed.
#[derive(Clone)]
pub struct Identity {
    secret: StaticSecret,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.recipient())
    }
}

impl Identity {
    /// A new random identity (what `age-keygen` makes).
    pub fn generate() -> Result<Self, SecretsError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        random(&mut bytes[..])?;
        Ok(Identity { secret: StaticSecret::from(*bytes) })
    }

    pub fn parse(text: &str) -> Result<Self, SecretsError> {
        let text = text.trim();
        let bad = |why: &str| {
            SecretsError::BadKey(format!(
                "an identity line is not an age secret key ({why}); expected AGE-SECRET-KEY-1..."
            ))
        };
        let lower = Zeroizing::new(text.to_ascii_lowercase());
        let (hrp, data) = bech32_decode(&lower).map_err(|e| bad(&e.0))?;
        let data = Zeroizing::new(data);
        if hrp != IDENTITY_HRP {
            return Err(bad("wrong prefix"));
        }
        let key: [u8; 32] = data.as_slice().try_into().map_err(|_| bad("wrong length"))?;
        Ok(Identity { secret: StaticSecret::from(key) })
    }

    /// Every identity in a keys file (`#` comments and blank lines allowed), as `age-keygen` writes.
    pub fn parse_file(text: &str) -> Result<Vec<Self>, SecretsError> {
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(Identity::parse).collect()
    }

    pub fn recipient(&self) -> Recipient {
        Recipient { key: PublicKey::from(&self.secret).to_bytes() }
    }

    /// The `AGE-SECRET-KEY-1...` text (for writing a keys file).
    pub fn encode(&self) -> Zeroizing<String> {
        Zeroizing::new(bech32_encode(IDENTITY_HRP, self.secret.as_bytes()).to_ascii_uppercase())
    }
}

fn random(buf: &mut [u8]) -> Result<(), SecretsError> {
    getrandom::fill(buf).map_err(|e| SecretsError::Crypto(format!("no randomness from the OS: {e}")))
}

fn hkdf32(salt: &[u8], ikm: &[u8], info: &[u8]) -> Result<Zeroizing<[u8; 32]>, SecretsError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    let info = [info];
    prk.expand(&info, hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut out[..]))
        .map_err(|_| SecretsError::Crypto("HKDF failed".into()))?;
    Ok(out)
}

fn chacha(key: &[u8]) -> Result<aead::LessSafeKey, SecretsError> {
    aead::UnboundKey::new(&aead::CHACHA20_POLY1305, key)
        .map(aead::LessSafeKey::new)
        .map_err(|_| SecretsError::Crypto("bad ChaCha20-Poly1305 key".into()))
}

/// Encrypts `plaintext` to every recipient; returns the binary age file.
pub fn encrypt(plaintext: &[u8], recipients: &[Recipient]) -> Result<Vec<u8>, SecretsError> {
    if recipients.is_empty() {
        return Err(SecretsError::Crypto("no recipients to encrypt to".into()));
    }
    let mut file_key = Zeroizing::new([0u8; 16]);
    random(&mut file_key[..])?;
    let mut header = format!("{INTRO}\n");
    for recipient in recipients {
        let mut eph = Zeroizing::new([0u8; 32]);
        random(&mut eph[..])?;
        let eph = StaticSecret::from(*eph);
        let share = PublicKey::from(&eph);
        let shared = eph.diffie_hellman(&PublicKey::from(recipient.key));
        if !shared.was_contributory() {
            return Err(SecretsError::BadKey(format!("recipient {recipient} is a low-order point")));
        }
        let mut salt = Vec::with_capacity(64);
        salt.extend_from_slice(share.as_bytes());
        salt.extend_from_slice(&recipient.key);
        let wrap_key = hkdf32(&salt, shared.as_bytes(), X25519_INFO)?;
        let mut body = file_key.to_vec();
        chacha(&wrap_key[..])?
            .seal_in_place_append_tag(aead::Nonce::assume_unique_for_key([0; 12]), aead::Aad::empty(), &mut body)
            .map_err(|_| SecretsError::Crypto("wrapping the file key failed".into()))?;
        header.push_str(&format!("-> X25519 {}\n", STANDARD_NO_PAD.encode(share.as_bytes())));
        push_wrapped(&mut header, &STANDARD_NO_PAD.encode(&body));
    }
    header.push_str("---");
    let mac_key = hkdf32(&[], &file_key[..], b"header")?;
    let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &mac_key[..]), header.as_bytes());
    header.push_str(&format!(" {}\n", STANDARD_NO_PAD.encode(mac.as_ref())));

    let mut out = header.into_bytes();
    let mut nonce = [0u8; 16];
    random(&mut nonce)?;
    out.extend_from_slice(&nonce);
    let payload_key = hkdf32(&nonce, &file_key[..], b"payload")?;
    let key = chacha(&payload_key[..])?;
    let chunks: Vec<&[u8]> = if plaintext.is_empty() { vec![&[]] } else { plaintext.chunks(CHUNK).collect() };
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let mut buf = chunk.to_vec();
        key.seal_in_place_append_tag(stream_nonce(i as u128, last), aead::Aad::empty(), &mut buf)
            .map_err(|_| SecretsError::Crypto("payload encryption failed".into()))?;
        out.extend_from_slice(&buf);
        buf.zeroize();
    }
    Ok(out)
}

fn push_wrapped(out: &mut String, b64: &str) {
    // Body lines are 64 columns; the last one is always shorter (possibly empty).
    let mut rest = b64;
    while rest.len() >= 64 {
        out.push_str(&rest[..64]);
        out.push('\n');
        rest = &rest[64..];
    }
    out.push_str(rest);
    out.push('\n');
}

fn stream_nonce(counter: u128, last: bool) -> aead::Nonce {
    let mut n = [0u8; 12];
    n[..11].copy_from_slice(&counter.to_be_bytes()[5..]);
    n[11] = u8::from(last);
    aead::Nonce::assume_unique_for_key(n)
}

/// One recipient stanza: `-> type args...` and its decoded body.
struct Stanza<'a> {
    args: Vec<&'a str>,
    body: Vec<u8>,
}

/// A parsed header: its stanzas, its MAC, where the MAC'd text ends (after `---`) and where the
/// payload starts.
struct Header<'a> {
    stanzas: Vec<Stanza<'a>>,
    mac: Vec<u8>,
    mac_end: usize,
    payload_start: usize,
}

/// Columns of a full stanza body line.
const BODY_COLUMNS: usize = 64;

fn is_base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// The next line of `file` from `pos` (without its LF), moving `pos` past it. Header lines end
/// with LF only; a CR is an ordinary byte (and then refused by whoever reads the line).
fn header_line<'a>(file: &'a [u8], pos: &mut usize) -> Result<&'a [u8], AgeFormatError> {
    let rest = file.get(*pos..).unwrap_or_default();
    let len = rest.iter().position(|&b| b == b'\n').ok_or("truncated header (a line without its end)")?;
    *pos += len + 1;
    Ok(&rest[..len])
}

/// Parses the header strictly, as the spec's ABNF says: the v1 line, one or more stanzas
/// (arguments of visible ASCII, a canonical unpadded base64 body in 64-column lines ending with a
/// shorter one), and `--- ` with the 43-character MAC.
fn parse_header(file: &[u8]) -> Result<Header<'_>, AgeFormatError> {
    let mut pos = 0;
    let version = header_line(file, &mut pos)?;
    if version != INTRO.as_bytes() {
        return Err(if version.starts_with(b"age-encryption.org/") {
            "unsupported age format version".into()
        } else {
            "not an age v1 file".into()
        });
    }
    let mut stanzas = Vec::new();
    loop {
        let line_start = pos;
        let line = header_line(file, &mut pos)?;
        if let Some(rest) = line.strip_prefix(b"-> ") {
            let mut args = Vec::new();
            for arg in rest.split(|&b| b == b' ') {
                if arg.is_empty() || !arg.iter().all(|b| (0x21..=0x7e).contains(b)) {
                    return Err("a stanza has an empty or non-printable argument".into());
                }
                args.push(std::str::from_utf8(arg).map_err(|_| "a stanza argument is not ASCII")?);
            }
            let mut body = Vec::new();
            loop {
                let line = header_line(file, &mut pos)?;
                if line.len() > BODY_COLUMNS || !line.iter().copied().all(is_base64_char) {
                    return Err("a stanza body line is not base64 of at most 64 columns".into());
                }
                body.extend_from_slice(line);
                if line.len() < BODY_COLUMNS {
                    break;
                }
            }
            let body = STANDARD_NO_PAD.decode(&body).map_err(|_| "a stanza body is not canonical base64")?;
            stanzas.push(Stanza { args, body });
        } else if line.starts_with(b"---") {
            if stanzas.is_empty() {
                return Err("the header has no recipient stanza".into());
            }
            let mac = line
                .strip_prefix(b"--- ")
                .filter(|m| m.len() == 43 && m.iter().copied().all(is_base64_char))
                .ok_or("bad header MAC line")?;
            let mac = STANDARD_NO_PAD.decode(mac).map_err(|_| "the header MAC is not canonical base64")?;
            return Ok(Header { stanzas, mac, mac_end: line_start + 3, payload_start: pos });
        } else {
            return Err("a header line is neither a stanza nor the MAC".into());
        }
    }
}

/// The file key in `stanza` for `identity`: `Ok(None)` if the stanza is not an X25519 one or not
/// addressed to this identity; `Err` if it is a malformed X25519 stanza (the spec says to reject
/// the file, not to skip the stanza).
fn unwrap_x25519(stanza: &Stanza<'_>, identity: &Identity) -> Result<Option<Zeroizing<Vec<u8>>>, AgeFormatError> {
    if stanza.args.first() != Some(&"X25519") {
        return Ok(None);
    }
    let [_, share] = stanza.args.as_slice() else {
        return Err("an X25519 stanza must have exactly one argument".into());
    };
    let share: [u8; 32] = STANDARD_NO_PAD
        .decode(share)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or("an X25519 share is not canonical base64 of 32 bytes")?;
    // Checked before any decryption (the spec's defence against partitioning oracles).
    if stanza.body.len() != 32 {
        return Err("an X25519 stanza body is not 32 bytes".into());
    }
    let shared = identity.secret.diffie_hellman(&PublicKey::from(share));
    if !shared.was_contributory() {
        return Err("an X25519 share is a low-order point".into());
    }
    let mut salt = Vec::with_capacity(64);
    salt.extend_from_slice(&share);
    salt.extend_from_slice(&identity.recipient().key);
    let wrap_key = hkdf32(&salt, shared.as_bytes(), X25519_INFO).map_err(|e| e.to_string())?;
    let key = chacha(&wrap_key[..]).map_err(|e| e.to_string())?;
    let mut buf = Zeroizing::new(stanza.body.clone());
    match key.open_in_place(aead::Nonce::assume_unique_for_key([0; 12]), aead::Aad::empty(), &mut buf) {
        Ok(plain) => Ok(Some(Zeroizing::new(plain.to_vec()))),
        Err(_) => Ok(None),
    }
}

/// What is wrong with an age file, its armor or a bech32 key, as the age spec words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AgeFormatError(String);

impl From<String> for AgeFormatError {
    fn from(why: String) -> Self {
        AgeFormatError(why)
    }
}

impl From<&str> for AgeFormatError {
    fn from(why: &str) -> Self {
        AgeFormatError(why.to_owned())
    }
}

/// Why an age file could not be decrypted.
#[derive(Debug)]
pub enum DecryptFailure {
    /// None of the identities matches a recipient stanza.
    NoMatch,
    /// The file is damaged or was changed.
    Corrupt(AgeFormatError),
}

/// Decrypts a binary age file with any of `identities`. All or nothing: no plaintext is returned
/// unless the whole payload authenticates, up to a final chunk and with nothing after it.
pub fn decrypt(file: &[u8], identities: &[Identity]) -> Result<Zeroizing<Vec<u8>>, DecryptFailure> {
    let corrupt = |why: &str| DecryptFailure::Corrupt(why.into());
    let header = parse_header(file).map_err(DecryptFailure::Corrupt)?;

    let mut file_key: Option<Zeroizing<Vec<u8>>> = None;
    'outer: for identity in identities {
        for stanza in &header.stanzas {
            if let Some(key) = unwrap_x25519(stanza, identity).map_err(DecryptFailure::Corrupt)? {
                file_key = Some(key);
                break 'outer;
            }
        }
    }
    let file_key = file_key.ok_or(DecryptFailure::NoMatch)?;
    let mac_key = hkdf32(&[], &file_key, b"header").map_err(|_| corrupt("HKDF failed"))?;
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, &mac_key[..]), &file[..header.mac_end], &header.mac)
        .map_err(|_| corrupt("header MAC does not match"))?;

    let rest = &file[header.payload_start..];
    if rest.len() < 16 {
        return Err(corrupt("truncated payload nonce"));
    }
    let (nonce, mut data) = rest.split_at(16);
    if data.is_empty() {
        return Err(corrupt("the payload has no chunk"));
    }
    let payload_key = hkdf32(nonce, &file_key, b"payload").map_err(|_| corrupt("HKDF failed"))?;
    let key = chacha(&payload_key[..]).map_err(|_| corrupt("bad payload key"))?;
    let mut out = Zeroizing::new(Vec::new());
    let mut counter = 0u128;
    loop {
        let take = data.len().min(CHUNK + 16);
        if take < 16 {
            return Err(corrupt("truncated payload chunk"));
        }
        let last = take == data.len();
        let mut buf = Zeroizing::new(data[..take].to_vec());
        let plain = key
            .open_in_place(stream_nonce(counter, last), aead::Aad::empty(), &mut buf)
            .map_err(|_| corrupt("payload does not authenticate (truncated or changed)"))?;
        if last && plain.is_empty() && counter > 0 {
            return Err(corrupt("the final payload chunk is empty (only an empty payload may end so)"));
        }
        out.extend_from_slice(plain);
        data = &data[take..];
        counter += 1;
        if last {
            break;
        }
    }
    Ok(out)
}

/// ASCII armor, as `age -a` and SOPS write it: standard base64 with padding, 64 columns.
pub fn armor(binary: &[u8]) -> String {
    let b64 = STANDARD.encode(binary);
    let mut out = format!("{ARMOR_BEGIN}\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(ARMOR_END);
    out.push('\n');
    out
}

/// Reads the ASCII armor strictly (RFC 7468's strict PEM, as age and SOPS do): the armor is
/// malleable otherwise. Only whitespace around the block and CRLF line ends are tolerated; every
/// base64 line is 64 columns but the last (1 to 64), with canonical padded base64, nothing else.
pub fn dearmor(text: &str) -> Result<Vec<u8>, AgeFormatError> {
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    if lines.first() != Some(&ARMOR_BEGIN) {
        return Err(format!("the data key is not an armored age file (it must start with `{ARMOR_BEGIN}`)").into());
    }
    if lines.len() < 2 || lines.last() != Some(&ARMOR_END) {
        return Err(format!("the armored data key does not end with `{ARMOR_END}`").into());
    }
    let body = &lines[1..lines.len() - 1];
    for (i, line) in body.iter().enumerate() {
        let columns_ok = if i + 1 == body.len() { (1..=64).contains(&line.len()) } else { line.len() == 64 };
        if !columns_ok {
            return Err(format!(
                "armor line {} is {} columns (every line must be 64 but the last, 1 to 64)",
                i + 2,
                line.len()
            )
            .into());
        }
        if !line.bytes().all(|b| is_base64_char(b) || b == b'=') {
            return Err(format!("armor line {} has a character that is not base64", i + 2).into());
        }
    }
    STANDARD.decode(body.concat()).map_err(|_| "the armored data key is not canonical base64".into())
}

// --- bech32 (BIP 173, the original checksum constant, as age uses) ---

const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

fn polymod(values: &[u8]) -> u32 {
    const GEN: [u32; 5] = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
    let mut chk: u32 = 1;
    for &v in values {
        let b = chk >> 25;
        chk = ((chk & 0x1ffffff) << 5) ^ u32::from(v);
        for (i, g) in GEN.iter().enumerate() {
            if (b >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

fn hrp_expand(hrp: &str) -> Vec<u8> {
    let mut v: Vec<u8> = hrp.bytes().map(|c| c >> 5).collect();
    v.push(0);
    v.extend(hrp.bytes().map(|c| c & 31));
    v
}

fn convert_bits(data: &[u8], from: u32, to: u32, pad: bool) -> Result<Vec<u8>, AgeFormatError> {
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    let mut out = Vec::new();
    let maxv = (1u32 << to) - 1;
    for &value in data {
        acc = (acc << from) | u32::from(value);
        bits += from;
        while bits >= to {
            bits -= to;
            out.push(((acc >> bits) & maxv) as u8);
        }
    }
    if pad {
        if bits > 0 {
            out.push(((acc << (to - bits)) & maxv) as u8);
        }
    } else if bits >= from || ((acc << (to - bits)) & maxv) != 0 {
        return Err("bad padding".into());
    }
    Ok(out)
}

fn bech32_encode(hrp: &str, data: &[u8]) -> String {
    let data5 = convert_bits(data, 8, 5, true).unwrap_or_default();
    let mut values = hrp_expand(hrp);
    values.extend_from_slice(&data5);
    values.extend_from_slice(&[0; 6]);
    let pm = polymod(&values) ^ 1;
    let mut out = format!("{hrp}1");
    for d in data5.iter().copied().chain((0..6).map(|i| ((pm >> (5 * (5 - i))) & 31) as u8)) {
        out.push(CHARSET[d as usize] as char);
    }
    out
}

fn bech32_decode(text: &str) -> Result<(String, Vec<u8>), AgeFormatError> {
    let sep = text.rfind('1').ok_or("no separator")?;
    let (hrp, rest) = (&text[..sep], &text[sep + 1..]);
    if hrp.is_empty() || rest.len() < 6 {
        return Err("too short".into());
    }
    let mut data = Vec::with_capacity(rest.len());
    for c in rest.bytes() {
        let v = CHARSET.iter().position(|&x| x == c).ok_or("bad character")?;
        data.push(v as u8);
    }
    let mut values = hrp_expand(hrp);
    values.extend_from_slice(&data);
    if polymod(&values) != 1 {
        return Err("bad checksum".into());
    }
    let bytes = convert_bits(&data[..data.len() - 6], 5, 8, false)?;
    Ok((hrp.to_owned(), bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn round_trip_two_recipients() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        let c = Identity::generate().unwrap();
        let file = encrypt(b"the data key 0123456789abcdef012", &[a.recipient(), b.recipient()]).unwrap();
        let armored = armor(&file);
        let back = dearmor(&armored).unwrap();
        assert_eq!(&decrypt(&back, std::slice::from_ref(&b)).unwrap()[..], b"the data key 0123456789abcdef012");
        assert_eq!(&decrypt(&back, std::slice::from_ref(&a)).unwrap()[..], b"the data key 0123456789abcdef012");
        assert!(matches!(decrypt(&back, &[c]), Err(DecryptFailure::NoMatch)));
        let mut tampered = back.clone();
        let n = tampered.len() - 1;
        tampered[n] ^= 1;
        assert!(matches!(decrypt(&tampered, std::slice::from_ref(&a)), Err(DecryptFailure::Corrupt(_))));
        let parsed = Identity::parse(&a.encode()).unwrap();
        assert!(parsed.recipient() == a.recipient());
        assert!(Recipient::parse(&a.recipient().encode()).unwrap() == a.recipient());
    }
}
