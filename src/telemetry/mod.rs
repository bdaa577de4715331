//! Observability: log set-up ([`logging`]), Prometheus metrics ([`metrics`]), the HTTP health and
//! metrics server ([`health`]) and resident memory ([`memory`]). Nothing here ever records a secret value or token.

pub mod health;
pub mod logging;
pub mod memory;
pub mod metrics;
