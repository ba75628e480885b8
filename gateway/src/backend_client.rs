//! The gateway's side of the Unix socket: a tonic client speaking KServe v2 gRPC over
//! one multiplexed HTTP/2 connection, re-established lazily when the backend restarts,
//! and, for `ModelInfer` alone, a pool of framed connections
//! ([`warden_shared::frames`]).

use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use tonic::transport::{Channel, Endpoint};
use warden_shared::backend_proto::backend_gauges_client::BackendGaugesClient;
use warden_shared::frames;
use warden_shared::proto::grpc_inference_service_client::GrpcInferenceServiceClient;

/// A cheap-to-clone handle on the backend.
pub type BackendClient = GrpcInferenceServiceClient<Channel>;
/// The backend's gauges service, on the same connection.
pub type GaugesClient = BackendGaugesClient<Channel>;

/// Makes the clients for the socket at `path`, the gRPC ones sharing one connection
/// made on first use.
pub fn connect_lazy(path: PathBuf) -> Clients {
    let frames = Frames::new(path.clone());
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
    Clients {
        kserve,
        gauges: BackendGaugesClient::new(channel),
        frames,
    }
}

/// Every client of the backend's socket.
pub struct Clients {
    pub kserve: BackendClient,
    pub gauges: GaugesClient,
    pub frames: Frames,
}

/// Idle framed connections kept for the next calls; more are opened when more calls
/// run at once, and closed after their call.
const MAX_IDLE_FRAMED: usize = 64;
/// Framed calls at once, each on a connection of its own; a call past it waits for one
/// to end (its deadline still applies). Far above what a backend runs at once (its
/// infer requests and queue answer the rest with "busy"), and far below the
/// descriptors either process may hold ([`crate::privilege::SPARE_FILES`], the
/// backend's 4096), so no burst of calls can take the descriptors the backend's other
/// connections need.
pub const MAX_FRAMED_CALLS: usize = 512;

/// The pool of framed connections that carry `ModelInfer`.
pub struct Frames {
    path: PathBuf,
    idle: std::sync::Mutex<Vec<Framed>>,
    calls: tokio::sync::Semaphore,
}

/// One framed connection and what it has read past the last answer (nothing, between
/// calls).
struct Framed {
    stream: tokio::net::UnixStream,
    buf: bytes::BytesMut,
}

impl Frames {
    pub fn new(path: PathBuf) -> Frames {
        Frames::bounded(path, MAX_FRAMED_CALLS)
    }

    fn bounded(path: PathBuf, calls: usize) -> Frames {
        Frames {
            path,
            idle: Default::default(),
            calls: tokio::sync::Semaphore::new(calls),
        }
    }

    /// Runs one inference on the backend as `principal`. A connection whose call is
    /// dropped half way (the client went away, a deadline passed) is closed, never
    /// reused, so the backend drops the call too.
    pub async fn infer(
        &self,
        principal: Option<&crate::auth::Principal>,
        request_id: &str,
        request: &warden_shared::proto::ModelInferRequest,
    ) -> Result<frames::Answer, tonic::Status> {
        let principal = principal.map(|p| p.display_name()).unwrap_or_default();
        // Never closed, so acquiring only waits.
        let _permit = (self.calls.acquire().await)
            .map_err(|_| tonic::Status::unavailable("backend unavailable"))?;
        let (mut conn, mut out) = match self.take() {
            Some(conn) => (conn, Vec::new()),
            None => (self.connect().await?, frames::MAGIC.to_vec()),
        };
        frames::encode_call(&mut out, &principal, request_id, request)
            .ok_or_else(|| tonic::Status::invalid_argument("request too large for the socket"))?;
        let answer = conn.call(&out).await.map_err(|e| {
            tracing::warn!(error = %e, "backend socket call failed");
            tonic::Status::unavailable("backend unavailable")
        })?;
        self.put(conn);
        answer
    }

    /// An idle connection the backend has not closed (it does, when it restarts).
    fn take(&self) -> Option<Framed> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(conn) = idle.pop() {
            let mut probe = [0u8; 1];
            match conn.stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(conn),
                // Closed, or a byte no call asked for: not reused.
                _ => continue,
            }
        }
        None
    }

    fn put(&self, conn: Framed) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_FRAMED {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<Framed, tonic::Status> {
        let connect = tokio::net::UnixStream::connect(&self.path);
        match tokio::time::timeout(std::time::Duration::from_secs(2), connect).await {
            Ok(Ok(stream)) => Ok(Framed {
                stream,
                buf: bytes::BytesMut::new(),
            }),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "backend socket connect failed");
                Err(tonic::Status::unavailable("backend unavailable"))
            }
            Err(_) => Err(tonic::Status::unavailable("backend connect timed out")),
        }
    }
}

impl Framed {
    /// Writes one call and reads its answer.
    async fn call(&mut self, out: &[u8]) -> std::io::Result<Result<frames::Answer, tonic::Status>> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(out).await?;
        let payload = frames::read_frame(
            &mut self.stream,
            &mut self.buf,
            warden_shared::wire::MAX_SOCKET_MESSAGE_BYTES,
        )
        .await?
        .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        if !self.buf.is_empty() {
            return Err(frames::Malformed("bytes after the answer").into());
        }
        Ok(frames::decode_answer(payload)?)
    }
}

/// What the backend measured of one inference, from its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Waiting for a free infer request (`ovms_wait_for_infer_req_time_us`).
    pub wait_us: u64,
    /// OpenVINO's inference call (`ovms_inference_time_us`).
    pub inference_us: u64,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tonic::Code;
    use warden_shared::proto::{ModelInferRequest, ModelInferResponse};

    /// A backend on a real Unix socket, serving framed calls with the backend's own
    /// server loop: it echoes the model name and the caller's names back, and counts the
    /// connections it accepted and the calls that ran to the end.
    #[derive(Default)]
    struct Backend {
        accepted: AtomicUsize,
        finished: AtomicUsize,
        /// Calls running now, and the most that ran at once.
        running: AtomicUsize,
        most: AtomicUsize,
        delay: Duration,
    }

    impl frames::Infer for Backend {
        async fn infer(&self, call: frames::Call) -> Result<frames::Answer, tonic::Status> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.finished.fetch_add(1, Ordering::SeqCst);
            if call.request.model_name == "missing" {
                return Err(tonic::Status::not_found("model \"missing\" is not served"));
            }
            Ok(frames::Answer {
                response: ModelInferResponse {
                    model_name: call.request.model_name,
                    id: format!("{} {}", call.principal, call.request_id),
                    ..Default::default()
                },
                wait_us: 3,
                inference_us: 5,
            })
        }
    }

    impl Backend {
        /// A backend whose every call takes `delay`.
        fn taking(delay: Duration) -> Arc<Backend> {
            Arc::new(Backend {
                delay,
                ..Default::default()
            })
        }
    }

    /// `n` calls started at once (request ids 0..n), their answers in that order.
    async fn at_once(pool: &Arc<Frames>, n: usize) -> Vec<Result<frames::Answer, tonic::Status>> {
        let calls: Vec<_> = (0..n)
            .map(|i| {
                let pool = Arc::clone(pool);
                tokio::spawn(async move { pool.infer(None, &i.to_string(), &request("m")).await })
            })
            .collect();
        let mut answers = Vec::with_capacity(n);
        for c in calls {
            answers.push(c.await.unwrap());
        }
        answers
    }

    fn socket(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("warden-frames-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("backend.sock")
    }

    /// Serves `backend` on `path` until the returned task is aborted; aborting it
    /// closes every connection it accepted, as a backend that exits does.
    fn start(path: &PathBuf, backend: &Arc<Backend>) -> tokio::task::JoinHandle<()> {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let backend = Arc::clone(backend);
        tokio::spawn(async move {
            let mut served = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                backend.accepted.fetch_add(1, Ordering::SeqCst);
                let (grpc, _) = tokio::sync::mpsc::channel(1);
                let backend = Arc::clone(&backend);
                served.spawn(async move { frames::route(stream, &grpc, backend).await });
            }
        })
    }

    fn request(model: &str) -> ModelInferRequest {
        ModelInferRequest {
            model_name: model.into(),
            ..Default::default()
        }
    }

    fn alice() -> crate::auth::Principal {
        crate::auth::Principal {
            method: crate::auth::Method::Jwt,
            subject: "alice".into(),
            issuer: "iss".into(),
            key_id: None,
            jti_hash: None,
            scopes: vec![],
            groups: vec![],
            certificate: None,
        }
    }

    #[tokio::test]
    async fn calls_in_turn_share_one_connection_and_carry_the_callers_names() {
        let path = socket("reuse");
        let backend = Arc::new(Backend::default());
        let _server = start(&path, &backend);
        let frames = Frames::new(path);
        for i in 0..3 {
            let a = frames
                .infer(Some(&alice()), &format!("r{i}"), &request("m"))
                .await
                .unwrap();
            assert_eq!(a.response.id, format!("alice (iss) r{i}"));
            assert_eq!((a.wait_us, a.inference_us), (3, 5));
        }
        let a = frames.infer(None, "r9", &request("m")).await.unwrap();
        assert_eq!(a.response.id, " r9", "no principal: an empty one");
        // An error answer is a clean end of the call: the connection is kept.
        let e = frames
            .infer(None, "r10", &request("missing"))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::NotFound, "model \"missing\" is not served")
        );
        frames.infer(None, "r11", &request("m")).await.unwrap();
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn calls_at_once_each_get_a_connection_and_at_most_the_bound_stay_idle() {
        let path = socket("many");
        let backend = Backend::taking(Duration::from_millis(200));
        let _server = start(&path, &backend);
        let frames = Arc::new(Frames::new(path));
        let n = MAX_IDLE_FRAMED + 6;
        for (i, answer) in at_once(&frames, n).await.into_iter().enumerate() {
            assert_eq!(answer.unwrap().response.id, format!(" {i}"));
        }
        assert_eq!(backend.accepted.load(Ordering::SeqCst), n);
        assert_eq!(frames.idle.lock().unwrap().len(), MAX_IDLE_FRAMED);
    }

    #[tokio::test]
    async fn calls_past_the_bound_wait_for_a_connection_instead_of_opening_one() {
        let path = socket("bound");
        let backend = Backend::taking(Duration::from_millis(100));
        let _server = start(&path, &backend);
        let frames = Arc::new(Frames::bounded(path, 2));
        for answer in at_once(&frames, 6).await {
            answer.unwrap();
        }
        assert_eq!(backend.finished.load(Ordering::SeqCst), 6);
        assert_eq!(
            backend.accepted.load(Ordering::SeqCst),
            2,
            "two connections, reused"
        );
        assert_eq!(
            backend.most.load(Ordering::SeqCst),
            2,
            "never more than two calls at once"
        );
    }

    #[tokio::test]
    async fn after_a_backend_restart_the_next_call_opens_a_new_connection() {
        let path = socket("restart");
        let backend = Arc::new(Backend::default());
        let server = start(&path, &backend);
        let frames = Frames::new(path.clone());
        frames.infer(None, "before", &request("m")).await.unwrap();
        server.abort();
        let _ = server.await;
        let restarted = Arc::new(Backend::default());
        let _server = start(&path, &restarted);
        // The idle connection is closed now; the call does not fail on it.
        let a = frames.infer(None, "after", &request("m")).await.unwrap();
        assert_eq!(a.response.id, " after");
        assert_eq!(restarted.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_call_dropped_half_way_closes_its_connection_and_the_backend_drops_it_too() {
        let path = socket("dropped");
        let backend = Backend::taking(Duration::from_millis(300));
        let _server = start(&path, &backend);
        let frames = Frames::new(path);
        let cut = tokio::time::timeout(
            Duration::from_millis(50),
            frames.infer(None, "r", &request("m")),
        )
        .await;
        assert!(cut.is_err(), "the deadline passed first");
        assert!(
            frames.idle.lock().unwrap().is_empty(),
            "the connection is not reused"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            backend.finished.load(Ordering::SeqCst),
            0,
            "the backend dropped the call"
        );
        frames.infer(None, "r2", &request("m")).await.unwrap();
        assert_eq!(backend.accepted.load(Ordering::SeqCst), 2);
    }

    /// Open framed connections (calls running plus idle ones) fit in the descriptors
    /// the gateway keeps beyond its client connections, with room for the rest.
    #[test]
    fn framed_connections_fit_the_spare_descriptors() {
        let most = (MAX_FRAMED_CALLS + MAX_IDLE_FRAMED) as u64;
        assert!(most <= crate::privilege::SPARE_FILES * 3 / 4, "{most}");
    }

    #[tokio::test]
    async fn no_backend_is_unavailable() {
        let frames = Frames::new(socket("none"));
        let e = frames.infer(None, "r", &request("m")).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(
            !e.message().contains("warden-frames"),
            "no path in the message: {e:?}"
        );
    }
}
