//! The one percent-encoding (RFC 3986) of Windlass, over the `percent-encoding` crate: query
//! values and path segments encoded, and credentials written in URLs (database, SMTP, Redis)
//! decoded. No other crate hand-writes `%XX`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`) is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `text` as one query value or path segment: every byte that is not unreserved becomes `%XX`.
pub fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, COMPONENT).to_string()
}

/// `text` as one path segment of a URL, whatever it holds: every byte but RFC 3986's unreserved
/// ones is percent-encoded (so `/`, `?`, `#`, `%`, spaces and non-ASCII stay inside the
/// segment), and a segment that is all dots (`.`, `..`) is encoded whole, as no dot segment may
/// reach a URL normaliser. A name like `../../x` reaches its own route and is answered as an
/// unknown name there, never another route. Every client of Windlass (the CLI's API calls, the
/// edge's admin client) builds its paths with this.
pub fn segment(text: &str) -> String {
    if !text.is_empty() && text.bytes().all(|b| b == b'.') {
        return "%2E".repeat(text.len());
    }
    encode(text)
}

/// `%XX` escapes decoded; a `%` not followed by two hex digits stays as it is, and bytes that
/// are not UTF-8 become U+FFFD.
pub fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// `%XX` escapes decoded, or `None` when the result is not UTF-8.
pub fn decode_utf8(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text).decode_utf8().ok().map(|text| text.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_characters_stay_and_the_rest_is_encoded_and_decoded_back() {
        assert_eq!(encode("windlass/web:abc"), "windlass%2Fweb%3Aabc");
        assert_eq!(encode(r#"{"label":["a=b"]}"#), "%7B%22label%22%3A%5B%22a%3Db%22%5D%7D");
        assert_eq!(encode("a-b.c_d~e f+é"), "a-b.c_d~e%20f%2B%C3%A9");
        assert_eq!(decode("p%40ss%3Aw%C3%A9rd"), "p@ss:wérd");
        assert_eq!(decode("100%zz%4"), "100%zz%4");
        assert_eq!(decode_utf8("%FF"), None);
        assert_eq!(decode_utf8("%41"), Some("A".into()));
        let text = "s3cr&t/ü %";
        assert_eq!(decode(&encode(text)), text);
    }

    #[test]
    fn a_segment_keeps_slashes_and_dot_segments_inside_it() {
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("."), "%2E");
        assert_eq!(segment("../../x"), "..%2F..%2Fx");
        assert_eq!(segment("a.b"), "a.b");
        assert_eq!(segment("api"), "api");
        assert_eq!(segment(""), "");
        assert_eq!(decode(&segment("..")), "..");
    }
}
