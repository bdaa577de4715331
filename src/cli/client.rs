//! A gRPC client for a provider socket, dialled the way drivers from v1.6.0 do (`:authority` localhost).

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

use crate::proto::csi_driver_provider_client::CsiDriverProviderClient;

/// Connects to the provider listening on `socket`.
pub async fn connect(
    socket: PathBuf,
) -> Result<CsiDriverProviderClient<Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await?;
    Ok(CsiDriverProviderClient::new(channel))
}
