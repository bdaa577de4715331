//! Backends fetch a mount's objects as the pod. Each one parses its own parameters from the typed
//! [`MountRequest`] and returns a [`MountResponse`]; none knows about gRPC.
//!
//! The parameter `backend` picks one; [`Backends::select`] refuses a missing or unknown name with the
//! list of valid ones.

pub mod file;
pub mod file_root;
pub mod objects;
#[cfg(feature = "vault")]
pub mod vault;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::{MountError, MountResult};
use crate::request::{BACKEND_PARAMETER, MountRequest};
use crate::response::MountResponse;

/// A boxed future, so backends can live behind `dyn Backend`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of secrets.
pub trait Backend: Send + Sync {
    /// The value of the `backend` parameter that picks this backend.
    fn name(&self) -> &'static str;

    /// Fetches every object the request names, all or nothing (objects marked optional may be skipped).
    fn mount<'a>(&'a self, request: &'a MountRequest) -> BoxFuture<'a, MountResult<MountResponse>>;
}

/// The backends this provider was built and started with.
#[derive(Clone, Default)]
pub struct Backends(Vec<Arc<dyn Backend>>);

impl Backends {
    pub fn new(backends: Vec<Arc<dyn Backend>>) -> Self {
        Self(backends)
    }

    /// The names `backend` may take.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|b| b.name()).collect()
    }

    /// A metric- and log-safe label for a request's backend: a known name, `unknown` or `none`.
    pub fn label(&self, request: Option<&MountRequest>) -> &'static str {
        match request.and_then(MountRequest::backend_name) {
            None => "none",
            Some(name) => self
                .0
                .iter()
                .map(|b| b.name())
                .find(|known| *known == name)
                .unwrap_or("unknown"),
        }
    }

    /// The backend the request picks.
    pub fn select(&self, request: &MountRequest) -> MountResult<&dyn Backend> {
        // Built only on the error paths: selection runs on every mount.
        let valid = || self.names().join(", ");
        let Some(name) = request.backend_name() else {
            return Err(MountError::invalid(
                "MissingBackend",
                format!(
                    "the SecretProviderClass has no parameter {BACKEND_PARAMETER:?}: set it to one of: {}",
                    valid()
                ),
            ));
        };
        self.0
            .iter()
            .find(|b| b.name() == name)
            .map(|b| b.as_ref())
            .ok_or_else(|| {
                let shown: String = name.chars().take(64).collect();
                MountError::invalid(
                    "UnknownBackend",
                    format!("unknown backend {shown:?}: valid backends are: {}", valid()),
                )
            })
    }
}
