//! The Prometheus text exposition format (version 0.0.4), as `/metrics` pages serve it:
//! `# HELP` / `# TYPE` and other comments, samples `name{label="value",...} value [timestamp]`
//! with `\\`, `\"` and `\n` escapes in label values, and the values `+Inf`, `-Inf` and `NaN`.

/// One sample of a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Milliseconds since the epoch, when the page gave one.
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A line that is not valid exposition format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of the metrics page: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Parses a whole page; the first bad line fails it (as a Prometheus scrape would).
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r').trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|message| ParseError { line: index + 1, message })?;
        samples.push(sample);
    }
    Ok(samples)
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_len = line.char_indices().find(|&(i, c)| !is_name_char(c, i == 0)).map_or(line.len(), |(i, _)| i);
    if name_len == 0 {
        return Err(format!("`{}` does not start with a metric name", shorten(line)));
    }
    let name = line[..name_len].to_owned();
    let mut rest = &line[name_len..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value_text = fields.next().ok_or_else(|| format!("`{name}` has no value"))?;
    let value = parse_value(value_text).ok_or_else(|| format!("`{value_text}` is not a sample value of `{name}`"))?;
    let timestamp_ms = match fields.next() {
        Some(stamp) => Some(stamp.parse::<i64>().map_err(|_| format!("`{stamp}` is not a timestamp of `{name}`"))?),
        None => None,
    };
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected `{extra}` after the sample of `{name}`"));
    }
    Ok(Sample { name, labels, value, timestamp_ms })
}

/// Reads `label="value",...}` and returns what follows the closing brace.
fn parse_labels<'a>(mut rest: &'a str, labels: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let len =
            rest.char_indices().find(|&(i, c)| !is_name_char(c, i == 0) || c == ':').map_or(rest.len(), |(i, _)| i);
        if len == 0 {
            return Err(format!("expected a label name at `{}`", shorten(rest)));
        }
        let label = rest[..len].to_owned();
        rest = rest[len..].trim_start();
        rest = rest.strip_prefix('=').ok_or_else(|| format!("expected `=` after the label `{label}`"))?.trim_start();
        rest = rest.strip_prefix('"').ok_or_else(|| format!("the value of label `{label}` is not quoted"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i + 1,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, other)) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => return Err(format!("the value of label `{label}` is not closed")),
                },
                Some((_, c)) => value.push(c),
                None => return Err(format!("the value of label `{label}` is not closed")),
            }
        };
        labels.push((label, value));
        rest = rest[end..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!("expected `,` or `}}` at `{}`", shorten(rest)));
        }
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => text.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_page_with_comments_labels_escapes_and_special_values() {
        let page = "# HELP http_requests_total The total.\n\
                    # TYPE http_requests_total counter\n\
                    http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
                    http_requests_total{method=\"post\",code=\"400\"}    3 1395066363000\n\
                    \n\
                    # A free comment\n\
                    msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n\
                    metric_without_timestamp_and_labels 12.47\n\
                    something_weird{problem=\"division by zero\"} +Inf -3982045\n\
                    http_request_duration_seconds_bucket{le=\"+Inf\",} 144320\n\
                    rpc_duration_seconds{quantile=\"0.5\"} NaN\r\n\
                    go_gc{} -Inf\n";
        let samples = parse(page).unwrap();
        assert_eq!(samples.len(), 8);
        assert_eq!(samples[0].name, "http_requests_total");
        assert_eq!(samples[0].labels, vec![("method".into(), "post".into()), ("code".into(), "200".into())]);
        assert_eq!((samples[0].value, samples[0].timestamp_ms), (1027.0, Some(1_395_066_363_000)));
        assert_eq!(samples[1].value, 3.0);
        assert_eq!(samples[2].label("path"), Some("C:\\DIR\\FILE.TXT"));
        assert_eq!(samples[2].label("error"), Some("Cannot find file:\n\"FILE.TXT\""));
        assert_eq!(samples[2].value, 1.458255915e9);
        assert_eq!((samples[3].labels.len(), samples[3].value, samples[3].timestamp_ms), (0, 12.47, None));
        assert_eq!((samples[4].value, samples[4].timestamp_ms), (f64::INFINITY, Some(-3_982_045)));
        assert_eq!(samples[5].label("le"), Some("+Inf"), "a trailing comma is allowed");
        assert!(samples[6].value.is_nan());
        assert_eq!(samples[7].value, f64::NEG_INFINITY);
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let err = parse("ok 1\nbad{x=\"1\" 2\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("expected `,` or `}`"), "{err}");
        assert!(parse("x{a=1} 2").unwrap_err().message.contains("not quoted"));
        assert!(parse("x{a=\"1} 2").unwrap_err().message.contains("not closed"));
        assert!(parse("x one").unwrap_err().message.contains("`one` is not a sample value"));
        assert!(parse("x 1 soon").unwrap_err().message.contains("not a timestamp"));
        assert!(parse("x").unwrap_err().message.contains("has no value"));
        assert!(parse("9x 1").unwrap_err().message.contains("does not start with a metric name"));
        assert_eq!(parse("# only comments\n\n").unwrap(), vec![]);
    }
}
