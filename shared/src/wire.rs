//! The gateway ↔ backend protocol.
//!
//! The socket carries the KServe v2 gRPC service itself (HTTP/2 over a Unix socket), so
//! there is one schema for the network and for the hop; `ModelInfer`, the one call made
//! per client request, crosses in lean frames of the same messages instead
//! ([`crate::frames`]). What only the gateway may say travels in metadata with a
//! `x-warden-` prefix (in a frame, in its own fields); the gateway sets these from
//! verified state and strips any client-supplied header with that prefix before
//! forwarding.

/// The verified principal the request runs as (`sub@issuer` or a certificate identity).
pub const PRINCIPAL_HEADER: &str = "x-warden-principal";
/// The gateway's request id, for correlating backend logs with audit records.
pub const REQUEST_ID_HEADER: &str = "x-warden-request-id";
/// Every header with this prefix is owned by the gateway.
pub const RESERVED_PREFIX: &str = "x-warden-";

/// Largest message the backend accepts or sends over the socket. The gateway enforces
/// its own, smaller, client-facing caps first; this bounds a misbehaving peer.
pub const MAX_SOCKET_MESSAGE_BYTES: usize = 1 << 30;

/// Protocol version spoken on the socket; bumped on any incompatible change.
pub const SOCKET_PROTOCOL_VERSION: &str = "warden-socket/1";
/// Metadata key carrying [`SOCKET_PROTOCOL_VERSION`].
pub const PROTOCOL_HEADER: &str = "x-warden-protocol";

/// HTTP/2 settings of the socket, both ends. The hop is local and the gateway has
/// already bounded what it forwards (body caps, memory quota), so flow control here only
/// adds round trips: a 600 KB tensor on the 64 KiB default window waits for ten
/// WINDOW_UPDATEs, each a wake-up of the other process. Big windows and frames let a
/// request cross in one write.
pub const SOCKET_STREAM_WINDOW_BYTES: u32 = 16 << 20;
/// Connection-level window of the socket (all streams).
pub const SOCKET_CONNECTION_WINDOW_BYTES: u32 = 64 << 20;
/// Largest HTTP/2 frame on the socket (the protocol's maximum is 16 MiB - 1).
pub const SOCKET_MAX_FRAME_BYTES: u32 = (1 << 20) - 1;

/// Response metadata of a backend `ModelInfer`: microseconds the request waited for a
/// free infer request (OVMS `ovms_wait_for_infer_req_time_us`).
pub const WAIT_US_HEADER: &str = "x-warden-wait-us";
/// Response metadata of a backend `ModelInfer`: microseconds OpenVINO spent in the
/// inference call itself (OVMS `ovms_inference_time_us`).
pub const INFERENCE_US_HEADER: &str = "x-warden-inference-us";
/// Environment variable the supervisor sets on a backend it starts: how many times it
/// restarted the backend before (reported by the gauges service).
pub const BACKEND_RESTARTS_ENV: &str = "WARDEN_BACKEND_RESTARTS";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitsConfig;

    /// The socket never refuses what the gateway admitted: its cap is above every
    /// client-facing cap the gateway enforces first (request body, gRPC message).
    #[test]
    fn the_socket_carries_whatever_the_gateway_admits() {
        let l = LimitsConfig::default();
        assert!(MAX_SOCKET_MESSAGE_BYTES >= l.max_body_bytes);
        assert!(MAX_SOCKET_MESSAGE_BYTES >= l.max_grpc_message_bytes);
    }

    /// The socket's HTTP/2 settings are legal (RFC 9113 §6.5.2: a frame size between
    /// 2^14 and 2^24 - 1, a window under 2^31) and every window holds a whole frame, so
    /// neither end waits for a WINDOW_UPDATE in the middle of one.
    #[test]
    fn socket_http2_settings_are_legal_and_windows_hold_a_frame() {
        assert!((1 << 14..=(1 << 24) - 1).contains(&SOCKET_MAX_FRAME_BYTES));
        assert!(SOCKET_STREAM_WINDOW_BYTES >= SOCKET_MAX_FRAME_BYTES);
        assert!(SOCKET_STREAM_WINDOW_BYTES < 1 << 31);
        assert!(SOCKET_CONNECTION_WINDOW_BYTES >= SOCKET_STREAM_WINDOW_BYTES);
        assert!(SOCKET_CONNECTION_WINDOW_BYTES < 1 << 31);
    }
}
