//! Values with units, parsed once where the config is read: `"500ms"`, `"99.9%"`, `"64KiB"`,
//! `"100/s"`. Everything downstream works with these types, never with the strings.

use std::fmt;

/// A non-negative span of time written as `"500ms"`, `"30s"`, `"1m30s"`, `"2h"` or `"1d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

/// The longest duration a config (or the API) may say: 100 years. Every duration is added to
/// a time somewhere (a warm color's retirement, a silence's end, a deadline), and the sums must
/// stay far inside what `jiff` timestamps, `Instant`s and milliseconds in an `i64` hold; no
/// real setting comes near it. Checked here, where every duration is parsed, so each field of
/// the config is bounded with its file:line and none needs a bound of its own.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    pub const fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }

    pub fn as_std(self) -> std::time::Duration {
        self.0
    }

    /// Parses `<number><unit>` repeated (`1h30m`); units: ms, s, m, h, d.
    pub fn parse(text: &str) -> Result<Self, crate::InvalidValue> {
        let text = text.trim();
        if text.is_empty() {
            return Err("an empty string is not a duration".into());
        }
        let mut total_ms: u128 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!("`{text}` must start each part with a number, as in \"500ms\" or \"1m30s\"").into());
            }
            let number: u128 = rest[..digits].parse().map_err(|_| format!("`{text}` has a number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            let factor: u128 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "" => return Err(format!("`{text}` needs a unit (ms, s, m, h or d)").into()),
                other => return Err(format!("`{other}` is not a duration unit (ms, s, m, h or d)").into()),
            };
            total_ms = total_ms.saturating_add(number.saturating_mul(factor));
            rest = &rest[unit_len..];
        }
        if total_ms > MAX_DURATION.0.as_millis() {
            return Err(format!(
                "`{text}` is too long a duration: the longest Windlass takes is {MAX_DURATION} (100 years)"
            )
            .into());
        }
        let ms = u64::try_from(total_ms).map_err(|_| format!("`{text}` is too long a duration"))?;
        Ok(Self::from_millis(ms))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let units = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")];
        if ms == 0 {
            return f.write_str("0s");
        }
        let mut rest = ms;
        for (size, unit) in units {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        if rest > 0 {
            write!(f, "{rest}ms")?;
        }
        Ok(())
    }
}

/// A share written as `"99.9%"`, held exactly as parts per million (99.9% = 999_000 ppm), so that
/// targets such as 99.99% compare without floating-point surprises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Percent {
    ppm: u32,
}

impl Percent {
    pub const fn from_ppm(ppm: u32) -> Self {
        Self { ppm }
    }

    pub fn ppm(self) -> u32 {
        self.ppm
    }

    pub fn fraction(self) -> f64 {
        f64::from(self.ppm) / 1_000_000.0
    }

    /// Parses `"0.1%"` .. `"100%"`, at most four decimals.
    pub fn parse(text: &str) -> Result<Self, crate::InvalidValue> {
        let number =
            text.trim().strip_suffix('%').ok_or_else(|| format!("`{text}` needs a `%` sign, as in \"99.9%\""))?.trim();
        let (whole, decimals) = number.split_once('.').unwrap_or((number, ""));
        let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(decimals) {
            return Err(format!("`{text}` is not a percentage").into());
        }
        if decimals.len() > 4 {
            return Err(format!("`{text}` has more than four decimals").into());
        }
        let whole: u64 = whole.parse().map_err(|_| format!("`{text}` is not a percentage"))?;
        let scaled_decimals: u64 = format!("{decimals:0<4}").parse().unwrap_or(0);
        let ppm = whole * 10_000 + scaled_decimals;
        if ppm > 1_000_000 {
            return Err(format!("`{text}` is more than 100%").into());
        }
        Ok(Self { ppm: ppm as u32 })
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.ppm / 10_000;
        let decimals = self.ppm % 10_000;
        if decimals == 0 {
            write!(f, "{whole}%")
        } else {
            let decimals = format!("{decimals:04}");
            write!(f, "{whole}.{}%", decimals.trim_end_matches('0'))
        }
    }
}

/// A number of bytes written as `"512"`, `"64KiB"`, `"10MB"` or `"1GiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, crate::InvalidValue> {
        let text = text.trim();
        let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        if digits == 0 {
            return Err(format!("`{text}` must start with a number, as in \"64KiB\"").into());
        }
        let number: u64 = text[..digits].parse().map_err(|_| format!("`{text}` is too large"))?;
        let factor: u64 = match text[digits..].trim() {
            "" | "B" => 1,
            "KB" => 1_000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            other => return Err(format!("`{other}` is not a size unit (B, KB, KiB, MB, MiB, GB, GiB)").into()),
        };
        number.checked_mul(factor).map(Self).ok_or_else(|| format!("`{text}` is too large")).map_err(Into::into)
    }
}

/// A rate written as `"100/s"`, `"6000/m"` or `"10/h"`: so many events per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    pub fn parse(text: &str) -> Result<Self, crate::InvalidValue> {
        let (count, per) =
            text.trim().split_once('/').ok_or_else(|| format!("`{text}` is not a rate; write it as \"100/s\""))?;
        let count = count.trim();
        let count: u32 = count.parse().map_err(|_| {
            if !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()) {
                format!("`{count}` is too large a count: the largest is {}", u32::MAX)
            } else {
                format!("`{count}` is not a whole number")
            }
        })?;
        if count == 0 {
            return Err("a rate of 0 would refuse every request".into());
        }
        let per = match per.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => return Err(format!("`{other}` is not a rate period (s, m or h)").into()),
        };
        Ok(Self { count, per })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(Duration::parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(Duration::parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(Duration::parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(Duration::parse("1d").map(|d| d.to_string()), Ok("1d".into()));
        assert_eq!(Duration::from_millis(90_500).to_string(), "1m30s500ms");
        assert!(Duration::parse("5").unwrap_err().to_string().contains("needs a unit"));
        assert!(Duration::parse("5 minutes").unwrap_err().to_string().contains("not a duration unit"));
        assert!(Duration::parse("ms").unwrap_err().to_string().contains("start each part with a number"));
        assert!(Duration::parse("").is_err());
        assert!(Duration::parse("99999999999999999999d").is_err());
        // 100 years is the longest; a day more, or what overflowed at deploy time, is refused.
        assert_eq!(Duration::parse("36500d"), Ok(MAX_DURATION));
        for too_long in ["36501d", "36500d1ms", "106751991167d", "3000000d", "876001h"] {
            let problem = Duration::parse(too_long).unwrap_err().to_string();
            assert!(problem.contains(too_long) && problem.contains("longest Windlass takes is 36500d"), "{problem}");
        }
    }

    #[test]
    fn percentages_are_exact() {
        assert_eq!(Percent::parse("99.9%").map(Percent::ppm), Ok(999_000));
        assert_eq!(Percent::parse("0.1%").map(Percent::ppm), Ok(1_000));
        assert_eq!(Percent::parse("99.99%").map(|p| p.to_string()), Ok("99.99%".into()));
        assert_eq!(Percent::parse("100%").map(Percent::ppm), Ok(1_000_000));
        assert!(Percent::parse("101%").unwrap_err().to_string().contains("more than 100%"));
        assert!(Percent::parse("99.9").unwrap_err().to_string().contains("needs a `%`"));
        assert!(Percent::parse("-1%").is_err());
        assert!(Percent::parse("1.23456%").is_err());
    }

    #[test]
    fn sizes_and_rates() {
        assert_eq!(ByteSize::parse("64KiB"), Ok(ByteSize(65_536)));
        assert_eq!(ByteSize::parse("10MB"), Ok(ByteSize(10_000_000)));
        assert!(ByteSize::parse("10 parsecs").is_err());
        assert_eq!(Rate::parse("100/s").map(|r| r.count), Ok(100));
        assert!(Rate::parse("0/s").is_err());
        assert!(Rate::parse("100").is_err());
        let huge = Rate::parse("100000000000000/s").unwrap_err().to_string();
        assert!(huge.contains("`100000000000000` is too large") && huge.contains("4294967295"), "{huge}");
        assert!(Rate::parse("4294967295/s").is_ok());
        assert!(Rate::parse("ten/s").unwrap_err().to_string().contains("is not a whole number"));
    }
}
