//! `[probes.<probe>]`: checks the monitor runs on a schedule (HTTP(S), TCP, PostgreSQL, Redis, a
//! command, or rules over a Prometheus `/metrics` page), and the small rule language of metrics
//! probes (`increase(emails_sent_total[10m]) == 0`, `ratio(ok_total, all_total) < 0.998`).
//!
//! Everything is checked here, where the file is read: the type and its target, a timeout below
//! the interval, regular expressions that compile and rules that parse, so the monitor never meets
//! a probe it cannot run.

use std::fmt;

use indexmap::IndexMap;
use toml::de::DeValue;

use crate::decode::{At, Cx, Decode, Spanned, Table, Value, did_you_mean, integer_in, named_entries, one_of};
use crate::model::{AlertSeverity, Config};
use crate::template::{CommandTemplate, Setting, Template};
use crate::units::Duration;

/// What a probe checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeType {
    Http,
    Tcp,
    Postgres,
    Redis,
    Command,
    Metrics,
}

impl ProbeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeType::Http => "http",
            ProbeType::Tcp => "tcp",
            ProbeType::Postgres => "postgres",
            ProbeType::Redis => "redis",
            ProbeType::Command => "command",
            ProbeType::Metrics => "metrics",
        }
    }

    /// The key that names what this type of probe reaches.
    pub fn target_key(self) -> &'static str {
        match self {
            ProbeType::Tcp => "address",
            ProbeType::Command => "command",
            _ => "url",
        }
    }
}

/// Where a probe goes: a URL (may be a secret, as database URLs with passwords are), an address
/// or a shell command.
#[derive(Debug, Clone)]
pub enum ProbeTarget {
    Url(Setting),
    Address(Template),
    Command(CommandTemplate),
}

/// A JSON field of an HTTP answer and what it must be.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeJson {
    /// JSON pointer (RFC 6901), such as `/status`.
    pub pointer: String,
    /// The value the field must hold.
    pub equals: Option<serde_json::Value>,
    /// Whether the field must be present (`true`) or absent (`false`).
    pub exists: Option<bool>,
}

/// What an HTTP answer must look like.
#[derive(Debug, Clone, Default)]
pub struct ProbeExpect {
    /// The status code; any 2xx when absent.
    pub status: Option<u16>,
    pub body_contains: Option<String>,
    pub body_regex: Option<String>,
    pub json: Option<ProbeJson>,
    pub max_latency: Option<Duration>,
    /// For `https://`: the fewest days the server's certificate may have left (0: not checked).
    pub cert_days: u32,
}

/// Default of `expect.cert_days` for `https://` probes.
pub const DEFAULT_CERT_DAYS: u32 = 14;

/// One `[probes.<probe>]`.
#[derive(Debug, Clone)]
pub struct Probe {
    pub name: Spanned<String>,
    pub kind: ProbeType,
    pub target: ProbeTarget,
    /// HTTP method (http probes).
    pub method: String,
    pub headers: IndexMap<String, String>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that turn the probe Down.
    pub failure_threshold: u32,
    /// Consecutive successes that turn it Up again.
    pub success_threshold: u32,
    pub expect: ProbeExpect,
    /// CA certificates (PEM, relative to the config file) trusted instead of the system's.
    pub ca_file: Option<String>,
    /// Metrics probes: the conditions that fail the probe when they hold.
    pub rules: Vec<MetricRule>,
    pub service: Option<Spanned<String>>,
    pub environment: Option<Spanned<String>>,
    pub severity: AlertSeverity,
}

/// Defaults shared by configured probes and those made from a service's `health`.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;

/// The default timeout for an interval: 10 s, or half the interval when that is shorter.
pub fn default_probe_timeout(interval: Duration) -> Duration {
    let half = Duration::from_millis(u64::try_from(interval.as_std().as_millis() / 2).unwrap_or(u64::MAX));
    DEFAULT_PROBE_TIMEOUT.min(half)
}

fn threshold(cx: &mut Cx, t: &mut Table, key: &'static str, default: u32) -> u32 {
    let at = t.at().key(key);
    t.get(cx, key).and_then(|v| integer_in(cx, v, &at, 1..=1_000_000)).map_or(default, |n| n as u32)
}

fn severity(cx: &mut Cx, value: &Value, at: &At) -> Option<AlertSeverity> {
    use AlertSeverity::*;
    one_of(cx, value, at, &[("critical", Critical), ("warning", Warning), ("info", Info), ("business", Business)])
}

impl Probe {
    pub(crate) fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        use ProbeType::*;
        let types = [
            ("http", Http),
            ("tcp", Tcp),
            ("postgres", Postgres),
            ("redis", Redis),
            ("command", Command),
            ("metrics", Metrics),
        ];
        let type_value = t.get(cx, "type");
        let kind = type_value.and_then(|v| one_of(cx, v, &at.key("type"), &types));
        let url: Option<Setting> = t.optional(cx, "url");
        let address: Option<Spanned<Template>> = t.optional(cx, "address");
        let command: Option<CommandTemplate> = t.optional(cx, "command");
        let method = t
            .get(cx, "method")
            .and_then(|v| {
                let methods = [("GET", "GET"), ("HEAD", "HEAD"), ("POST", "POST"), ("OPTIONS", "OPTIONS")];
                one_of(cx, v, &at.key("method"), &methods)
            })
            .unwrap_or("GET");
        let headers_value = t.get(cx, "headers");
        let headers = headers_value
            .map(|v| named_entries(cx, v, &at.key("headers"), "<header>", |cx, _, v, at| String::decode(cx, v, at)))
            .unwrap_or_default();
        let interval_value = t.get(cx, "interval");
        let interval: Duration =
            interval_value.and_then(|v| Duration::decode(cx, v, &at.key("interval"))).unwrap_or(DEFAULT_PROBE_INTERVAL);
        let timeout_value = t.get(cx, "timeout");
        let timeout: Option<Duration> = timeout_value.and_then(|v| Duration::decode(cx, v, &at.key("timeout")));
        let failure_threshold = threshold(cx, &mut t, "failure_threshold", DEFAULT_FAILURE_THRESHOLD);
        let success_threshold = threshold(cx, &mut t, "success_threshold", DEFAULT_SUCCESS_THRESHOLD);
        let expect_value = t.get(cx, "expect");
        let expect = expect_value.and_then(|v| decode_expect(cx, v, &at.key("expect")));
        let ca_file: Option<String> = t.optional(cx, "ca_file");
        let rules_value = t.get(cx, "rules");
        let rules: Option<Vec<MetricRule>> =
            rules_value.and_then(|v| Vec::<MetricRule>::decode(cx, v, &at.key("rules")));
        // A list with a bad rule is reported at the rule, not as missing.
        let rules_missing = rules_value.is_none() || rules.as_ref().is_some_and(Vec::is_empty);
        let rules = rules.unwrap_or_default();
        let service = t.optional(cx, "service");
        let environment = t.optional(cx, "environment");
        let severity =
            t.get(cx, "severity").and_then(|v| severity(cx, v, &at.key("severity"))).unwrap_or(AlertSeverity::Critical);
        let span = t.span();
        t.finish(cx);

        let Some(kind) = kind else {
            if type_value.is_none() {
                cx.error(span, format!("missing key `type` in {}", at.table_name())).expected =
                    Some("type = \"http\", \"tcp\", \"postgres\", \"redis\", \"command\" or \"metrics\"".to_owned());
            }
            return None;
        };
        let (has_url, has_address, has_command) = (url.is_some(), address.is_some(), command.is_some());
        let target = match kind {
            Tcp => address.map(|a| {
                let text = &a.value.raw;
                // With variables in it, the address is checked when it is resolved.
                let valid = a.value.vars().next().is_some()
                    || text
                        .rsplit_once(':')
                        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
                if !valid {
                    cx.error(a.span.clone(), format!("`{text}` is not an address in `{}.address`", at.path)).expected =
                        Some("host:port, such as \"db.internal:5432\" or \"127.0.0.1:6379\"".into());
                }
                ProbeTarget::Address(a.value)
            }),
            Command => command.map(ProbeTarget::Command),
            Http | Postgres | Redis | Metrics => url.map(ProbeTarget::Url),
        };
        let Some(target) = target else {
            let key = kind.target_key();
            let example = match kind {
                Http => "url = \"https://api.example.com/health\"",
                Tcp => "address = \"127.0.0.1:5432\"",
                Postgres => "url = { secret = \"DATABASE_URL\" }",
                Redis => "url = \"redis://127.0.0.1:6379\"",
                Command => "command = \"pg_isready -h db\"",
                Metrics => "url = \"http://127.0.0.1:9898/metrics\"",
            };
            cx.error(span, format!("probe `{}` of type \"{}\" has no `{key}`", name.value, kind.as_str())).expected =
                Some(example.to_owned());
            return None;
        };
        // Keys of other probe types are mistakes: say so rather than ignore them.
        let misplaced: [(&str, bool, &[ProbeType]); 6] = [
            ("url", matches!(target, ProbeTarget::Url(_)) || !has_url, &[Http, Postgres, Redis, Metrics]),
            ("address", kind == Tcp || !has_address, &[Tcp]),
            ("command", kind == Command || !has_command, &[Command]),
            ("expect", kind == Http || expect_value.is_none(), &[Http]),
            ("rules", kind == Metrics || rules_value.is_none(), &[Metrics]),
            ("headers", matches!(kind, Http | Metrics) || headers_value.is_none(), &[Http, Metrics]),
        ];
        for (key, fine, types) in misplaced {
            if !fine {
                let names: Vec<String> = types.iter().map(|t| format!("\"{}\"", t.as_str())).collect();
                cx.error(
                    span.clone(),
                    format!("`{key}` does not apply to probe `{}` of type \"{}\"", name.value, kind.as_str()),
                )
                .help = Some(format!("`{key}` is for type {}", names.join(" or ")));
            }
        }
        if kind == Metrics && rules_missing {
            cx.error(span.clone(), format!("metrics probe `{}` has no `rules`", name.value)).expected =
                Some("rules = [{ expr = \"increase(emails_sent_total[10m])\", op = \"==\", value = 0 }]".into());
        }
        let timeout = timeout.unwrap_or_else(|| default_probe_timeout(interval));
        if timeout >= interval {
            let span = timeout_value.map_or(span.clone(), |v| v.span());
            cx.error(span, format!("`{}.timeout` ({timeout}) must be below the interval ({interval})", at.path)).help =
                Some("a probe's next run must not start while the last one may still run".into());
        }
        let mut expect = expect.unwrap_or(ProbeExpect { cert_days: u32::MAX, ..ProbeExpect::default() });
        if let (Some(value), Some(regex)) = (expect_value, &expect.body_regex)
            && let Err(err) = regex_lite::Regex::new(regex)
        {
            cx.error(value.span(), format!("invalid regular expression in `{}.expect.body_regex`: {err}", at.path));
        }
        if expect.cert_days == u32::MAX {
            expect.cert_days = DEFAULT_CERT_DAYS;
        }
        Some(Probe {
            name,
            kind,
            target,
            method: method.to_owned(),
            headers,
            interval,
            timeout,
            failure_threshold,
            success_threshold,
            expect,
            ca_file,
            rules,
            service,
            environment,
            severity,
        })
    }
}

/// `expect = { ... }`; `cert_days` is `u32::MAX` when not written (the default is applied later).
fn decode_expect(cx: &mut Cx, value: &Value, at: &At) -> Option<ProbeExpect> {
    let mut t = Table::open(cx, value, at)?;
    let status = t.get(cx, "status").and_then(|v| integer_in(cx, v, &at.key("status"), 100..=599));
    let body_contains = t.optional(cx, "body_contains");
    let body_regex = t.optional(cx, "body_regex");
    let json = t.get(cx, "json").and_then(|v| decode_json(cx, v, &at.key("json")));
    let max_latency = t.optional(cx, "max_latency");
    let cert_days = t.get(cx, "cert_days").and_then(|v| integer_in(cx, v, &at.key("cert_days"), 0..=3650));
    t.finish(cx);
    Some(ProbeExpect {
        status: status.map(|s| s as u16),
        body_contains,
        body_regex,
        json,
        max_latency,
        cert_days: cert_days.map_or(u32::MAX, |d| d as u32),
    })
}

fn decode_json(cx: &mut Cx, value: &Value, at: &At) -> Option<ProbeJson> {
    let mut t = Table::open(cx, value, at)?;
    let pointer: Option<Spanned<String>> = t.required(cx, "pointer");
    let equals = t.get(cx, "equals").and_then(|v| crate::template::to_json(v.get_ref()));
    let exists: Option<bool> = t.optional(cx, "exists");
    let span = t.span();
    t.finish(cx);
    let pointer = pointer?;
    if !(pointer.value.is_empty() || pointer.value.starts_with('/')) {
        cx.error(pointer.span.clone(), format!("JSON pointer `{}` must start with `/`", pointer.value)).help =
            Some("for the field `status` of the top object, write \"/status\"".into());
    }
    if equals.is_none() && exists.is_none() {
        cx.error(span, format!("`{}` needs `equals` or `exists`", at.path)).expected =
            Some("{ pointer = \"/status\", equals = \"ok\" } or { pointer = \"/db\", exists = true }".into());
    }
    Some(ProbeJson { pointer: pointer.value, equals, exists })
}

// ---------------------------------------------------------------------------------------------
// Metric rules

/// How a series' labels are matched: `name{label="x", other!="y"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMatcher {
    pub label: String,
    pub value: String,
    /// `=` when true, `!=` when false.
    pub equal: bool,
}

/// A metric name with label matchers; it stands for the sum of every series it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub name: String,
    pub matchers: Vec<LabelMatcher>,
}

impl Selector {
    /// Whether a series with these labels is one this selector sums.
    pub fn matches<'a>(&self, name: &str, labels: impl IntoIterator<Item = (&'a str, &'a str)> + Clone) -> bool {
        name == self.name
            && self.matchers.iter().all(|m| {
                let value = labels.clone().into_iter().find(|(k, _)| *k == m.label).map_or("", |(_, v)| v);
                (value == m.value) == m.equal
            })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.matchers.is_empty() {
            let parts: Vec<String> = self
                .matchers
                .iter()
                .map(|m| format!("{}{}{:?}", m.label, if m.equal { "=" } else { "!=" }, m.value))
                .collect();
            write!(f, "{{{}}}", parts.join(","))?;
        }
        Ok(())
    }
}

/// What a rule computes from the scraped pages.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricExpr {
    /// The current value (the sum of the matching series).
    Value(Selector),
    /// How much a counter grew over the window (counter resets are followed).
    Increase(Selector, Duration),
    /// `increase` per second.
    Rate(Selector, Duration),
    /// One expression divided by another.
    Ratio(Box<MetricExpr>, Box<MetricExpr>),
}

impl MetricExpr {
    /// The longest window any part of the expression looks back over.
    pub fn window(&self) -> Option<Duration> {
        match self {
            MetricExpr::Value(_) => None,
            MetricExpr::Increase(_, w) | MetricExpr::Rate(_, w) => Some(*w),
            MetricExpr::Ratio(a, b) => a.window().max(b.window()),
        }
    }

    /// Every selector in the expression.
    pub fn selectors(&self) -> Vec<&Selector> {
        match self {
            MetricExpr::Value(s) | MetricExpr::Increase(s, _) | MetricExpr::Rate(s, _) => vec![s],
            MetricExpr::Ratio(a, b) => {
                let mut all = a.selectors();
                all.extend(b.selectors());
                all
            }
        }
    }

    /// Parses `name{l="v"}`, `increase(sel[10m])`, `rate(sel[5m])` and `ratio(expr, expr)`.
    pub fn parse(text: &str) -> Result<Self, crate::InvalidValue> {
        let mut parser = ExprParser { text, at: 0 };
        let expr = parser.expr()?;
        parser.skip_space();
        if parser.at < text.len() {
            return Err(format!("unexpected `{}` at column {}", &text[parser.at..], parser.at + 1).into());
        }
        Ok(expr)
    }
}

impl fmt::Display for MetricExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricExpr::Value(s) => write!(f, "{s}"),
            MetricExpr::Increase(s, w) => write!(f, "increase({s}[{w}])"),
            MetricExpr::Rate(s, w) => write!(f, "rate({s}[{w}])"),
            MetricExpr::Ratio(a, b) => write!(f, "ratio({a}, {b})"),
        }
    }
}

struct ExprParser<'t> {
    text: &'t str,
    at: usize,
}

impl ExprParser<'_> {
    fn skip_space(&mut self) {
        while self.text[self.at..].starts_with(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.text[self.at..].starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        if self.eat(token) {
            return Ok(());
        }
        let found = self.text[self.at..].chars().next().map_or("the end".to_owned(), |c| format!("`{c}`"));
        Err(format!("expected `{token}` at column {}, found {found}", self.at + 1))
    }

    fn identifier(&mut self) -> Result<String, String> {
        self.skip_space();
        let rest = &self.text[self.at..];
        let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
        if len == 0 || rest.starts_with(|c: char| c.is_ascii_digit()) {
            let found = rest.chars().next().map_or("the end".to_owned(), |c| format!("`{c}`"));
            return Err(format!("expected a metric name at column {}, found {found}", self.at + 1));
        }
        self.at += len;
        Ok(rest[..len].to_owned())
    }

    fn expr(&mut self) -> Result<MetricExpr, String> {
        let start = self.at;
        let name = self.identifier()?;
        self.skip_space();
        if !self.text[self.at..].starts_with('(') {
            return Ok(MetricExpr::Value(self.selector_after(name)?));
        }
        self.at += 1;
        let expr = match name.as_str() {
            "increase" | "rate" => {
                let metric = self.identifier()?;
                let selector = self.selector_after(metric)?;
                self.expect("[")?;
                let close = self.text[self.at..].find(']').ok_or_else(|| "a window `[` without its `]`".to_owned())?;
                let window = Duration::parse(&self.text[self.at..self.at + close])
                    .map_err(|e| format!("bad window in `{}`: {e}", &self.text[start..]))?;
                if window == Duration::default() {
                    return Err("a window of 0 covers nothing".into());
                }
                self.at += close + 1;
                if name == "increase" {
                    MetricExpr::Increase(selector, window)
                } else {
                    MetricExpr::Rate(selector, window)
                }
            }
            "ratio" => {
                let numerator = self.expr()?;
                self.expect(",")?;
                let denominator = self.expr()?;
                MetricExpr::Ratio(Box::new(numerator), Box::new(denominator))
            }
            other => {
                let mut message = format!("unknown function `{other}`");
                if let Some(suggestion) = did_you_mean(other, ["increase", "rate", "ratio"]) {
                    message.push_str(&format!(" (did you mean `{suggestion}`?)"));
                }
                return Err(format!("{message}; the functions are increase, rate and ratio"));
            }
        };
        self.expect(")")?;
        Ok(expr)
    }

    /// The optional `{label="value", ...}` after a metric name.
    fn selector_after(&mut self, name: String) -> Result<Selector, String> {
        let mut matchers = Vec::new();
        if self.eat("{") {
            loop {
                if self.eat("}") {
                    break;
                }
                let label = self.identifier()?;
                let equal = if self.eat("!=") {
                    false
                } else {
                    self.expect("=")?;
                    true
                };
                self.expect("\"")?;
                let mut value = String::new();
                let mut chars = self.text[self.at..].char_indices();
                let mut closed = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '"' => {
                            closed = Some(i + 1);
                            break;
                        }
                        '\\' => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, other)) => value.push(other),
                            None => break,
                        },
                        other => value.push(other),
                    }
                }
                let Some(length) = closed else {
                    return Err(format!("the label value of `{label}` is not closed with `\"`"));
                };
                self.at += length;
                matchers.push(LabelMatcher { label, value, equal });
                if !self.eat(",") {
                    self.expect("}")?;
                    break;
                }
            }
        }
        Ok(Selector { name, matchers })
    }
}

/// How a rule compares the computed value with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Equal,
    NotEqual,
}

impl CompareOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Less => "<",
            CompareOp::LessOrEqual => "<=",
            CompareOp::Greater => ">",
            CompareOp::GreaterOrEqual => ">=",
            CompareOp::Equal => "==",
            CompareOp::NotEqual => "!=",
        }
    }

    /// Whether `value op threshold` holds (never for NaN).
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            CompareOp::Less => value < threshold,
            CompareOp::LessOrEqual => value <= threshold,
            CompareOp::Greater => value > threshold,
            CompareOp::GreaterOrEqual => value >= threshold,
            CompareOp::Equal => value == threshold,
            CompareOp::NotEqual => !value.is_nan() && value != threshold,
        }
    }
}

/// A condition on a metrics page; when it holds, the probe fails.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRule {
    pub expr: MetricExpr,
    pub op: CompareOp,
    pub value: f64,
    /// What the alert says when the rule holds ("payment success below 99.8%").
    pub message: Option<String>,
}

impl fmt::Display for MetricRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.expr, self.op.as_str(), self.value)
    }
}

impl Decode for MetricRule {
    fn expected() -> String {
        "{ expr = \"increase(emails_sent_total[10m])\", op = \"==\", value = 0 }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let expr: Option<Spanned<String>> = t.required(cx, "expr");
        use CompareOp::*;
        let ops =
            [("<", Less), ("<=", LessOrEqual), (">", Greater), (">=", GreaterOrEqual), ("==", Equal), ("!=", NotEqual)];
        let op = match t.get(cx, "op") {
            Some(v) => one_of(cx, v, &at.key("op"), &ops),
            None => {
                cx.error(t.span(), format!("missing key `op` in `{}`", at.path)).expected =
                    Some("op = \"<\", \"<=\", \">\", \">=\", \"==\" or \"!=\"".into());
                None
            }
        };
        let threshold = match t.get(cx, "value") {
            Some(v) => number(cx, v, &at.key("value")),
            None => {
                cx.error(t.span(), format!("missing key `value` in `{}`", at.path)).expected =
                    Some("value = 0.998 (the threshold)".into());
                None
            }
        };
        let message = t.optional(cx, "message");
        t.finish(cx);
        let expr = expr?;
        let parsed = match MetricExpr::parse(&expr.value) {
            Ok(parsed) => Some(parsed),
            Err(problem) => {
                cx.error(expr.span.clone(), format!("cannot parse the rule `{}`: {problem}", expr.value)).expected =
                    Some("a metric such as `name{label=\"x\"}`, `increase(name[10m])`, `rate(name[5m])` or `ratio(a, b)`".into());
                None
            }
        };
        Some(MetricRule { expr: parsed?, op: op?, value: threshold?, message })
    }
}

fn number(cx: &mut Cx, value: &Value, at: &At) -> Option<f64> {
    let parsed = match value.get_ref() {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok().map(|n| n as f64),
        DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
        _ => None,
    };
    if parsed.is_none() {
        cx.wrong_type(value, at, "a number");
    }
    parsed
}

// ---------------------------------------------------------------------------------------------
// Whole-config checks

/// `service` and `environment` of each probe must exist.
pub(crate) fn check(cx: &mut Cx, config: &Config) {
    let services: Vec<&str> = config.services.keys().map(String::as_str).collect();
    let environments: Vec<&str> = config.environments.keys().map(String::as_str).collect();
    for probe in config.probes.values() {
        for (name, what, known) in
            [(&probe.service, "service", &services), (&probe.environment, "environment", &environments)]
        {
            if let Some(name) = name
                && !known.contains(&name.value.as_str())
            {
                let diagnostic = cx.error(name.span.clone(), format!("unknown {what} `{}`", name.value));
                diagnostic.expected =
                    Some(format!("one of {}", known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")));
                if let Some(suggestion) = did_you_mean(&name.value, known.iter().copied()) {
                    diagnostic.help = Some(format!("did you mean `{suggestion}`?"));
                }
            }
        }
    }
}

/// Reads `[probes]`.
pub(crate) fn decode_probes(cx: &mut Cx, value: &Value, at: &At) -> IndexMap<String, Probe> {
    named_entries(cx, value, at, "<probe>", Probe::decode)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{Source, parse};

    const BASE: &str = "[project]\nname = \"shop\"\n[environments.production]\n[services.api]\nrun = \"api\"\n";

    fn parsed(probes: &str) -> crate::Parsed {
        parse(&Source::new("windlass.toml", format!("{BASE}{probes}")))
    }

    fn errors(probes: &str) -> String {
        let parsed = parsed(probes);
        parsed.diagnostics.iter().map(|d| d.render()).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn probes_of_every_type_are_read_with_defaults() {
        let parsed = parsed(
            r#"
[probes.api-health]
type = "http"
url = "https://api.shop.localhost/health"
service = "api"
environment = "production"
expect = { status = 200, body_regex = "^\\{", json = { pointer = "/status", equals = "ok" }, max_latency = "300ms" }

[probes.db]
type = "postgres"
url = { secret = "DATABASE_URL" }
interval = "1m"
timeout = "5s"
failure_threshold = 2
success_threshold = 2
severity = "warning"

[probes.cache]
type = "redis"
url = "redis://127.0.0.1:6379"

[probes.port]
type = "tcp"
address = "127.0.0.1:5432"

[probes.port-from-env]
type = "tcp"
address = "${DB_ADDRESS}"

[probes.bad-port]
type = "tcp"
address = "db.internal"

[probes.backup-fresh]
type = "command"
command = "test -n \"$(find /backups -mmin -1500)\""
interval = "5s"

[probes.payments]
type = "metrics"
url = "http://127.0.0.1:9898/metrics"
severity = "business"
rules = [
  { expr = 'ratio(increase(payments_total{result="success"}[1h]), increase(payments_total[1h]))', op = "<", value = 0.998 },
  { expr = "increase(emails_sent_total[10m])", op = "==", value = 0, message = "email sends stalled" },
]

[env]
DATABASE_URL = { secret = true }
DB_ADDRESS = { default = "127.0.0.1:5432" }
"#,
        );
        let problems: Vec<String> = parsed.diagnostics.iter().map(|d| d.message.clone()).collect();
        assert_eq!(problems, ["`db.internal` is not an address in `probes.bad-port.address`"]);
        let probes = &parsed.config.probes;
        let api = &probes["api-health"];
        assert_eq!(api.kind, ProbeType::Http);
        assert_eq!((api.interval, api.timeout), (Duration::from_secs(30), Duration::from_secs(10)));
        assert_eq!((api.failure_threshold, api.success_threshold), (3, 1));
        assert_eq!(api.expect.status, Some(200));
        assert_eq!(api.expect.cert_days, DEFAULT_CERT_DAYS);
        assert_eq!(api.severity, AlertSeverity::Critical);
        assert_eq!(api.service.as_ref().map(|s| s.value.as_str()), Some("api"));
        let db = &probes["db"];
        assert!(matches!(&db.target, ProbeTarget::Url(Setting::Secret(name)) if name == "DATABASE_URL"));
        assert_eq!((db.failure_threshold, db.success_threshold, db.severity), (2, 2, AlertSeverity::Warning));
        assert_eq!(probes["cache"].expect.cert_days, DEFAULT_CERT_DAYS, "also without an `expect` table");
        assert_eq!(probes["backup-fresh"].timeout, Duration::from_millis(2500), "half of a short interval");
        let payments = &probes["payments"];
        assert_eq!(payments.rules.len(), 2);
        assert_eq!(payments.rules[0].op, CompareOp::Less);
        assert_eq!(
            payments.rules[0].expr.to_string(),
            "ratio(increase(payments_total{result=\"success\"}[1h]), increase(payments_total[1h]))"
        );
        assert_eq!(payments.rules[1].message.as_deref(), Some("email sends stalled"));
        assert_eq!(payments.rules[1].expr.window(), Some(Duration::from_secs(600)));
    }

    #[test]
    fn mistakes_are_reported_at_their_line() {
        let text = errors(
            r#"
[probes.a]
type = "htp"
url = "http://x/"

[probes.b]
type = "tcp"

[probes.c]
type = "http"
url = "http://x/"
interval = "10s"
timeout = "10s"

[probes.d]
type = "metrics"
url = "http://x/metrics"
rules = [{ expr = "increse(x[5m])", op = "==", value = 0 }, { expr = "rate(x[5q])", op = "<", value = 1 }]

[probes.e]
type = "http"
url = "http://x/"
expect = { body_regex = "(unclosed" }

[probes.f]
type = "command"
command = "true"
service = "apii"
rules = []
"#,
        );
        let expected = [
            ("invalid value for `probes.a.type`: `htp` is not known", "windlass.toml:8:8"),
            ("probe `b` of type \"tcp\" has no `address`", "windlass.toml:11:1"),
            ("`probes.c.timeout` (10s) must be below the interval (10s)", "windlass.toml:18:11"),
            (
                "cannot parse the rule `increse(x[5m])`: unknown function `increse` (did you mean `increase`?)",
                "windlass.toml:23:19",
            ),
            ("cannot parse the rule `rate(x[5q])`: bad window", "windlass.toml:23:70"),
            ("invalid regular expression in `probes.e.expect.body_regex`", "windlass.toml:28:10"),
            ("`rules` does not apply to probe `f` of type \"command\"", "windlass.toml:30:1"),
            ("unknown service `apii`", "windlass.toml:33:11"),
        ];
        for (message, location) in expected {
            let at = text.find(message).unwrap_or_else(|| panic!("missing {message:?} in:\n{text}"));
            let next_line = text[at..].lines().nth(1).unwrap_or("");
            assert!(next_line.contains(location), "{message:?} is not at {location}: {next_line}");
        }
        assert!(text.contains("did you mean \"http\"?"), "{text}");
        assert!(!text.contains("has no `rules`"), "a bad rule is not a missing one:\n{text}");
        assert_eq!(parsed("").config.probes.len(), 0);
    }

    #[test]
    fn rule_expressions_parse_and_print() {
        let expr = MetricExpr::parse(r#"ratio(a_total{x="1", y!="a\"b"}, b_total)"#).unwrap();
        let MetricExpr::Ratio(a, _) = &expr else { panic!("{expr:?}") };
        let MetricExpr::Value(selector) = a.as_ref() else { panic!() };
        assert_eq!(selector.matchers[1], LabelMatcher { label: "y".into(), value: "a\"b".into(), equal: false });
        assert!(selector.matches("a_total", [("x", "1"), ("y", "c")]));
        assert!(!selector.matches("a_total", [("x", "1"), ("y", "a\"b")]));
        assert!(!selector.matches("a_total", [("y", "c")]), "a missing label is the empty string");
        assert_eq!(MetricExpr::parse("rate(x[5m])").unwrap().window(), Some(Duration::from_secs(300)));
        assert!(MetricExpr::parse("x{a=1}").unwrap_err().to_string().contains("expected `\"`"));
        assert!(MetricExpr::parse("ratio(a)").unwrap_err().to_string().contains("expected `,`"));
        assert!(MetricExpr::parse("x y").unwrap_err().to_string().contains("unexpected `y`"));
        assert!(MetricExpr::parse("increase(x[0s])").unwrap_err().to_string().contains("window of 0"));
        assert!(CompareOp::Less.holds(0.99, 0.998) && !CompareOp::Less.holds(f64::NAN, 1.0));
        assert!(!CompareOp::NotEqual.holds(f64::NAN, 1.0));
    }
}
