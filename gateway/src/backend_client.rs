//! The gateway's side of the Unix socket: a tonic client speaking KServe v2 gRPC over
//! one multiplexed HTTP/2 connection, re-established lazily when the backend restarts.

use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use tonic::transport::{Channel, Endpoint};
use warden_shared::backend_proto::backend_gauges_client::BackendGaugesClient;
use warden_shared::proto::grpc_inference_service_client::GrpcInferenceServiceClient;

/// A cheap-to-clone handle on the backend.
pub type BackendClient = GrpcInferenceServiceClient<Channel>;
/// The backend's gauges service, on the same connection.
pub type GaugesClient = BackendGaugesClient<Channel>;

/// Makes the clients for the socket at `path`, sharing one connection made on first
/// use.
pub fn connect_lazy(path: PathBuf) -> (BackendClient, GaugesClient) {
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
    let kserve = GrpcInferenceServiceClient::new(channel.clone())
        .max_decoding_message_size(warden_shared::wire::MAX_SOCKET_MESSAGE_BYTES)
        .max_encoding_message_size(warden_shared::wire::MAX_SOCKET_MESSAGE_BYTES);
    (kserve, BackendGaugesClient::new(channel))
}

/// What the backend measured of one inference, from its answer's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Waiting for a free infer request (`ovms_wait_for_infer_req_time_us`).
    pub wait_us: u64,
    /// OpenVINO's inference call (`ovms_inference_time_us`).
    pub inference_us: u64,
}

impl Timing {
    /// `None` when the answer does not carry both (a backend of another version).
    pub fn read(md: &tonic::metadata::MetadataMap) -> Option<Timing> {
        use warden_shared::wire;
        let us = |key: &str| md.get(key)?.to_str().ok()?.parse::<u64>().ok();
        Some(Timing {
            wait_us: us(wire::WAIT_US_HEADER)?,
            inference_us: us(wire::INFERENCE_US_HEADER)?,
        })
    }
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
