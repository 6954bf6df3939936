//! The machinery that turns the parsed TOML tree into the typed model while collecting *every*
//! problem, instead of stopping at the first one as serde would.
//!
//! Each model type reads its table through [`Table`], which records the keys it asked for; what is
//! left over is an unknown key, reported with a "did you mean" suggestion drawn from the keys the
//! type knows. A value of the wrong shape is reported with what was expected and what was found,
//! and decoding goes on with the next field.

use std::collections::BTreeSet;
use std::ops::{Deref, Range};

use indexmap::IndexMap;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::Diagnostic;
use crate::source::Source;
use crate::units::{ByteSize, Duration, Percent, Rate};

pub(crate) type Value<'i> = toml::Spanned<DeValue<'i>>;

/// A value together with where it was written, for checks that run after decoding
/// (a `depends_on` naming a missing service is reported at the name, not at the service).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Range<usize>,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Range<usize>) -> Self {
        Self { value, span }
    }
}

impl<T> Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Where a value sits: its dotted path for messages (`services.api.instances`) and its schema path
/// for documentation checks (`services.<service>.instances`).
#[derive(Debug, Clone, Default)]
pub(crate) struct At {
    pub path: String,
    pub schema: String,
}

impl At {
    pub fn key(&self, key: &str) -> At {
        At { path: join(&self.path, key), schema: join(&self.schema, key) }
    }

    /// An entry of a table whose keys are names the user chooses (`services.api`).
    pub fn entry(&self, key: &str, placeholder: &str) -> At {
        At { path: join(&self.path, &quote_key(key)), schema: join(&self.schema, placeholder) }
    }

    pub fn index(&self, index: usize) -> At {
        At { path: format!("{}[{index}]", self.path), schema: format!("{}[]", self.schema) }
    }

    /// How the table is named in a message: `[services.api]`, or "the top level".
    pub fn table_name(&self) -> String {
        if self.path.is_empty() { "the top level".into() } else { format!("[{}]", self.path) }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn quote_key(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// Decoding context: the source and every problem found so far.
pub(crate) struct Cx<'s> {
    pub source: &'s Source,
    pub diagnostics: Vec<Diagnostic>,
    /// Every schema path a decoder asked for (used to check that `docs/config.md` is complete).
    pub schema_paths: BTreeSet<String>,
    /// `${VAR}` references, checked against `[env]` once everything is decoded.
    pub var_refs: Vec<Spanned<String>>,
    /// `{ secret = "NAME" }` references, checked against `[env]` likewise.
    pub secret_refs: Vec<Spanned<String>>,
    /// `${VAR}` references in a service's `run`, where no secret may go (argv is public).
    pub run_refs: Vec<Spanned<String>>,
}

impl<'s> Cx<'s> {
    pub fn new(source: &'s Source) -> Self {
        Self {
            source,
            diagnostics: Vec::new(),
            schema_paths: BTreeSet::new(),
            var_refs: Vec::new(),
            secret_refs: Vec::new(),
            run_refs: Vec::new(),
        }
    }

    /// Records an error at `span` and returns it for the caller to add details.
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) -> &mut Diagnostic {
        let diagnostic = Diagnostic::error(message).at(self.source, span);
        self.push(diagnostic)
    }

    pub fn warning(&mut self, span: Range<usize>, message: impl Into<String>) -> &mut Diagnostic {
        let diagnostic = Diagnostic::warning(message).at(self.source, span);
        self.push(diagnostic)
    }

    fn push(&mut self, diagnostic: Diagnostic) -> &mut Diagnostic {
        self.diagnostics.push(diagnostic);
        let last = self.diagnostics.len() - 1;
        &mut self.diagnostics[last]
    }

    /// Reports a value of the wrong type.
    pub fn wrong_type(&mut self, value: &Value, at: &At, expected: &str) {
        let diagnostic = Diagnostic::error(format!("wrong type for `{}`", at.path))
            .at(self.source, value.span())
            .expected(expected)
            .found(describe(value.get_ref()));
        self.push(diagnostic);
    }

    /// Reports a value that has the right type but is not allowed.
    pub fn invalid(&mut self, value: &Value, at: &At, expected: &str, problem: impl Into<String>) {
        let found = describe(value.get_ref());
        let diagnostic = Diagnostic::error(format!("invalid value for `{}`: {}", at.path, problem.into()))
            .at(self.source, value.span())
            .expected(expected)
            .found(found);
        self.push(diagnostic);
    }
}

/// How a value is described in "found": its type and, for scalars, the value itself.
pub(crate) fn describe(value: &DeValue) -> String {
    match value {
        DeValue::String(s) => format!("the string {s:?}"),
        DeValue::Integer(i) => format!("the integer {}", i.as_str()),
        DeValue::Float(f) => format!("the float {}", f.as_str()),
        DeValue::Boolean(b) => format!("the boolean {b}"),
        DeValue::Datetime(d) => format!("the datetime {d}"),
        DeValue::Array(a) => format!("an array of {} item{}", a.len(), if a.len() == 1 { "" } else { "s" }),
        DeValue::Table(_) => "a table".into(),
    }
}

/// The best "did you mean" among `candidates`, if one is close enough to `word`.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(word, candidate), candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// Reads one TOML table: hands out values by key and reports the keys nobody asked for.
pub(crate) struct Table<'a, 'i> {
    entries: &'a DeTable<'i>,
    span: Range<usize>,
    at: At,
    asked: Vec<&'static str>,
}

impl<'a, 'i> Table<'a, 'i> {
    /// Opens `value` as a table, or reports that it is not one.
    pub fn open(cx: &mut Cx, value: &'a Value<'i>, at: &At) -> Option<Self> {
        match value.get_ref() {
            DeValue::Table(entries) => Some(Self { entries, span: value.span(), at: at.clone(), asked: Vec::new() }),
            _ => {
                cx.wrong_type(value, at, "a table");
                None
            }
        }
    }

    pub fn at(&self) -> &At {
        &self.at
    }

    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// The raw value at `key`, marking the key as known.
    pub fn get(&mut self, cx: &mut Cx, key: &'static str) -> Option<&'a Value<'i>> {
        self.asked.push(key);
        cx.schema_paths.insert(self.at.key(key).schema);
        self.entries.get(key)
    }

    pub fn optional<T: Decode>(&mut self, cx: &mut Cx, key: &'static str) -> Option<T> {
        let value = self.get(cx, key)?;
        T::decode(cx, value, &self.at.key(key))
    }

    pub fn or<T: Decode>(&mut self, cx: &mut Cx, key: &'static str, default: T) -> T {
        self.optional(cx, key).unwrap_or(default)
    }

    /// A key that must be present; its absence is reported at the table.
    pub fn required<T: Decode>(&mut self, cx: &mut Cx, key: &'static str) -> Option<T> {
        match self.get(cx, key) {
            Some(value) => T::decode(cx, value, &self.at.key(key)),
            None => {
                let span = self.header_span(cx);
                cx.error(span, format!("missing key `{key}` in {}", self.at.table_name())).expected =
                    Some(format!("`{key}` = {}", T::expected()));
                None
            }
        }
    }

    /// Where to point at the table itself: the start of its first line.
    fn header_span(&self, cx: &Cx) -> Range<usize> {
        let line = cx.source.line_span(self.span.start);
        line.start..line.end.max(line.start + 1).min(self.span.end.max(line.start + 1))
    }

    /// Iterates the entries of a table whose keys are chosen by the user.
    pub fn entries(&self) -> impl Iterator<Item = (&'a toml::Spanned<std::borrow::Cow<'i, str>>, &'a Value<'i>)> {
        self.entries.iter()
    }

    /// Reports every key that no decoder asked for.
    pub fn finish(self, cx: &mut Cx) {
        for (key, _) in self.entries.iter() {
            let name: &str = key.get_ref();
            if self.asked.contains(&name) {
                continue;
            }
            let diagnostic = cx.error(key.span(), format!("unknown key `{name}` in {}", self.at.table_name()));
            diagnostic.expected =
                Some(format!("one of {}", self.asked.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")));
            if let Some(suggestion) = did_you_mean(name, self.asked.iter().copied()) {
                diagnostic.help = Some(format!("did you mean `{suggestion}`?"));
            }
        }
    }
}

/// A type that can be read from a TOML value.
pub(crate) trait Decode: Sized {
    /// What a valid value looks like, for messages.
    fn expected() -> String;
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self>;
}

impl Decode for String {
    fn expected() -> String {
        "a string".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                cx.wrong_type(value, at, &Self::expected());
                None
            }
        }
    }
}

impl Decode for bool {
    fn expected() -> String {
        "true or false".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                cx.wrong_type(value, at, &Self::expected());
                None
            }
        }
    }
}

/// Reads a whole number within `range`.
pub(crate) fn integer_in(cx: &mut Cx, value: &Value, at: &At, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    let expected = format!("a whole number from {} to {}", range.start(), range.end());
    let DeValue::Integer(integer) = value.get_ref() else {
        cx.wrong_type(value, at, &expected);
        return None;
    };
    match i64::from_str_radix(integer.as_str(), integer.radix()) {
        Ok(n) if range.contains(&n) => Some(n),
        _ => {
            cx.invalid(value, at, &expected, "out of range");
            None
        }
    }
}

macro_rules! decode_integer {
    ($($ty:ty),*) => {$(
        impl Decode for $ty {
            fn expected() -> String {
                format!("a whole number from {} to {}", <$ty>::MIN, <$ty>::MAX)
            }
            fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
                integer_in(cx, value, at, i64::from(<$ty>::MIN)..=i64::from(<$ty>::MAX))
                    .and_then(|n| <$ty>::try_from(n).ok())
            }
        }
    )*};
}
decode_integer!(u8, u16, u32);

/// Values written as strings with a unit (`"500ms"`), parsed by the type's own `parse`.
macro_rules! decode_parsed_string {
    ($($ty:ty => $expected:literal),* $(,)?) => {$(
        impl Decode for $ty {
            fn expected() -> String {
                $expected.into()
            }
            fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
                let DeValue::String(text) = value.get_ref() else {
                    cx.wrong_type(value, at, $expected);
                    return None;
                };
                match <$ty>::parse(text) {
                    Ok(parsed) => Some(parsed),
                    Err(problem) => {
                        cx.invalid(value, at, $expected, problem);
                        None
                    }
                }
            }
        }
    )*};
}
decode_parsed_string! {
    Duration => "a duration such as \"500ms\", \"30s\" or \"5m\"",
    Percent => "a percentage such as \"99.9%\"",
    ByteSize => "a size such as \"64KiB\"",
    Rate => "a rate such as \"100/s\"",
}

impl<T: Decode> Decode for Spanned<T> {
    fn expected() -> String {
        T::expected()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        T::decode(cx, value, at).map(|decoded| Spanned::new(decoded, value.span()))
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn expected() -> String {
        match T::expected().as_str() {
            "a string" => "an array of strings".into(),
            item => format!("an array, each item {item}"),
        }
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let DeValue::Array(items) = value.get_ref() else {
            cx.wrong_type(value, at, &Self::expected());
            return None;
        };
        // Every item is decoded, so that all bad items are reported, not just the first.
        let decoded: Vec<Option<T>> =
            items.iter().enumerate().map(|(i, item)| T::decode(cx, item, &at.index(i))).collect();
        decoded.into_iter().collect()
    }
}

/// Reads a table whose keys the user names (`[services.<service>]`), decoding each entry with
/// `decode_entry`. Entries that fail to decode are left out (their problems are reported).
pub(crate) fn named_entries<T>(
    cx: &mut Cx,
    value: &Value,
    at: &At,
    placeholder: &str,
    mut decode_entry: impl FnMut(&mut Cx, Spanned<String>, &Value, &At) -> Option<T>,
) -> IndexMap<String, T> {
    let mut out = IndexMap::new();
    let Some(table) = Table::open(cx, value, at) else {
        return out;
    };
    for (key, entry) in table.entries() {
        let name = Spanned::new(key.get_ref().to_string(), key.span());
        let entry_at = at.entry(&name.value, placeholder);
        if let Some(decoded) = decode_entry(cx, name.clone(), entry, &entry_at) {
            out.insert(name.value, decoded);
        }
    }
    // Record the placeholder path itself even when the table is empty.
    cx.schema_paths.insert(at.entry("", placeholder).schema);
    out
}

/// Reads a string that must be one of a few words, suggesting the nearest on a typo.
pub(crate) fn one_of<T: Copy>(cx: &mut Cx, value: &Value, at: &At, choices: &[(&'static str, T)]) -> Option<T> {
    let expected = format!("one of {}", choices.iter().map(|(w, _)| format!("\"{w}\"")).collect::<Vec<_>>().join(", "));
    let DeValue::String(word) = value.get_ref() else {
        cx.wrong_type(value, at, &expected);
        return None;
    };
    if let Some((_, choice)) = choices.iter().find(|(w, _)| *w == word.as_ref()) {
        return Some(*choice);
    }
    let suggestion = did_you_mean(word, choices.iter().map(|(w, _)| *w));
    cx.invalid(value, at, &expected, format!("`{word}` is not known"));
    if let (Some(suggestion), Some(last)) = (suggestion, cx.diagnostics.last_mut()) {
        last.help = Some(format!("did you mean \"{suggestion}\"?"));
    }
    None
}
