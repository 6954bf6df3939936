//! A reader for `.env` files that keeps where each variable was written, so that a bad value is
//! reported at `file:line:column`.
//!
//! Accepted: `KEY=value`, `export KEY=value`, `# comments`, blank lines, `'single'` quotes
//! (literal), `"double"` quotes (with `\n`, `\"`, `\\` escapes, may span lines), and unquoted values
//! with a trailing ` # comment`.

use std::ops::Range;

use crate::diagnostic::Diagnostic;
use crate::source::Source;

#[derive(Debug, Clone)]
pub struct EnvEntry {
    pub key: String,
    pub value: String,
    pub key_span: Range<usize>,
    pub value_span: Range<usize>,
}

#[derive(Debug, Clone)]
pub struct EnvFile {
    pub source: Source,
    pub entries: Vec<EnvEntry>,
}

impl EnvFile {
    /// Parses the file; problems are returned beside what could be read.
    pub fn parse(source: Source) -> (Self, Vec<Diagnostic>) {
        let mut entries: Vec<EnvEntry> = Vec::new();
        let mut diagnostics = Vec::new();
        let text = source.text();
        let mut offset = 0;
        while offset < text.len() {
            let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
            let line = &text[offset..line_end];
            let trimmed_start = offset + (line.len() - line.trim_start().len());
            let content = line.trim();
            let mut next = line_end + 1;
            if content.is_empty() || content.starts_with('#') {
                offset = next;
                continue;
            }
            let (after_export, key_start) = match content.strip_prefix("export ") {
                Some(rest) => {
                    let rest = rest.trim_start();
                    (rest, trimmed_start + content.len() - rest.len())
                }
                None => (content, trimmed_start),
            };
            let Some(eq) = after_export.find('=') else {
                diagnostics.push(
                    Diagnostic::error("this line is not of the form KEY=value")
                        .at(&source, trimmed_start..trimmed_start + 1)
                        .hide_line(),
                );
                offset = next;
                continue;
            };
            let key = after_export[..eq].trim_end();
            let key_span = key_start..key_start + key.len();
            let valid_key = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_key {
                diagnostics.push(
                    Diagnostic::error(format!("`{key}` is not a valid variable name"))
                        .at(&source, key_span.clone())
                        .expected("letters, digits and `_`, not starting with a digit")
                        .hide_line(),
                );
                offset = next;
                continue;
            }
            let value_start_in_text = key_start + eq + 1;
            let raw_value = &text[value_start_in_text..line_end];
            let leading = raw_value.len() - raw_value.trim_start().len();
            let value_start = value_start_in_text + leading;
            let (value, value_end) = match text[value_start..].chars().next() {
                Some(quote @ ('"' | '\'')) => match read_quoted(&text[value_start + 1..], quote) {
                    Some((value, consumed)) => {
                        let end = value_start + 1 + consumed;
                        next = text[end..].find('\n').map_or(text.len(), |i| end + i) + 1;
                        (value, end)
                    }
                    None => {
                        diagnostics.push(
                            Diagnostic::error(format!("`{key}` has an opening {quote} without a closing one"))
                                .at(&source, value_start..value_start + 1)
                                .hide_line(),
                        );
                        offset = next;
                        continue;
                    }
                },
                _ => {
                    let raw = &text[value_start..line_end];
                    let without_comment = raw.find(" #").map_or(raw, |i| &raw[..i]);
                    let value = without_comment.trim_end();
                    (value.to_owned(), value_start + value.len())
                }
            };
            if let Some(previous) = entries.iter().position(|e| e.key == key) {
                let first = source.position(entries[previous].key_span.start);
                diagnostics.push(
                    Diagnostic::warning(format!(
                        "`{key}` is set twice; the later value wins (first set on line {})",
                        first.line
                    ))
                    .at(&source, key_span.clone())
                    .hide_line(),
                );
                entries.remove(previous);
            }
            entries.push(EnvEntry { key: key.to_owned(), value, key_span, value_span: value_start..value_end });
            offset = next;
        }
        (EnvFile { source, entries }, diagnostics)
    }

    pub fn get(&self, key: &str) -> Option<&EnvEntry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// Reads a quoted value after its opening quote; returns the value and the bytes consumed
/// including the closing quote.
fn read_quoted(text: &str, quote: char) -> Option<(String, usize)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c == quote => return Some((value, i + 1)),
            '\\' if quote == '"' => match chars.next()? {
                (_, 'n') => value.push('\n'),
                (_, 't') => value.push('\t'),
                (_, 'r') => value.push('\r'),
                (_, other) => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (EnvFile, Vec<Diagnostic>) {
        EnvFile::parse(Source::new(".env.test", text))
    }

    #[test]
    fn reads_the_usual_forms() {
        let (file, problems) = parse(
            "# comment\nA=1\nexport B = two words # note\nC=\"quoted # not a comment\\n\"\nD='lit\\eral'\nE=\nF=\"multi\nline\"\nG=after\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let get = |k: &str| file.get(k).map(|e| e.value.clone());
        assert_eq!(get("A").as_deref(), Some("1"));
        assert_eq!(get("B").as_deref(), Some("two words"));
        assert_eq!(get("C").as_deref(), Some("quoted # not a comment\n"));
        assert_eq!(get("D").as_deref(), Some("lit\\eral"));
        assert_eq!(get("E").as_deref(), Some(""));
        assert_eq!(get("F").as_deref(), Some("multi\nline"));
        assert_eq!(get("G").as_deref(), Some("after"));
        let b = file.get("B").unwrap();
        assert_eq!(file.source.position(b.key_span.start).line, 3);
        assert_eq!(&file.source.text()[b.value_span.clone()], "two words");
    }

    #[test]
    fn bad_lines_are_reported_without_their_content() {
        let (file, problems) = parse("GOOD=1\nsecret-without-equals\n9BAD=x\nQ=\"open\n");
        assert_eq!(file.entries.len(), 1);
        assert_eq!(problems.len(), 3);
        for problem in &problems {
            assert!(problem.hide_line);
            assert!(!problem.render().contains("secret-without-equals"));
        }
    }

    #[test]
    fn a_repeated_key_warns_and_the_last_wins() {
        let (file, problems) = parse("A=1\nA=2\n");
        assert_eq!(file.get("A").map(|e| e.value.as_str()), Some("2"));
        assert_eq!(problems.len(), 1);
        assert!(!problems[0].is_error());
    }
}
