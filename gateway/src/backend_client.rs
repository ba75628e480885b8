//! The gateway's side of the Unix socket: a tonic client speaking KServe v2 gRPC over
//! one multiplexed HTTP/2 connection, re-established lazily when the backend restarts.

use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use tonic::transport::{Channel, Endpoint};
use warden_shared::proto::grpc_inference_service_client::GrpcInferenceServiceClient;

/// A cheap-to-clone handle on the backend.
pub type BackendClient = GrpcInferenceServiceClient<Channel>;

/// Makes a client for the socket at `path`. It connects on first use.
pub fn connect_lazy(path: PathBuf) -> BackendClient {
    // The URI is required by the API and ignored: the connector below dials the socket.
    let endpoint = Endpoint::from_static("http://backend.warden.invalid")
        .connect_timeout(std::time::Duration::from_secs(2))
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .initial_stream_window_size(warden_shared::wire::SOCKET_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(warden_shared::wire::SOCKET_CONNECTION_WINDOW_BYTES)
        .max_frame_size(warden_shared::wire::SOCKET_MAX_FRAME_BYTES);
    let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
        let path = path.clone();
        async move {
            tokio::net::UnixStream::connect(path)
                .await
                .map(TokioIo::new)
        }
    }));
    GrpcInferenceServiceClient::new(channel)
        .max_decoding_message_size(warden_shared::wire::MAX_SOCKET_MESSAGE_BYTES)
        .max_encoding_message_size(warden_shared::wire::MAX_SOCKET_MESSAGE_BYTES)
}

/// Wraps a message for the backend with the verified principal and request id. Nothing
/// of the client's own metadata crosses the socket, so no client can pose as the
/// gateway's `x-warden-*` fields.
pub fn backend_request<T>(
    message: T,
    principal: Option<&crate::auth::Principal>,
    request_id: &str,
) -> tonic::Request<T> {
    use tonic::metadata::MetadataValue;
    use warden_shared::wire;
    let mut r = tonic::Request::new(message);
    let md = r.metadata_mut();
    if let Some(v) = principal.and_then(|p| MetadataValue::try_from(p.display_name()).ok()) {
        md.insert(wire::PRINCIPAL_HEADER, v);
    }
    if let Ok(v) = MetadataValue::try_from(request_id) {
        md.insert(wire::REQUEST_ID_HEADER, v);
    }
    md.insert(
        wire::PROTOCOL_HEADER,
        MetadataValue::from_static(wire::SOCKET_PROTOCOL_VERSION),
    );
    r
}
