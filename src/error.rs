//! The error every Mount step returns: a kind (mapped to a gRPC status code by the service), a short
//! CamelCase reason (for metrics and `Error.code`-style reporting) and a message a user can act on.
//!
//! Messages are written by this crate only; they name parameters, paths and keys, never values or tokens.

use std::fmt;

/// What went wrong, in the terms of the gRPC status codes the driver shows to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    DeadlineExceeded,
    ResourceExhausted,
    FailedPrecondition,
    Internal,
}

/// A failed Mount step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MountError {
    pub kind: ErrorKind,
    /// Short CamelCase reason, e.g. `InvalidParameter`; low cardinality, safe as a metric label.
    pub reason: &'static str,
    pub message: String,
}

impl MountError {
    pub fn new(kind: ErrorKind, reason: &'static str, message: impl fmt::Display) -> Self {
        Self {
            kind,
            reason,
            message: message.to_string(),
        }
    }

    pub fn invalid(reason: &'static str, message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::InvalidArgument, reason, message)
    }

    pub fn not_found(reason: &'static str, message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, reason, message)
    }

    pub fn exhausted(reason: &'static str, message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::ResourceExhausted, reason, message)
    }

    pub fn internal(reason: &'static str, message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Internal, reason, message)
    }
}

/// Shorthand for results of Mount steps.
pub type MountResult<T> = Result<T, MountError>;
