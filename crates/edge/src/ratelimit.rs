//! Token buckets: per route (all clients) and per client IP. A refused request gets 429 with
//! `Retry-After` saying when a token will be there.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// Takes a token; or says how many seconds until one is there.
    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), f64> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - self.tokens) / rate)
        }
    }
}

/// Clients idle this long lose their bucket (it would be full again anyway).
const IDLE_CLIENT_SECS: f64 = 60.0;
const MAX_CLIENTS_BEFORE_SWEEP: usize = 10_000;
/// The longest `Retry-After` the edge says: a day.
pub const MAX_RETRY_AFTER_SECS: u64 = 86_400;

#[derive(Debug)]
pub struct RateLimiter {
    per_client: Option<(f64, f64)>,
    per_route: Option<(f64, f64)>,
    route: Mutex<Option<Bucket>>,
    clients: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// Rates in requests per second; `burst` defaults to one second's worth (at least 1).
    pub fn new(per_client: Option<f64>, per_route: Option<f64>, burst: Option<u32>) -> Self {
        let with_burst = |rate: f64| (rate, burst.map_or(rate.max(1.0), f64::from));
        RateLimiter {
            per_client: per_client.filter(|r| *r > 0.0).map(with_burst),
            per_route: per_route.filter(|r| *r > 0.0).map(with_burst),
            route: Mutex::new(None),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a request, or returns the seconds until the client may retry.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        // The spec's check keeps rates where this is a few hours at most; clamped anyway so
        // that no rate can ever make `Retry-After` absurd (1e-300/s once gave u64::MAX).
        let retry = |seconds: f64| {
            if seconds.is_finite() {
                seconds.ceil().clamp(1.0, MAX_RETRY_AFTER_SECS as f64) as u64
            } else {
                MAX_RETRY_AFTER_SECS
            }
        };
        if let Some((rate, burst)) = self.per_route
            && let Ok(mut route) = self.route.lock()
        {
            let bucket = route.get_or_insert(Bucket { tokens: burst, updated: now });
            bucket.take(rate, burst, now).map_err(retry)?;
        }
        if let Some((rate, burst)) = self.per_client
            && let Ok(mut clients) = self.clients.lock()
        {
            if clients.len() > MAX_CLIENTS_BEFORE_SWEEP {
                clients.retain(|_, b| now.saturating_duration_since(b.updated).as_secs_f64() < IDLE_CLIENT_SECS);
            }
            let bucket = clients.entry(client).or_insert(Bucket { tokens: burst, updated: now });
            bucket.take(rate, burst, now).map_err(retry)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_client_gets_its_burst_then_waits() {
        let limiter = RateLimiter::new(Some(2.0), None, Some(3));
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check(a, start), Ok(()));
        }
        assert_eq!(limiter.check(a, start), Err(1));
        assert_eq!(limiter.check(b, start), Ok(()), "other clients have their own bucket");
        assert_eq!(limiter.check(a, start + Duration::from_millis(500)), Ok(()), "a token every 0.5 s");
    }

    #[test]
    fn retry_after_is_clamped_whatever_the_rate() {
        let now = Instant::now();
        let client: IpAddr = "127.0.0.1".parse().unwrap();
        for rate in [1e-300, f64::MIN_POSITIVE, 1e-9] {
            let limiter = RateLimiter::new(Some(rate), None, Some(1));
            assert_eq!(limiter.check(client, now), Ok(()));
            assert_eq!(limiter.check(client, now), Err(MAX_RETRY_AFTER_SECS), "rate {rate}");
        }
    }

    #[test]
    fn the_route_limit_covers_all_clients() {
        let limiter = RateLimiter::new(None, Some(1.0), Some(1));
        let now = Instant::now();
        assert!(limiter.check("127.0.0.1".parse().unwrap(), now).is_ok());
        assert!(limiter.check("127.0.0.2".parse().unwrap(), now).is_err());
    }
}
