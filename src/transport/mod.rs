//! The driver-facing transport: the Unix socket ([`socket`]) and the HTTP/2 `:authority` compatibility
//! layer every accepted connection goes through ([`authority`]). Knows nothing about backends.

pub mod authority;
pub mod hpack;
pub mod socket;

use tokio::net::UnixStream;
use tonic::transport::server::Connected;

pub use authority::AuthorityRewrite;

/// An accepted driver connection, ready for the gRPC server.
pub type DriverConnection = AuthorityRewrite<UnixStream>;

impl Connected for AuthorityRewrite<UnixStream> {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}
