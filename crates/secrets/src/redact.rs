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
//!   depend on the secret's bytes alone are searched, which are the same whatever surrounds it;
//! - for a value of several lines (a PEM key): also each of its lines of at least [`MIN_LEN`]
//!   bytes on its own, the value with CRLF line ends, without its final line end, and with its
//!   line ends escaped as `\n` (JSON, logs), so that output split into lines, or printed in
//!   part, still shows none of it.
//!
//! Patterns are tried longest first, so a longer secret containing a shorter one is redacted
//! whole. [`StreamRedactor`] does the same over chunked output (a child's stdout): it holds back
//! only the tail that could still be the start of a secret, so a secret split across chunks is
//! found and everything else passes at once. Callers redact a stream *before* they split it
//! into lines.
//!
//! Values shorter than [`MIN_LEN`] are refused at the door (`set`, `import`, `validate`) unless
//! the user insists: their base64 inner part would be a handful of characters that occur by
//! chance. A short value that gets here anyway is matched only as a whole token (not inside a
//! longer run of letters, digits and `_`), so `PIN=4242` hides `4242` but leaves `14242` and
//! `v4242b` alone: it neither blanks unrelated text nor reveals itself by where the blanks are.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// The shortest value that can be redacted reliably.
pub const MIN_LEN: usize = 8;

/// Shortest derived (base64 or encoded) pattern still searched; shorter ones would match noise.
const MIN_PATTERN: usize = 6;

/// One form of a secret to search for.
struct Pattern {
    bytes: Vec<u8>,
    replacement: Vec<u8>,
    /// Matched only where it is not part of a longer run of word characters (a short value).
    whole_token: bool,
}

#[derive(Default)]
pub struct Redactor {
    /// Longest pattern first.
    patterns: Vec<Pattern>,
    /// For each first byte, the indices of the patterns starting with it (longest first).
    by_first: Vec<Vec<usize>>,
}

impl Clone for Redactor {
    fn clone(&self) -> Self {
        let patterns = self
            .patterns
            .iter()
            .map(|p| Pattern { bytes: p.bytes.clone(), replacement: p.replacement.clone(), whole_token: p.whole_token })
            .collect();
        Redactor { patterns, by_first: self.by_first.clone() }
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} patterns)", self.patterns.len())
    }
}

impl Drop for Redactor {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for p in &mut self.patterns {
            p.bytes.zeroize();
        }
    }
}

/// Letters, digits and `_`: what a short value may not be glued to.
fn is_word(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// What the scan found at one position.
enum Found {
    /// A pattern matches here: its index.
    Match(usize),
    /// What follows could still become a match once more input arrives.
    Undecided,
    None,
}

impl Redactor {
    /// A redactor for these (name, value) pairs. Empty values are ignored.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut patterns: Vec<Pattern> = Vec::new();
        for (name, value) in secrets {
            if value.is_empty() {
                continue;
            }
            let replacement = format!("[REDACTED:{name}]").into_bytes();
            // A value too short to be found reliably is found only as a whole token.
            let short = value.len() < MIN_LEN;
            let mut add = |p: Vec<u8>, derived: bool| {
                if p.is_empty() || (derived && p.len() < MIN_PATTERN) {
                    return;
                }
                let whole_token = short && p.iter().any(|&b| is_word(b));
                match patterns.iter_mut().find(|q| q.bytes == p) {
                    // Two secrets with one form: the stricter rule (anywhere) wins.
                    Some(existing) => existing.whole_token &= whole_token,
                    None => patterns.push(Pattern { bytes: p, replacement: replacement.clone(), whole_token }),
                }
            };
            add(value.as_bytes().to_vec(), false);
            for encoded in url_encodings(value) {
                add(encoded.into_bytes(), true);
            }
            for inner in base64_inner(value.as_bytes()) {
                add(inner.into_bytes(), true);
            }
            if value.contains('\n') {
                for form in multiline_forms(value) {
                    add(form.into_bytes(), false);
                }
                for line in value.lines().map(|l| l.trim_end_matches('\r')) {
                    if line.len() >= MIN_LEN {
                        add(line.as_bytes().to_vec(), false);
                    }
                }
            }
        }
        patterns.sort_by_key(|p| std::cmp::Reverse(p.bytes.len()));
        let mut by_first = vec![Vec::new(); 256];
        for (i, p) in patterns.iter().enumerate() {
            if let Some(&b) = p.bytes.first() {
                by_first[usize::from(b)].push(i);
            }
        }
        Redactor { patterns, by_first }
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
        self.scan(input, None, true, &mut out);
        out
    }

    /// What matches at `input[i..]`; `prev` is the byte before `input[0]` (from an earlier
    /// chunk), and `last` says no input follows `input`.
    fn find(&self, input: &[u8], i: usize, prev: Option<u8>, last: bool) -> Found {
        let rest = &input[i..];
        let before = if i == 0 { prev } else { input.get(i - 1).copied() };
        for &index in self.by_first.get(usize::from(rest[0])).map_or(&[][..], Vec::as_slice) {
            let pattern = &self.patterns[index];
            let bytes = &pattern.bytes;
            if rest.len() < bytes.len() {
                // Longer than what is here: it may yet match, unless the input has ended.
                if !last && bytes.starts_with(rest) {
                    return Found::Undecided;
                }
                continue;
            }
            if !rest.starts_with(bytes) {
                continue;
            }
            if pattern.whole_token {
                let glued_before = is_word(bytes[0]) && before.is_some_and(is_word);
                if glued_before {
                    continue;
                }
                match rest.get(bytes.len()) {
                    Some(&next) if is_word(bytes[bytes.len() - 1]) && is_word(next) => continue,
                    None if !last => return Found::Undecided,
                    _ => {}
                }
            }
            return Found::Match(index);
        }
        Found::None
    }

    /// Redacts `input` into `out`; returns how many input bytes were consumed (all of them when
    /// `last`; otherwise up to the first position that could start a secret not complete yet).
    fn scan(&self, input: &[u8], prev: Option<u8>, last: bool, out: &mut Vec<u8>) -> usize {
        let mut i = 0;
        while i < input.len() {
            match self.find(input, i, prev, last) {
                Found::Match(index) => {
                    let pattern = &self.patterns[index];
                    out.extend_from_slice(&pattern.replacement);
                    i += pattern.bytes.len();
                }
                Found::Undecided => return i,
                Found::None => {
                    out.push(input[i]);
                    i += 1;
                }
            }
        }
        i
    }

    /// A redactor for output that arrives in chunks.
    pub fn stream(&self) -> StreamRedactor<'_> {
        StreamRedactor { redactor: self, pending: Vec::new(), prev: None }
    }
}

/// Redacts a stream chunk by chunk, catching secrets split across chunks.
pub struct StreamRedactor<'a> {
    redactor: &'a Redactor,
    /// Input not passed on yet: it could be the start of a secret.
    pending: Vec<u8>,
    /// The last input byte passed on (a short value must not be glued to it).
    prev: Option<u8>,
}

impl StreamRedactor<'_> {
    /// Feeds a chunk; returns what can be safely written now. Only a tail that could still
    /// begin a secret is held back.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.pending.len());
        let consumed = self.redactor.scan(&self.pending, self.prev, false, &mut out);
        if consumed > 0 {
            self.prev = Some(self.pending[consumed - 1]);
            self.pending.drain(..consumed);
        }
        out
    }

    /// Ends the stream; returns the rest.
    pub fn finish(mut self) -> Vec<u8> {
        let pending = std::mem::take(&mut self.pending);
        let mut out = Vec::with_capacity(pending.len());
        self.redactor.scan(&pending, self.prev, true, &mut out);
        out
    }
}

/// A multi-line value as it also appears: with CRLF line ends, without its final line end (or
/// with one, when it has none), and with its line ends escaped as in JSON.
fn multiline_forms(value: &str) -> Vec<String> {
    let lf = value.replace("\r\n", "\n");
    let trimmed = lf.trim_end_matches('\n').to_owned();
    let mut forms = vec![lf.replace('\n', "\r\n"), trimmed.clone(), trimmed.replace('\n', "\r\n")];
    forms.push(trimmed.replace('\n', "\\n"));
    forms.push(trimmed.replace('\n', "\\r\\n"));
    forms.push(lf);
    forms.into_iter().filter(|f| f != value && !f.is_empty()).collect()
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

    /// Feeds `text` to a stream redactor in chunks of `size`, as a child's pipe would.
    fn streamed(r: &Redactor, text: &[u8], size: usize) -> Vec<u8> {
        let mut s = r.stream();
        let mut out = Vec::new();
        for chunk in text.chunks(size) {
            out.extend(s.push(chunk));
        }
        out.extend(s.finish());
        out
    }

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nq1w2e3r4t5y6u7i8o9p0aZsXdCfVgBhNjMk\n-----END PRIVATE KEY-----\n";

    #[test]
    fn a_multi_line_secret_is_found_whole_in_part_and_line_by_line() {
        let r = Redactor::new([("TLS_KEY", PEM)]);
        let shown = |text: &str| {
            let out = r.redact(text);
            for line in PEM.lines() {
                assert!(!out.contains(line), "{line:?} in {out:?}");
            }
            out
        };
        assert_eq!(shown(&format!("key:\n{PEM}done")), "key:\n[REDACTED:TLS_KEY]done");
        // CRLF line ends, no final line end, escaped as in JSON, and the lines one at a time.
        shown(&PEM.replace('\n', "\r\n"));
        shown(&format!("{}!", PEM.trim_end()));
        shown(&serde_json::to_string(PEM).unwrap_or_default());
        for line in PEM.lines() {
            shown(line);
        }
        // Percent-encoded and in base64, newlines and all.
        let encoded: String = PEM
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b == b'-' { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        assert!(r.redact(&encoded).contains("[REDACTED:TLS_KEY]"));
        let b64 = STANDARD.encode(PEM);
        assert!(!r.redact(&b64).contains(&b64[4..b64.len() - 4]));
        // Streamed in small chunks, split into lines only afterwards.
        let text = format!("before\n{PEM}after\n");
        for size in [1, 3, 7, 64] {
            let out = String::from_utf8(streamed(&r, text.as_bytes(), size)).unwrap_or_default();
            assert_eq!(out, "before\n[REDACTED:TLS_KEY]after\n", "chunks of {size}");
        }
    }

    #[test]
    fn a_short_value_is_hidden_only_as_a_whole_token() {
        // `validate` refuses shorter secrets by the same measure.
        assert_eq!(MIN_LEN, windlass_config::env_check::SECRET_MIN_LEN);
        let r = Redactor::new([("PIN", "4242"), ("LONG", "abcdefgh")]);
        assert_eq!(r.redact("PIN=4242"), "PIN=[REDACTED:PIN]");
        assert_eq!(r.redact("pin 4242."), "pin [REDACTED:PIN].");
        assert_eq!(r.redact("4242"), "[REDACTED:PIN]");
        // Inside a longer number or word it is left alone: no blanks that give it away.
        for text in ["order 142424 of 4242x", "id_4242", "v4242b", "42424242"] {
            assert_eq!(r.redact(text), text);
        }
        assert_eq!(r.redact("x4242 4242"), "x4242 [REDACTED:PIN]");
        // Long values are still found anywhere.
        assert_eq!(r.redact("xxabcdefghyy"), "xx[REDACTED:LONG]yy");
        // The same across chunk boundaries: the byte after a token decides, whenever it comes.
        let text = b"4242 x4242 42421 a=4242";
        let whole = r.redact_bytes(text);
        assert_eq!(String::from_utf8_lossy(&whole), "[REDACTED:PIN] x4242 42421 a=[REDACTED:PIN]");
        for size in 1..8 {
            assert_eq!(streamed(&r, text, size), whole, "chunks of {size}");
        }
    }

    #[test]
    fn a_stream_holds_back_only_what_could_start_a_secret() {
        let r = Redactor::new([("P", SECRET)]);
        let mut s = r.stream();
        assert_eq!(s.push(b"progress 10%\n"), b"progress 10%\n");
        assert_eq!(s.push(b"pw=s3cr"), b"pw=");
        assert_eq!(s.push(b"3t-P@ss/w0rd+x ok\n"), b"[REDACTED:P] ok\n");
        assert_eq!(s.push(b"s3c"), b"");
        assert_eq!(s.finish(), b"s3c");
    }
}
