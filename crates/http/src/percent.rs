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
}
