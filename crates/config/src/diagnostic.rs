//! Problems found in a config or an environment, located at `file:line:column`, rendered for a
//! terminal (with the offending line underlined) or as JSON.

use std::fmt::Write as _;
use std::ops::Range;

use crate::source::{Position, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Note,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}

/// One problem, with where it is, what was expected and what was found.
///
/// `found` never holds a secret value: callers that check secrets describe the value instead
/// (see `env_check`).
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub source: Option<Source>,
    pub span: Range<usize>,
    pub expected: Option<String>,
    pub found: Option<String>,
    pub help: Option<String>,
    /// When set, the source line is not shown: env files hold secrets, so their lines are
    /// never echoed, only pointed at.
    pub hide_line: bool,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            message: message.into(),
            source: None,
            span: 0..0,
            expected: None,
            found: None,
            help: None,
            hide_line: false,
        }
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, ..Self::error(message) }
    }

    pub fn note(message: impl Into<String>) -> Self {
        Self { severity: Severity::Note, ..Self::error(message) }
    }

    pub fn at(mut self, source: &Source, span: Range<usize>) -> Self {
        self.source = Some(source.clone());
        self.span = span;
        self
    }

    pub fn hide_line(mut self) -> Self {
        self.hide_line = true;
        self
    }

    pub fn expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = Some(expected.into());
        self
    }

    pub fn found(mut self, found: impl Into<String>) -> Self {
        self.found = Some(found.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    pub fn position(&self) -> Option<Position> {
        self.source.as_ref().map(|s| s.position(self.span.start))
    }

    /// `file:line:column`, or nothing for a problem that has no place in a file.
    pub fn location(&self) -> Option<String> {
        let source = self.source.as_ref()?;
        let pos = source.position(self.span.start);
        Some(format!("{}:{}:{}", source.path().display(), pos.line, pos.column))
    }

    /// Renders the problem as a few lines of text, rustc-style:
    ///
    /// ```text
    /// error: unknown key `instnces` in [services.api]
    ///   --> windlass.toml:12:1
    ///    |
    /// 12 | instnces = 2
    ///    | ^^^^^^^^
    ///    = expected: one of ...
    ///    = help: did you mean `instances`?
    /// ```
    pub fn render(&self) -> String {
        let mut out = format!("{}: {}\n", self.severity.label(), self.message);
        let mut gutter = 1;
        if let (Some(source), Some(location)) = (&self.source, self.location()) {
            let pos = source.position(self.span.start);
            let number = pos.line.to_string();
            gutter = number.len();
            let pad = " ".repeat(gutter);
            let _ = writeln!(out, "{pad}--> {location}");
            if !self.hide_line {
                let line = source.line_text(pos.line);
                let _ = writeln!(out, "{pad} |\n{number} | {line}");
                let underline_len = underline_length(source, &self.span, line, pos.column);
                let _ = writeln!(out, "{pad} | {}{}", " ".repeat(pos.column - 1), "^".repeat(underline_len));
            }
        }
        let pad = " ".repeat(gutter);
        for (label, text) in [("expected", &self.expected), ("found", &self.found), ("help", &self.help)] {
            if let Some(text) = text {
                let _ = writeln!(out, "{pad} = {label}: {text}");
            }
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        let pos = self.position();
        serde_json::json!({
            "severity": self.severity,
            "message": self.message,
            "file": self.source.as_ref().map(|s| s.path().display().to_string()),
            "line": pos.map(|p| p.line),
            "column": pos.map(|p| p.column),
            "expected": self.expected,
            "found": self.found,
            "help": self.help,
        })
    }
}

/// Underlines the span on its first line, at least one character.
fn underline_length(source: &Source, span: &Range<usize>, line: &str, column: usize) -> usize {
    let rest_of_line = line.chars().count().saturating_sub(column - 1);
    let span_chars = source.text().get(span.clone()).map_or(1, |s| s.lines().next().unwrap_or("").chars().count());
    span_chars.clamp(1, rest_of_line.max(1))
}

/// Orders problems by file and place, errors before warnings at the same place.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        let file = |d: &Diagnostic| d.source.as_ref().map(|s| s.path().to_owned());
        (file(a), a.position(), a.severity).cmp(&(file(b), b.position(), b.severity))
    });
}
