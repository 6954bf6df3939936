//! `[[smoke]]`: platform-wide checks run in the `verification` phase, and what they expect.
//!
//! It must not send requests; the pipeline does.

use indexmap::IndexMap;

use crate::decode::{At, Cx, Decode, Spanned, Table, Value, integer_in, named_entries, one_of};
use crate::template::Template;
use crate::units::Duration;

/// A platform-wide check run in the `verification` phase (and against a new color before it
/// gets traffic).
#[derive(Debug, Clone)]
pub struct SmokeCheck {
    pub name: String,
    pub url: Template,
    pub method: String,
    pub headers: IndexMap<String, String>,
    /// The service whose new color the check targets through the edge's pool pinning.
    pub service: Option<Spanned<String>>,
    pub expect: Expect,
    pub timeout: Duration,
    pub retries: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub status: u16,
    pub body_contains: Option<String>,
    pub json: Option<JsonExpect>,
    pub max_latency: Option<Duration>,
}

/// A JSON field (by JSON pointer, RFC 6901) and the value it must hold.
#[derive(Debug, Clone)]
pub struct JsonExpect {
    pub pointer: String,
    pub equals: serde_json::Value,
}

impl Decode for SmokeCheck {
    fn expected() -> String {
        "a table with `name` and `url`".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let name = t.required(cx, "name");
        let url = t.required(cx, "url");
        let method = t
            .get(cx, "method")
            .and_then(|v| {
                let methods = [
                    ("GET", "GET"),
                    ("HEAD", "HEAD"),
                    ("POST", "POST"),
                    ("PUT", "PUT"),
                    ("DELETE", "DELETE"),
                    ("OPTIONS", "OPTIONS"),
                ];
                one_of(cx, v, &at.key("method"), &methods)
            })
            .unwrap_or("GET");
        let headers = t
            .get(cx, "headers")
            .map(|v| named_entries(cx, v, &at.key("headers"), "<header>", |cx, _, v, at| String::decode(cx, v, at)))
            .unwrap_or_default();
        let service = t.optional(cx, "service");
        let expect = t.optional(cx, "expect").unwrap_or(Expect { status: 200, ..Expect::default() });
        let timeout = t.or(cx, "timeout", Duration::from_secs(5));
        let retries = t.or(cx, "retries", 2);
        t.finish(cx);
        Some(SmokeCheck {
            name: name?,
            url: url?,
            method: method.to_owned(),
            headers,
            service,
            expect,
            timeout,
            retries,
        })
    }
}

impl Decode for Expect {
    fn expected() -> String {
        "{ status = 200, body_contains = \"ok\", max_latency = \"300ms\" }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let status = t.get(cx, "status").and_then(|v| integer_in(cx, v, &at.key("status"), 100..=599)).unwrap_or(200);
        let body_contains = t.optional(cx, "body_contains");
        let json = t.optional(cx, "json");
        let max_latency = t.optional(cx, "max_latency");
        t.finish(cx);
        Some(Expect { status: status as u16, body_contains, json, max_latency })
    }
}

impl Decode for JsonExpect {
    fn expected() -> String {
        "{ pointer = \"/status\", equals = \"ok\" }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let pointer: Option<Spanned<String>> = t.required(cx, "pointer");
        let equals = match t.get(cx, "equals") {
            Some(v) => crate::template::to_json(v.get_ref()),
            None => {
                cx.error(t.span(), format!("missing key `equals` in `{}`", at.path));
                None
            }
        };
        t.finish(cx);
        let pointer = pointer?;
        if !(pointer.value.is_empty() || pointer.value.starts_with('/')) {
            cx.error(pointer.span.clone(), format!("JSON pointer `{}` must start with `/`", pointer.value)).help =
                Some("for the field `status` of the top object, write \"/status\"".into());
        }
        Some(JsonExpect { pointer: pointer.value, equals: equals? })
    }
}
