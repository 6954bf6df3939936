//! The expiry of an X.509 certificate, read by walking its DER just far enough:
//! `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
//! signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... }` (RFC 5280 §4.1).

use jiff::Timestamp;
use jiff::civil::DateTime;

/// Why a certificate's expiry cannot be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertError {
    #[error("the certificate ends early")]
    EndsEarly,
    #[error("the certificate has a bad length")]
    BadLength,
    #[error("{0}")]
    Structure(&'static str),
    #[error("notAfter is not text")]
    NotText,
    #[error("notAfter `{0}` is not in UTC")]
    NotUtc(String),
    #[error("notAfter `{0}` has an unexpected form")]
    UnexpectedForm(String),
    #[error("bad notAfter `{0}`")]
    BadDigits(String),
    #[error("bad notAfter `{text}`: {source}")]
    BadTime { text: String, source: jiff::Error },
}

/// One DER element: its tag, its contents, and what follows it.
fn element(input: &[u8]) -> Result<(u8, &[u8], &[u8]), CertError> {
    let (&tag, rest) = input.split_first().ok_or(CertError::EndsEarly)?;
    let (&first, rest) = rest.split_first().ok_or(CertError::EndsEarly)?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(CertError::BadLength);
        }
        let length = rest[..count].iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
        (length, &rest[count..])
    };
    if rest.len() < length {
        return Err(CertError::EndsEarly);
    }
    Ok((tag, &rest[..length], &rest[length..]))
}

const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION: u8 = 0xa0;

/// The `notAfter` of a DER certificate.
pub fn not_after(der: &[u8]) -> Result<Timestamp, CertError> {
    let (tag, certificate, _) = element(der)?;
    if tag != SEQUENCE {
        return Err(CertError::Structure("not a DER certificate"));
    }
    let (tag, tbs, _) = element(certificate)?;
    if tag != SEQUENCE {
        return Err(CertError::Structure("the certificate has no tbsCertificate"));
    }
    let mut rest = tbs;
    let (tag, _, after) = element(rest)?;
    if tag == VERSION {
        rest = after;
    }
    // serialNumber, signature, issuer
    for _ in 0..3 {
        rest = element(rest)?.2;
    }
    let (tag, validity, _) = element(rest)?;
    if tag != SEQUENCE {
        return Err(CertError::Structure("the certificate has no validity"));
    }
    let (_, _, after_not_before) = element(validity)?;
    let (tag, time, _) = element(after_not_before)?;
    let text = std::str::from_utf8(time).map_err(|_| CertError::NotText)?;
    parse_time(tag, text)
}

/// UTCTime `YYMMDDHHMMSSZ` (years 1950..2049) or GeneralizedTime `YYYYMMDDHHMMSSZ`.
fn parse_time(tag: u8, text: &str) -> Result<Timestamp, CertError> {
    let digits = text.strip_suffix('Z').ok_or_else(|| CertError::NotUtc(text.to_owned()))?;
    let full = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let year: u32 = digits[..2].parse().map_err(|_| CertError::BadDigits(text.to_owned()))?;
            format!("{}{digits}", if year >= 50 { "19" } else { "20" })
        }
        (GENERALIZED_TIME, 14) => digits.to_owned(),
        _ => return Err(CertError::UnexpectedForm(text.to_owned())),
    };
    if !full.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CertError::BadDigits(text.to_owned()));
    }
    let number = |range: std::ops::Range<usize>| full[range].parse::<i16>().unwrap_or(-1);
    let datetime = DateTime::new(
        number(0..4),
        number(4..6) as i8,
        number(6..8) as i8,
        number(8..10) as i8,
        number(10..12) as i8,
        number(12..14) as i8,
        0,
    )
    .map_err(|source| CertError::BadTime { text: text.to_owned(), source })?;
    datetime
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp())
        .map_err(|source| CertError::BadTime { text: text.to_owned(), source })
}

/// Whole days from `now` until `not_after` (negative once expired).
pub fn days_left(not_after: Timestamp, now: Timestamp) -> i64 {
    not_after.duration_since(now).as_secs().div_euclid(86_400)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn times_and_days() {
        assert_eq!(parse_time(UTC_TIME, "491231235959Z").unwrap().to_string(), "2049-12-31T23:59:59Z");
        assert_eq!(parse_time(UTC_TIME, "500101000000Z").unwrap().to_string(), "1950-01-01T00:00:00Z");
        assert_eq!(parse_time(GENERALIZED_TIME, "20610101120000Z").unwrap().to_string(), "2061-01-01T12:00:00Z");
        assert!(parse_time(UTC_TIME, "4912312359Z").is_err());
        assert!(parse_time(UTC_TIME, "491231235959+0100").is_err());
        let end: Timestamp = "2030-01-10T00:00:00Z".parse().unwrap();
        assert_eq!(days_left(end, "2030-01-04T23:00:00Z".parse().unwrap()), 5);
        assert_eq!(days_left(end, "2030-01-10T00:00:01Z".parse().unwrap()), -1);
        assert!(not_after(&[0x30, 0x05, 0x01]).is_err());
        assert!(not_after(b"").is_err());
    }
}
