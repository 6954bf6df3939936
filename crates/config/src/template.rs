//! Strings that may reference variables (`"postgres://${DB_HOST}/maily"`) and settings that may
//! instead name a secret (`{ secret = "STRIPE_KEY" }`). References are checked against `[env]`
//! when the config is validated and resolved only when a value is used.

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

/// A string with `${NAME}` references; `$${` writes a literal `${`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub raw: String,
    pub pieces: Vec<Piece>,
}

impl Template {
    pub fn parse(raw: &str) -> Result<Self, String> {
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
                let end = after.find('}').ok_or_else(|| "`${` without a closing `}`".to_owned())?;
                let name = &after[..end];
                let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(format!(
                        "`${{{name}}}` is not a variable reference (names use letters, digits and `_`)"
                    ));
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

    /// Fills in the references; a variable `lookup` does not know is an error naming it.
    pub fn render(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Var(name) => out.push_str(&lookup(name).ok_or_else(|| format!("variable `{name}` is not set"))?),
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
        assert!(t.render(|_| None).unwrap_err().contains("DB_HOST"));
        assert!(Template::parse("${OPEN").unwrap_err().contains("closing"));
        assert!(Template::parse("${not valid}").unwrap_err().contains("not a variable reference"));
    }
}
