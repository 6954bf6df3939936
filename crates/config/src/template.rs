//! Strings that may reference variables (`"postgres://${DB_HOST}/maily"`) and settings that may
//! instead name a secret (`{ secret = "STRIPE_KEY" }`). References are checked against `[env]`
//! when the config is validated and resolved only when a value is used.

use std::collections::BTreeMap;

use toml::de::DeValue;

use crate::decode::{At, Cx, Decode, Spanned, Table, Value};

/// Variables that Windlass itself provides to every command and service, so `${PORT}` needs no
/// declaration in `[env]`.
pub const BUILTIN_VARS: [&str; 7] = [
    "PORT",
    "WINDLASS_ENV",
    "WINDLASS_SERVICE",
    "WINDLASS_INSTANCE",
    "WINDLASS_COLOR",
    "WINDLASS_DEPLOY_ID",
    "WINDLASS_VERSION",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Var(String),
}

/// Why a template could not be read or filled in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`${{` without a closing `}}`")]
    Unclosed,
    #[error("`${{{name}}}` is not a variable reference (names use letters, digits and `_`)")]
    NotAReference { name: String },
    #[error("variable `{name}` is not set")]
    Unset { name: String },
}

/// For callers that still carry errors as text (their messages are unchanged).
impl From<TemplateError> for String {
    fn from(error: TemplateError) -> Self {
        error.to_string()
    }
}

/// A string with `${NAME}` references; `$${` writes a literal `${`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub raw: String,
    pub pieces: Vec<Piece>,
}

impl Template {
    pub fn parse(raw: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = raw;
        while let Some(i) = rest.find('$') {
            text.push_str(&rest[..i]);
            rest = &rest[i..];
            if let Some(after) = rest.strip_prefix("$${") {
                text.push_str("${");
                rest = after;
            } else if let Some(after) = rest.strip_prefix("${") {
                // The text is not quoted: it may be a secret URL (the error points at where it is).
                let end = after.find('}').ok_or(TemplateError::Unclosed)?;
                let name = &after[..end];
                let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(TemplateError::NotAReference { name: name.to_owned() });
                }
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Var(name.to_owned()));
                rest = &after[end + 1..];
            } else {
                // A lone `$` (such as shell's `$PORT`) is left for the shell.
                text.push('$');
                rest = &rest[1..];
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template { raw: raw.to_owned(), pieces })
    }

    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(name) => Some(name.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// `${name}` alone: renders to the variable's value.
    pub fn variable(name: &str) -> Self {
        Template { raw: format!("${{{name}}}"), pieces: vec![Piece::Var(name.to_owned())] }
    }

    /// Fills in the references; a variable `lookup` does not know is an error naming it.
    pub fn render(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<String, TemplateError> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Var(name) => {
                    out.push_str(&lookup(name).ok_or_else(|| TemplateError::Unset { name: name.clone() })?)
                }
            }
        }
        Ok(out)
    }
}

impl Decode for Template {
    fn expected() -> String {
        "a string (may reference variables as ${NAME})".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let raw = String::decode(cx, value, at)?;
        match Template::parse(&raw) {
            Ok(template) => {
                for var in template.vars() {
                    cx.var_refs.push(Spanned::new(var.to_owned(), value.span()));
                }
                Some(template)
            }
            Err(problem) => {
                // Not quoted, nor its line shown: a template is often a URL with a secret in it.
                let diagnostic = cx.error(value.span(), format!("invalid value for `{}`: {problem}", at.path));
                diagnostic.expected = Some(Self::expected());
                diagnostic.hide_line = true;
                None
            }
        }
    }
}

/// A shell command (custom steps, `undo`, `[database] migrate`, command probes) with `${NAME}`
/// references. It is never rendered as text: the variables reach the command as environment
/// variables of its `sh`, which expands `${NAME}` itself, so a value is data and never shell
/// code. [`script`](Self::script) is the text `sh -c` gets.
///
/// The template language maps onto sh's: `${NAME}` stays `${NAME}`; `$${` (a literal `${`)
/// becomes `${`, for the shell to expand as before; a reference inside single quotes (where sh
/// expands nothing) is spliced out of them (`'a ${X} b'` becomes `'a '"${X}"' b'`), so it still
/// gives the variable's value, literally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTemplate {
    pub raw: String,
    pieces: Vec<Piece>,
    script: String,
}

/// A `${NAME}` reference of a string (the `index`-th one). [`CommandTemplate::parse`] returns
/// those `validate` warns about, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub name: String,
    /// Which reference of the command it is, from 0.
    pub index: usize,
    pub concern: Concern,
}

/// Why a reference in a command deserves a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concern {
    /// Outside double quotes and not an assignment's value: sh splits it into words and globs.
    Unquoted,
    /// After a backslash (`\${NAME}`): sh prints `${NAME}` as it is.
    Escaped,
    /// In a here-document with a quoted delimiter (`<<'EOF'`): sh expands nothing there.
    QuotedHeredoc,
}

/// A here-document announced by `<<WORD` (`<<-WORD` strips leading tabs).
#[derive(Debug, Clone)]
struct Heredoc {
    delimiter: String,
    quoted: bool,
    strip_tabs: bool,
}

/// Where the shell is while reading a command, innermost last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    Single,
    Double,
    Backtick,
    /// `$( ... )`, with the depth of plain parentheses inside it.
    Subshell(u32),
}

/// What a reference is, by where it stands in the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    SingleQuoted,
    DoubleQuoted,
    /// Unquoted; `true` when it is part of an assignment's value (`X=${Y}`: no splitting).
    Unquoted(bool),
    /// In a here-document's body; `true` when its delimiter was quoted (nothing expands).
    Heredoc(bool),
}

/// A small reader of sh's quoting, enough to know what quotes a reference stands in.
#[derive(Debug, Default)]
struct Lexer {
    stack: Vec<Quote>,
    escaped: bool,
    comment: bool,
    /// The unquoted word read so far at the top level (for assignments).
    word: String,
    /// Here-documents announced on the current line, whose bodies follow it in order.
    pending: std::collections::VecDeque<Heredoc>,
    /// The delimiter being read after `<<`.
    delimiter: Option<Heredoc>,
    /// The here-document whose body is being read, and its current line.
    body: Option<Heredoc>,
    line: String,
}

impl Lexer {
    fn feed(&mut self, text: &str) {
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if let Some(body) = &self.body {
                if c == '\n' {
                    let line = if body.strip_tabs { self.line.trim_start_matches('\t') } else { &self.line };
                    if line == body.delimiter {
                        self.body = self.pending.pop_front();
                    }
                    self.line.clear();
                } else {
                    self.line.push(c);
                }
                continue;
            }
            if let Some(delimiter) = &mut self.delimiter {
                match c {
                    ' ' | '\t' if delimiter.delimiter.is_empty() && !delimiter.quoted => continue,
                    '\'' | '"' | '\\' => {
                        delimiter.quoted = true;
                        continue;
                    }
                    c if !(c.is_whitespace() || matches!(c, ';' | '&' | '|' | '<' | '>' | '(' | ')')) => {
                        delimiter.delimiter.push(c);
                        continue;
                    }
                    _ => {
                        if let Some(done) = self.delimiter.take() {
                            self.pending.push_back(done);
                        }
                    }
                }
            }
            if self.comment {
                if c == '\n' {
                    self.comment = false;
                    self.word.clear();
                    self.body = self.pending.pop_front();
                }
                continue;
            }
            if self.escaped {
                self.escaped = false;
                self.word.push(c);
                continue;
            }
            match self.stack.last().copied() {
                Some(Quote::Single) => {
                    if c == '\'' {
                        self.stack.pop();
                    }
                    self.word.push(c);
                }
                Some(Quote::Double) => match c {
                    '\\' => self.escaped = true,
                    '"' => {
                        self.stack.pop();
                    }
                    '`' => self.stack.push(Quote::Backtick),
                    '$' if chars.peek() == Some(&'(') => {
                        chars.next();
                        self.stack.push(Quote::Subshell(0));
                    }
                    _ => self.word.push(c),
                },
                Some(Quote::Backtick) => match c {
                    '\\' => self.escaped = true,
                    '`' => {
                        self.stack.pop();
                    }
                    '\'' => self.stack.push(Quote::Single),
                    '"' => self.stack.push(Quote::Double),
                    _ => {}
                },
                top @ (None | Some(Quote::Subshell(_))) => match c {
                    '\\' => self.escaped = true,
                    '\'' => {
                        self.stack.push(Quote::Single);
                        self.word.push(c);
                    }
                    '"' => {
                        self.stack.push(Quote::Double);
                        self.word.push(c);
                    }
                    '`' => self.stack.push(Quote::Backtick),
                    '#' if self.word.is_empty() => self.comment = true,
                    '$' if chars.peek() == Some(&'(') => {
                        chars.next();
                        self.stack.push(Quote::Subshell(0));
                    }
                    '(' => {
                        if let Some(Quote::Subshell(depth)) = self.stack.last_mut() {
                            *depth += 1;
                        }
                        self.word.clear();
                    }
                    ')' => {
                        match top {
                            Some(Quote::Subshell(0)) => {
                                self.stack.pop();
                            }
                            Some(Quote::Subshell(_)) => {
                                if let Some(Quote::Subshell(depth)) = self.stack.last_mut() {
                                    *depth -= 1;
                                }
                            }
                            _ => {}
                        }
                        self.word.clear();
                    }
                    '<' if chars.peek() == Some(&'<') => {
                        chars.next();
                        if chars.peek() == Some(&'<') {
                            chars.next();
                        } else {
                            let strip_tabs = chars.next_if_eq(&'-').is_some();
                            self.delimiter = Some(Heredoc { delimiter: String::new(), quoted: false, strip_tabs });
                        }
                        self.word.clear();
                    }
                    '\n' => {
                        self.word.clear();
                        self.body = self.pending.pop_front();
                    }
                    c if c.is_whitespace() || matches!(c, ';' | '&' | '|' | '<' | '>') => self.word.clear(),
                    _ => self.word.push(c),
                },
            }
        }
    }

    /// After a reference: it is part of the word (or line) being read.
    fn after_reference(&mut self) {
        self.escaped = false;
        self.word.push('x');
        if self.body.is_some() {
            self.line.push('x');
        }
    }

    fn context(&self) -> Context {
        if let Some(body) = &self.body {
            return Context::Heredoc(body.quoted);
        }
        match self.stack.last() {
            Some(Quote::Single) => Context::SingleQuoted,
            Some(Quote::Double) => Context::DoubleQuoted,
            _ => {
                let assignment = self.word.split_once('=').is_some_and(|(name, _)| {
                    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
                Context::Unquoted(assignment)
            }
        }
    }
}

impl CommandTemplate {
    /// Parses a command; the references sh would split (unquoted) or not expand (after a
    /// backslash, in a quoted here-document) are returned for `validate` to warn about.
    pub fn parse(raw: &str) -> Result<(Self, Vec<Reference>), TemplateError> {
        let template = Template::parse(raw)?;
        let mut lexer = Lexer::default();
        let (mut script, mut unquoted) = (String::new(), Vec::new());
        let mut references = 0..;
        for piece in &template.pieces {
            match piece {
                Piece::Text(text) => {
                    lexer.feed(text);
                    script.push_str(text);
                }
                Piece::Var(name) => {
                    let index = references.next().unwrap_or(0);
                    let concern = match lexer.context() {
                        // Close the single quotes, expand in double quotes, open them again.
                        Context::SingleQuoted => {
                            script.push_str(&format!("'\"${{{name}}}\"'"));
                            None
                        }
                        Context::DoubleQuoted => {
                            script.push_str(&format!("${{{name}}}"));
                            lexer.escaped.then_some(Concern::Escaped)
                        }
                        Context::Unquoted(assignment) => {
                            script.push_str(&format!("${{{name}}}"));
                            if lexer.comment {
                                None
                            } else if lexer.escaped {
                                Some(Concern::Escaped)
                            } else {
                                (!assignment).then_some(Concern::Unquoted)
                            }
                        }
                        Context::Heredoc(quoted) => {
                            script.push_str(&format!("${{{name}}}"));
                            quoted.then_some(Concern::QuotedHeredoc)
                        }
                    };
                    if let Some(concern) = concern {
                        unquoted.push(Reference { name: name.clone(), index, concern });
                    }
                    lexer.after_reference();
                }
            }
        }
        Ok((CommandTemplate { raw: raw.to_owned(), pieces: template.pieces, script }, unquoted))
    }

    /// The text `sh -c` runs: references left for sh to expand from the environment.
    pub fn script(&self) -> &str {
        &self.script
    }

    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(name) => Some(name.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// Checks that every variable the command references is in `env`, the environment its
    /// process gets; one that is not is an error naming it.
    pub fn check_env(&self, env: &BTreeMap<String, String>) -> Result<(), TemplateError> {
        match self.vars().find(|name| !env.contains_key(*name)) {
            Some(name) => Err(TemplateError::Unset { name: name.to_owned() }),
            None => Ok(()),
        }
    }

    /// The variables the command references, with their values from `lookup`, for a process
    /// environment; a variable `lookup` does not know is an error naming it.
    pub fn env_from<E>(
        &self,
        mut lookup: impl FnMut(&str) -> Result<String, E>,
    ) -> Result<BTreeMap<String, String>, E> {
        let mut env = BTreeMap::new();
        for name in self.vars() {
            if !env.contains_key(name) {
                env.insert(name.to_owned(), lookup(name)?);
            }
        }
        Ok(env)
    }
}

/// Byte offsets of the `${` of each reference in `raw`, as [`Template::parse`] finds them.
fn reference_offsets(raw: &str) -> Vec<usize> {
    let (mut offsets, mut at) = (Vec::new(), 0);
    while let Some(i) = raw[at..].find('$') {
        let start = at + i;
        let rest = &raw[start..];
        if rest.starts_with("$${") {
            at = start + 3;
        } else if rest.starts_with("${") {
            offsets.push(start);
            at = start + 2;
        } else {
            at = start + 1;
        }
    }
    offsets
}

impl Decode for CommandTemplate {
    fn expected() -> String {
        "a shell command (may reference variables as ${NAME})".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let raw = String::decode(cx, value, at)?;
        match CommandTemplate::parse(&raw) {
            Ok((command, unquoted)) => {
                for var in command.vars() {
                    cx.var_refs.push(Spanned::new(var.to_owned(), value.span()));
                }
                for reference in unquoted {
                    let span = reference_span(cx, value.span(), &reference);
                    let name = &reference.name;
                    match reference.concern {
                        Concern::Escaped => {
                            cx.warning(
                                span,
                                format!(
                                    "`${{{name}}}` follows a backslash in `{}`: sh prints `${{{name}}}` as it is, not the value",
                                    at.path
                                ),
                            )
                            .help = Some(format!("for the value, remove the backslash (and write \"${{{name}}}\")"));
                            continue;
                        }
                        Concern::QuotedHeredoc => {
                            cx.warning(
                                span,
                                format!(
                                    "`${{{name}}}` is in a here-document with a quoted delimiter in `{}`: sh expands nothing there, so it stays `${{{name}}}`",
                                    at.path
                                ),
                            )
                            .help = Some("for the value, leave the delimiter unquoted (`<<EOF`)".into());
                            continue;
                        }
                        Concern::Unquoted => {}
                    }
                    cx.warning(
                        span,
                        format!(
                            "`${{{name}}}` is outside double quotes in `{}`: sh splits its value into words and expands `*` and `?` in it",
                            at.path
                        ),
                    )
                    .help = Some(format!("write \"${{{name}}}\" (in TOML: \\\"${{{name}}}\\\") to pass the value as one word"));
                }
                Some(command)
            }
            Err(problem) => {
                cx.invalid(value, at, &Self::expected(), problem);
                None
            }
        }
    }
}

/// Where a reference is written in the file: the same reference of the string as written
/// (TOML escapes elsewhere in it do not move it off), or the whole value when it is not there.
pub(crate) fn reference_span(cx: &Cx, span: std::ops::Range<usize>, reference: &Reference) -> std::ops::Range<usize> {
    let Some(written) = cx.source.text().get(span.clone()) else { return span };
    let wanted = format!("${{{}}}", reference.name);
    match reference_offsets(written).get(reference.index) {
        Some(&at) if written[at..].starts_with(&wanted) => span.start + at..span.start + at + wanted.len(),
        _ => span,
    }
}

/// A configured value: text (with `${VAR}` references) or the name of a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    Text(Template),
    Secret(String),
}

impl Decode for Setting {
    fn expected() -> String {
        "a string or { secret = \"NAME\" }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        match value.get_ref() {
            DeValue::String(_) => Template::decode(cx, value, at).map(Setting::Text),
            DeValue::Table(_) => {
                let mut t = Table::open(cx, value, at)?;
                let name: Option<Spanned<String>> = t.required(cx, "secret");
                t.finish(cx);
                // `{ secret = "NAME" }` is one form of every setting, documented once, not per key.
                cx.schema_paths.remove(&at.key("secret").schema);
                let name = name?;
                cx.secret_refs.push(name.clone());
                Some(Setting::Secret(name.value))
            }
            _ => {
                cx.wrong_type(value, at, &Self::expected());
                None
            }
        }
    }
}

/// Converts a TOML value to JSON (for expected JSON values in smoke checks).
pub(crate) fn to_json(value: &DeValue) -> Option<serde_json::Value> {
    Some(match value {
        DeValue::String(s) => serde_json::Value::String(s.to_string()),
        DeValue::Integer(i) => serde_json::Value::from(i64::from_str_radix(i.as_str(), i.radix()).ok()?),
        DeValue::Float(f) => serde_json::Value::from(f.as_str().replace('_', "").parse::<f64>().ok()?),
        DeValue::Boolean(b) => serde_json::Value::Bool(*b),
        DeValue::Datetime(d) => serde_json::Value::String(d.to_string()),
        DeValue::Array(items) => {
            serde_json::Value::Array(items.iter().map(|i| to_json(i.get_ref())).collect::<Option<_>>()?)
        }
        DeValue::Table(t) => serde_json::Value::Object(
            t.iter().map(|(k, v)| Some((k.get_ref().to_string(), to_json(v.get_ref())?))).collect::<Option<_>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_escapes_and_shell_dollars() {
        let t = Template::parse("postgres://${DB_HOST}:5432/$${literal} --port $PORT").unwrap();
        assert_eq!(t.vars().collect::<Vec<_>>(), ["DB_HOST"]);
        let rendered = t.render(|name| (name == "DB_HOST").then(|| "db".to_owned())).unwrap();
        assert_eq!(rendered, "postgres://db:5432/${literal} --port $PORT");
        assert!(t.render(|_| None).unwrap_err().to_string().contains("DB_HOST"));
        assert!(Template::parse("${OPEN").unwrap_err().to_string().contains("closing"));
        assert!(Template::parse("${not valid}").unwrap_err().to_string().contains("not a variable reference"));
    }

    fn command(raw: &str) -> (String, Vec<String>) {
        let (command, unquoted) = CommandTemplate::parse(raw).unwrap();
        (command.script().to_owned(), unquoted.into_iter().map(|u| u.name).collect())
    }

    #[test]
    fn commands_leave_references_to_sh_and_find_the_unquoted_ones() {
        // Double-quoted and assigned references are left as they are, and not reported.
        assert_eq!(command(r#"echo "${A}" && X=${B} run"#), (r#"echo "${A}" && X=${B} run"#.into(), vec![]));
        // Unquoted ones are left too, but reported: sh splits them.
        assert_eq!(command("psql ${URL} -f x.sql"), ("psql ${URL} -f x.sql".into(), vec!["URL".into()]));
        // Inside single quotes sh expands nothing: the reference is spliced out into double quotes.
        assert_eq!(command("echo 'a ${A} b'"), (r#"echo 'a '"${A}"' b'"#.into(), vec![]));
        // `$${` is a literal `${`, for the shell; `$HOME` is the shell's too.
        assert_eq!(command("echo \"$${HOME}\" $PATH"), ("echo \"${HOME}\" $PATH".into(), vec![]));
        // Quotes open again inside a command substitution; a quote inside a single-quoted string
        // is text; a comment is not a use.
        assert_eq!(command(r#"echo "$(f ${A})" "$(g "${B}")""#).1, ["A"]);
        assert_eq!(command(r#"echo '"' ${A}"#).1, ["A"]);
        assert_eq!(command("echo `f ${A}`").1, ["A"]);
        assert_eq!(command("true # ${A}").1, Vec::<String>::new());
        let (_, escaped) = CommandTemplate::parse(r#"echo \${A} "\${B}" "${C}""#).unwrap();
        let escaped: Vec<(&str, Concern)> = escaped.iter().map(|r| (r.name.as_str(), r.concern)).collect();
        assert_eq!(escaped, [("A", Concern::Escaped), ("B", Concern::Escaped)]);
        // Here-documents: an unquoted delimiter expands (no splitting), a quoted one nothing;
        // after the delimiter line, the command goes on as usual.
        let (_, found) =
            CommandTemplate::parse("cat <<EOF > a\n${A}\nEOF\ncat <<-'END' <<<x\n\t${B}\n\tEND\necho ${C}").unwrap();
        let found: Vec<(&str, Concern)> = found.iter().map(|r| (r.name.as_str(), r.concern)).collect();
        assert_eq!(found, [("B", Concern::QuotedHeredoc), ("C", Concern::Unquoted)]);
        let (parsed, _) = CommandTemplate::parse("printf '%s' \"${A}\" ${B}").unwrap();
        assert_eq!(parsed.vars().collect::<Vec<_>>(), ["A", "B"]);
        let env = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        assert!(parsed.check_env(&env).unwrap_err().to_string().contains("`B` is not set"));
    }

    #[test]
    fn single_quoted_references_still_give_the_literal_value_in_sh() {
        let (parsed, _) = CommandTemplate::parse("printf '%s|' 'x${V}y'").unwrap();
        let value = "a'b; echo pwned \"$(id)\" `id` &";
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(parsed.script())
            .env_clear()
            .env("V", value)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("x{value}y|"));
    }
}
