//! The value formats a declared variable can require (`format = "url"` and friends).
//!
//! Each check says *why* a value is rejected, in words that never repeat the value itself, so the
//! same message is safe for secrets.

use crate::model::VarFormat;
use crate::units::Duration;

/// Checks `value` against `format`; the error explains the mismatch without quoting the value.
pub fn check(format: VarFormat, value: &str) -> Result<(), crate::InvalidValue> {
    match format {
        VarFormat::Url => check_url(value).map_err(Into::into),
        VarFormat::Int => value.trim().parse::<i64>().map(drop).map_err(|_| "not a whole number".into()),
        VarFormat::Port => match value.trim().parse::<u32>() {
            Ok(port) if (1..=65535).contains(&port) => Ok(()),
            Ok(_) => Err("a port must be from 1 to 65535".into()),
            Err(_) => Err("not a port number".into()),
        },
        VarFormat::Bool => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "false" | "1" | "0" | "yes" | "no" | "on" | "off" => Ok(()),
            _ => Err("not a boolean (true/false, 1/0, yes/no, on/off)".into()),
        },
        VarFormat::Duration => {
            Duration::parse(value).map(drop).map_err(|_| "not a duration such as 500ms, 30s or 5m".into())
        }
        VarFormat::Email => {
            if is_email(value) {
                Ok(())
            } else {
                Err("not an email address".into())
            }
        }
    }
}

/// What a format looks like, for "expected".
pub fn describe(format: VarFormat) -> &'static str {
    match format {
        VarFormat::Url => "a URL such as https://host/path or postgresql://user@host:5432/db",
        VarFormat::Int => "a whole number",
        VarFormat::Port => "a port number from 1 to 65535",
        VarFormat::Bool => "a boolean (true/false, 1/0, yes/no, on/off)",
        VarFormat::Duration => "a duration such as 500ms, 30s or 5m",
        VarFormat::Email => "an email address such as ops@example.com",
    }
}

/// An absolute URL with a scheme and a host: `scheme://[userinfo@]host[:port][/path][?query]`.
fn check_url(value: &str) -> Result<(), String> {
    let (scheme, rest) = value.split_once("://").ok_or_else(|| "not a URL: it has no scheme:// part".to_owned())?;
    let scheme_ok = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err("not a URL: the scheme is not valid".into());
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("not a URL: it contains white space".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (ip, after) = bracketed.split_once(']').ok_or_else(|| "not a URL: unclosed `[` in the host".to_owned())?;
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("not a URL: the bracketed host is not an IPv6 address".into());
        }
        check_port(after.strip_prefix(':'))?;
        return Ok(());
    } else {
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        };
        check_port(port)?;
        host
    };
    // `sqlite:///path` style URLs have no host; everything else needs one.
    if host.is_empty() && !matches!(scheme, "file" | "sqlite" | "unix") {
        return Err("not a URL: it has no host".into());
    }
    if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '%')) {
        return Err("not a URL: the host has characters a host name cannot have".into());
    }
    Ok(())
}

fn check_port(port: Option<&str>) -> Result<(), String> {
    match port {
        None | Some("") => Ok(()),
        Some(port) => match port.parse::<u32>() {
            Ok(1..=65535) => Ok(()),
            _ => Err("not a URL: the port is not a number from 1 to 65535".into()),
        },
    }
}

/// `local@domain.tld`, the shape every mail system accepts; no comments or quoted locals.
pub fn is_email(value: &str) -> bool {
    let Some((local, domain)) = value.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.');
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
        });
    local_ok && domain_ok
}

/// An IP address or a CIDR block (`10.0.0.0/8`, `::1/128`).
pub fn is_cidr(value: &str) -> bool {
    let (address, prefix) = value.split_once('/').unwrap_or((value, ""));
    match address.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            prefix.is_empty() || prefix.parse::<u8>().is_ok_and(|p| p <= max)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for good in [
            "https://api.maily.localhost/health",
            "postgresql://maily:pw@127.0.0.1:5432/maily",
            "redis://localhost:6379/0",
            "http://[::1]:8080/",
            "sqlite:///var/lib/app.db",
        ] {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
        for bad in ["not a url", "localhost:5432", "http://", "http://host:99999/", "http://ho st/", "1http://x"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_ports_bools() {
        assert!(is_email("ops@maily.example"));
        assert!(!is_email("ops@localhost"));
        assert!(!is_email("@maily.example"));
        assert!(check(VarFormat::Port, "8080").is_ok());
        assert!(check(VarFormat::Port, "0").is_err());
        assert!(check(VarFormat::Port, "http").is_err());
        assert!(check(VarFormat::Bool, "Yes").is_ok());
        assert!(check(VarFormat::Bool, "maybe").is_err());
        assert!(check(VarFormat::Duration, "30s").is_ok());
        assert!(check(VarFormat::Int, "12a").is_err());
    }

    #[test]
    fn errors_never_quote_the_value() {
        let secret = "sk-live-0123456789abcdef";
        for format in
            [VarFormat::Url, VarFormat::Int, VarFormat::Port, VarFormat::Bool, VarFormat::Duration, VarFormat::Email]
        {
            if let Err(message) = check(format, secret) {
                assert!(!message.to_string().contains("sk-live"), "{message}");
            }
        }
    }

    #[test]
    fn cidrs() {
        assert!(is_cidr("127.0.0.1/32"));
        assert!(is_cidr("::1"));
        assert!(!is_cidr("127.0.0.1/33"));
        assert!(!is_cidr("example.com"));
    }
}
