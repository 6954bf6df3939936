//! A file's text and the mapping from byte offsets to `line:column`, so that every problem can be
//! reported where the user will look for it.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The text of one file (a `windlass.toml` or an env file) and where it came from.
#[derive(Debug, Clone)]
pub struct Source {
    inner: Arc<SourceInner>,
}

#[derive(Debug)]
struct SourceInner {
    path: PathBuf,
    text: String,
    line_starts: Vec<usize>,
}

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Source {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        let text = text.into();
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { inner: Arc::new(SourceInner { path: path.into(), text, line_starts }) }
    }

    /// Reads a file; the error names the path.
    pub fn read(path: &Path) -> Result<Self, crate::ReadError> {
        let bytes = std::fs::read(path).map_err(|source| crate::ReadError::Io { path: path.to_owned(), source })?;
        let text = String::from_utf8(bytes).map_err(|err| crate::ReadError::NotUtf8 {
            path: path.to_owned(),
            offset: err.utf8_error().valid_up_to(),
        })?;
        Ok(Self::new(path, text))
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn text(&self) -> &str {
        &self.inner.text
    }

    /// The position of a byte offset (clamped to the text).
    pub fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.inner.text.len());
        let line_index = match self.inner.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let line_start = self.inner.line_starts[line_index];
        let column = self.inner.text.get(line_start..offset).map_or(1, |s| s.chars().count() + 1);
        Position { line: line_index + 1, column }
    }

    /// The text of a 1-based line, without its line break.
    pub fn line_text(&self, line: usize) -> &str {
        let Some(&start) = self.inner.line_starts.get(line.wrapping_sub(1)) else {
            return "";
        };
        let end = self.inner.line_starts.get(line).map_or(self.inner.text.len(), |&next| next);
        self.inner.text[start..end].trim_end_matches(['\n', '\r'])
    }

    /// The span of the whole line holding `offset`.
    pub fn line_span(&self, offset: usize) -> Range<usize> {
        let line = self.position(offset).line;
        let start = self.inner.line_starts[line - 1];
        start..start + self.line_text(line).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let source = Source::new("x.toml", "a = 1\nnamé = \"é\"\n");
        assert_eq!(source.position(0), Position { line: 1, column: 1 });
        assert_eq!(source.position(6), Position { line: 2, column: 1 });
        // The byte after "namé = " is the opening quote: column 8 in characters.
        let quote = source.text().find('"').unwrap();
        assert_eq!(source.position(quote), Position { line: 2, column: 8 });
        assert_eq!(source.line_text(2), "namé = \"é\"");
        assert_eq!(source.position(source.text().len()), Position { line: 3, column: 1 });
    }
}
