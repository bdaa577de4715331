//! Observability: log set-up ([`logging`]), Prometheus metrics ([`metrics`]) and the HTTP health and
//! metrics server ([`health`]). Nothing here ever records a secret value or token.

pub mod health;
pub mod logging;
pub mod metrics;
