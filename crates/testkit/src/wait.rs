//! The one `eventually` of the tests: checks a condition again and again until it holds, and
//! fails the test with what was awaited when it never does. The deadline only turns a hang into a
//! clear failure; no test asserts how long anything took.

use std::future::Future;
use std::time::{Duration, Instant};

/// What a check answers: `true`, or `Some(value)`, once what is awaited has happened.
pub trait Ready {
    type Value;
    fn ready(self) -> Option<Self::Value>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// How long to wait at most and how often to check.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    pub within: Duration,
    pub every: Duration,
}

impl Default for Wait {
    fn default() -> Self {
        Wait { within: Duration::from_secs(60), every: Duration::from_millis(20) }
    }
}

impl Wait {
    /// Checks every `every` (for checks that cost something, such as running the CLI).
    pub fn every(every: Duration) -> Self {
        Wait { every, ..Wait::default() }
    }

    /// Runs `check` until it is ready and returns its value; panics naming `what` after `within`.
    pub async fn until<R, F, Fut>(self, what: &str, mut check: F) -> R::Value
    where
        R: Ready,
        F: FnMut() -> Fut,
        Fut: Future<Output = R>,
    {
        let deadline = Instant::now() + self.within;
        loop {
            if let Some(value) = check().await.ready() {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(self.every).await;
        }
    }
}

/// [`Wait::until`] with the defaults: up to 60 s, checking every 20 ms.
pub async fn eventually<R, F, Fut>(what: &str, check: F) -> R::Value
where
    R: Ready,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    Wait::default().until(what, check).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_a_value_or_a_true_condition() {
        let mut calls = 0;
        let value = eventually("the third call", || {
            calls += 1;
            std::future::ready((calls == 3).then_some(calls))
        })
        .await;
        assert_eq!(value, 3);
        eventually("true", || async { true }).await;
    }

    #[tokio::test]
    #[should_panic(expected = "timed out waiting for never")]
    async fn a_condition_that_never_holds_fails_naming_it() {
        Wait { within: Duration::from_millis(50), every: Duration::from_millis(10) }
            .until("never", || async { false })
            .await;
    }
}
