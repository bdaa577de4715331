//! Retries of one backend call within a mount's deadline, with jittered exponential backoff: used by
//! the backends whose calls are reads or otherwise safe to repeat (AWS, GCP).

use std::time::Duration;

use tokio::time::Instant;

/// Attempts of one call (the first and its retries).
pub const ATTEMPTS: u32 = 5;
/// The first retry's backoff; each further one doubles it (full jitter).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// How a failed backend call failed (AWS and GCP alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Throttling (429, `ThrottlingException`, `RESOURCE_EXHAUSTED`).
    Throttled,
    /// A 5xx answer, or one that is not what the API documents.
    Server,
    /// No answer: connection refused, reset, or timed out.
    Unreachable,
    /// A 4xx answer (not throttling): final.
    Client,
}

impl FailureClass {
    /// The `outcome` label of `openclaw_provider_backend_requests_total`.
    pub fn outcome(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::Server => "5xx",
            Self::Unreachable => "unreachable",
            Self::Client => "4xx",
        }
    }
}

/// A failed attempt, as the retry loop sees it.
pub trait Retried: Sized {
    /// Whether the call may succeed if made again (throttling, a server error, no answer).
    fn is_retried(&self) -> bool;
    /// The failure of an attempt the deadline cut short.
    fn no_answer_in_time() -> Self;
    /// How long the backend asked to wait (`Retry-After`), if it did.
    fn wait_asked(&self) -> Option<Duration> {
        None
    }
}

/// Makes `attempt` until it succeeds, fails for good, or the deadline leaves no room for a retry.
pub async fn with_retries<T, E, F, Fut>(deadline: Instant, mut attempt: F) -> Result<T, E>
where
    E: Retried,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        let result = match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(result) => result,
            Err(_) => Err(E::no_answer_in_time()),
        };
        let failure = match result {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        let backoff = jittered(FIRST_BACKOFF * 2u32.pow(tries - 1))
            .max(failure.wait_asked().unwrap_or_default());
        if !failure.is_retried() || tries >= ATTEMPTS || Instant::now() + backoff >= deadline {
            return Err(failure);
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Full jitter: a random share of `ceiling` (at least a tenth of it).
pub fn jittered(ceiling: Duration) -> Duration {
    let mut byte = [0u8; 2];
    let share = if getrandom::fill(&mut byte).is_ok() {
        f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX)
    } else {
        0.5
    };
    ceiling.mul_f64(0.1 + 0.9 * share)
}
