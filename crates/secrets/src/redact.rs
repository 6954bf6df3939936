//! The redactor: the one place that turns secret values into `[REDACTED:NAME]` in anything
//! Windlass prints, logs or stores (command output, errors, deploy logs).
//!
//! A secret leaks in more shapes than its plain text, so each value is searched for as:
//! - the plain bytes;
//! - its URL encoding (percent-encoding with upper- and lower-case hex, and the form encoding
//!   with `+` for space), as it appears in connection strings and query strings;
//! - its base64 encoding at all three byte alignments, in the standard and URL-safe alphabets,
//!   as it appears inside `Authorization: Basic base64(user:pass)`: for an alignment `o` (the
//!   secret starts `o` bytes after a 3-byte group boundary) only the base64 characters that
//!   depend on the secret's bytes alone are searched, which are the same whatever surrounds it.
//!
//! Patterns are tried longest first, so a longer secret containing a shorter one is redacted
//! whole. [`StreamRedactor`] does the same over chunked output (a child's stdout) and finds a
//! secret split across chunks by holding back the last `longest pattern - 1` bytes.
//!
//! Values shorter than [`MIN_LEN`] are refused at the door (`set`, `import`) unless the user
//! insists: their base64 inner part would be a handful of characters that occur by chance.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// The shortest value that can be redacted reliably.
pub const MIN_LEN: usize = 8;

/// Shortest derived (base64 or encoded) pattern still searched; shorter ones would match noise.
const MIN_PATTERN: usize = 6;

#[derive(Clone, Default)]
pub struct Redactor {
    /// (pattern, replacement), longest pattern first.
    patterns: Vec<(Vec<u8>, Vec<u8>)>,
    /// For each first byte, the indices of the patterns starting with it (longest first).
    by_first: Vec<Vec<usize>>,
    max_len: usize,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} patterns)", self.patterns.len())
    }
}

impl Drop for Redactor {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for (p, _) in &mut self.patterns {
            p.zeroize();
        }
    }
}

impl Redactor {
    /// A redactor for these (name, value) pairs. Empty values are ignored.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut patterns: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (name, value) in secrets {
            if value.is_empty() {
                continue;
            }
            let replacement = format!("[REDACTED:{name}]").into_bytes();
            let mut add = |p: Vec<u8>, derived: bool| {
                if p.is_empty() || (derived && p.len() < MIN_PATTERN) {
                    return;
                }
                if !patterns.iter().any(|(q, _)| *q == p) {
                    patterns.push((p, replacement.clone()));
                }
            };
            add(value.as_bytes().to_vec(), false);
            for encoded in url_encodings(value) {
                add(encoded.into_bytes(), true);
            }
            for inner in base64_inner(value.as_bytes()) {
                add(inner.into_bytes(), true);
            }
        }
        patterns.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        let max_len = patterns.first().map_or(0, |p| p.0.len());
        let mut by_first = vec![Vec::new(); 256];
        for (i, (p, _)) in patterns.iter().enumerate() {
            if let Some(&b) = p.first() {
                by_first[usize::from(b)].push(i);
            }
        }
        Redactor { patterns, by_first, max_len }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The redacted copy of `text`.
    pub fn redact(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.redact_bytes(text.as_bytes())).into_owned()
    }

    pub fn redact_bytes(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let consumed = self.scan(input, input.len(), &mut out);
        out.extend_from_slice(&input[consumed..]);
        out
    }

    /// Redacts matches starting before `limit`; returns how many input bytes were consumed.
    fn scan(&self, input: &[u8], limit: usize, out: &mut Vec<u8>) -> usize {
        let mut i = 0;
        'next: while i < limit {
            for &p in self.by_first.get(usize::from(input[i])).map_or(&[][..], Vec::as_slice) {
                let (pattern, replacement) = &self.patterns[p];
                if input[i..].starts_with(pattern) {
                    out.extend_from_slice(replacement);
                    i += pattern.len();
                    continue 'next;
                }
            }
            out.push(input[i]);
            i += 1;
        }
        i
    }

    /// A redactor for output that arrives in chunks.
    pub fn stream(&self) -> StreamRedactor<'_> {
        StreamRedactor { redactor: self, pending: Vec::new() }
    }
}

/// Redacts a stream chunk by chunk, catching secrets split across chunks.
pub struct StreamRedactor<'a> {
    redactor: &'a Redactor,
    pending: Vec<u8>,
}

impl StreamRedactor<'_> {
    /// Feeds a chunk; returns what can be safely written now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let hold = self.redactor.max_len.saturating_sub(1);
        if self.pending.len() <= hold {
            return Vec::new();
        }
        let limit = self.pending.len() - hold;
        let mut out = Vec::with_capacity(limit);
        let consumed = self.redactor.scan(&self.pending, limit, &mut out);
        self.pending.drain(..consumed);
        out
    }

    /// Ends the stream; returns the rest.
    pub fn finish(mut self) -> Vec<u8> {
        let pending = std::mem::take(&mut self.pending);
        self.redactor.redact_bytes(&pending)
    }
}

fn url_encodings(value: &str) -> Vec<String> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    let mut upper = String::new();
    let mut lower = String::new();
    let mut form = String::new();
    for b in value.bytes() {
        if unreserved(b) {
            upper.push(b as char);
            lower.push(b as char);
            form.push(b as char);
        } else {
            upper.push_str(&format!("%{b:02X}"));
            lower.push_str(&format!("%{b:02x}"));
            if b == b' ' { form.push('+') } else { form.push_str(&format!("%{b:02X}")) }
        }
    }
    [upper, lower, form].into_iter().filter(|e| e != value).collect()
}

/// The base64 characters that depend only on `value`, at byte offsets 0, 1 and 2 of a 3-byte
/// group, in both alphabets.
fn base64_inner(value: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for offset in 0..3usize {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(value);
        let start = (offset * 8).div_ceil(6);
        let end = (padded.len() * 8) / 6;
        if end <= start {
            continue;
        }
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&padded);
            if let Some(inner) = encoded.get(start..end) {
                out.push(inner.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    const SECRET: &str = "s3cr3t-P@ss/w0rd+x";

    #[test]
    fn plain_url_and_base64_at_every_alignment() {
        let r = Redactor::new([("DB_PASSWORD", SECRET)]);
        assert_eq!(r.redact(&format!("pw={SECRET}!")), "pw=[REDACTED:DB_PASSWORD]!");
        let url = "s3cr3t-P%40ss%2Fw0rd%2Bx";
        assert!(!r.redact(&format!("postgres://u:{url}@h/db")).contains(url));
        for prefix in ["", "u:", "us:", "use:", "user:"] {
            for engine in [&STANDARD, &base64::engine::general_purpose::URL_SAFE] {
                let b64 = engine.encode(format!("{prefix}{SECRET}"));
                let redacted = r.redact(&format!("Authorization: Basic {b64}"));
                assert!(redacted.contains("[REDACTED:DB_PASSWORD]"), "{prefix}: {redacted}");
                for inner in base64_inner(SECRET.as_bytes()) {
                    assert!(!redacted.contains(&inner));
                }
            }
        }
    }

    #[test]
    fn longest_first_and_streaming_across_chunks() {
        let r = Redactor::new([("SHORT", "abcdefgh"), ("LONG", "abcdefgh-ijklmnop")]);
        assert_eq!(r.redact("x abcdefgh-ijklmnop y abcdefgh"), "x [REDACTED:LONG] y [REDACTED:SHORT]");
        let text = format!("line one {SECRET} and {SECRET}{SECRET} end");
        let whole = Redactor::new([("P", SECRET)]);
        for size in 1..12 {
            let mut s = whole.stream();
            let mut out = Vec::new();
            for chunk in text.as_bytes().chunks(size) {
                out.extend(s.push(chunk));
            }
            out.extend(s.finish());
            assert_eq!(String::from_utf8(out).unwrap_or_default(), whole.redact(&text));
        }
    }
}
