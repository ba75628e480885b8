//! The one ordered path every call takes, whatever front it came in on (KServe REST
//! JSON, REST binary and gRPC; TensorFlow Serving REST and gRPC; any front added
//! later):
//!
//! 1. headers only: the front builds a [`Head`] (API, operation, model named in the
//!    path, token, deadline) without reading a body byte;
//! 2. authenticate (a failure is throttled per client IP);
//! 3. per-principal admission: the total and per-principal rate limits;
//! 4. authorize the model, version and operation, then check that the repository has
//!    them (a stranger cannot probe names), then spend the model's own rate budget;
//! 5. only then read the body, bounded by its cap and reserved against the caller's
//!    memory quota as it streams in (a front whose message names the model, as gRPC's
//!    does, runs step 4 on the message before decoding it);
//! 6. decode, with the memory the decoded form takes charged to the quota first (a
//!    format that needs the model's metadata to decode, as TFS's JSON does, gets it
//!    from the backend first);
//! 7. forward to the backend, which validates against the model's metadata;
//! 8. the front renders the answer; one audit record; metrics.
//!
//! The whole call runs under one deadline. A [`Codec`] turns its wire format into the
//! pipeline's request and the pipeline's outcome back into its wire format; it decides
//! nothing. Every refusal is a [`Refusal`], rendered by the front from the one table.
//!
//! INVARIANT: before step 2 succeeds, a caller costs a bounded amount of memory and CPU:
//! nothing of its body is read (beyond the bounded discard that lets its client read the
//! refusal, and a `grpc.health.v1` call's message of at most [`HEALTH_MESSAGE_BYTES`],
//! whose service name decides whether a credential is needed), nothing it names is
//! stored, logged or used as a label.

use crate::audit::Record;
use crate::auth::{self, Principal};
use crate::authz::Operation;
use crate::backend_client::Timing;
use crate::backend_client::backend_request;
use crate::catalog::Lookup;
use crate::limits::quota::Reservation;
use crate::metrics::{self, Tracked};
use crate::peer::ConnInfo;
use crate::refusal::{Decision, Refusal};
use crate::state::State;
use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden_shared::config::LimitsConfig;
use warden_shared::proto;

/// Most bytes of a refused request's body read and thrown away so that its client can
/// read the refusal (an HTTP/1.1 client still uploading sees a reset otherwise).
pub const REFUSAL_DISCARD_BYTES: usize = 4 << 20;
/// Most time spent discarding a refused request's body.
pub const REFUSAL_DISCARD_TIME: Duration = Duration::from_secs(2);
/// Label that stands for every model name the repository does not have.
pub const UNKNOWN_MODEL_LABEL: &str = "_unknown";

/// Which listener a call came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Rest,
    Grpc,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Rest => "rest",
            Listener::Grpc => "grpc",
        }
    }
    fn interface(self) -> &'static str {
        match self {
            Listener::Rest => "REST",
            Listener::Grpc => "gRPC",
        }
    }
}

/// Which API a call speaks (the `api` label of the OVMS request metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    KServe,
    /// The TensorFlow Serving API.
    Tfs,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::KServe => "KServe",
            Api::Tfs => "TensorFlowServing",
        }
    }
}

/// What a call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    ServerLive,
    ServerReady,
    ServerMetadata,
    ModelMetadata,
    ModelReady,
    ModelInfer,
    /// Triton: the model's configuration, built from its metadata.
    ModelConfig,
    /// Triton: statistics of a model, or, when none is named, of every model the
    /// caller may read statistics of.
    ModelStats,
    /// Triton: the repository's models and their states (admin).
    RepositoryIndex,
    /// Triton: load a model (admin; see `triton.repository_control`).
    RepositoryLoad,
    /// Triton: unload a model (admin; see `triton.repository_control`).
    RepositoryUnload,
    /// Triton: read (or ask to change) the log settings (admin).
    LogSettings,
    /// `grpc.health.v1.Health` Check or Watch; `model` once the service name read
    /// from the message names a model rather than the server.
    Health {
        watch: bool,
        model: bool,
    },
    /// gRPC server reflection: a bidirectional stream the front answers.
    Reflection,
}

/// What a call must be authorized for, beyond authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Nothing more (server metadata, authenticated server health).
    Server,
    /// An operation on the model named, which the repository must have.
    Model(Operation),
    /// An operation on the model named, if one is; none named: every model.
    ModelOrAll(Operation),
    /// An operation on the model named, which is never looked up in the repository
    /// (load and unload: the call is refused before that would matter).
    Named(Operation),
    /// An operation on the whole server ([`crate::authz::SERVER_WIDE`]).
    ServerWide(Operation),
}

impl Op {
    /// The method name in `api`, for metrics (as OVMS names them).
    pub fn method(self, api: Api) -> &'static str {
        if api == Api::Tfs {
            match self {
                Op::ModelMetadata => return "GetModelMetadata",
                Op::ModelReady => return "GetModelStatus",
                Op::ModelInfer => return "Predict",
                _ => {}
            }
        }
        match self {
            Op::ServerLive => "ServerLive",
            Op::ServerReady => "ServerReady",
            Op::ServerMetadata => "ServerMetadata",
            Op::ModelMetadata => "ModelMetadata",
            Op::ModelReady => "ModelReady",
            Op::ModelInfer => "ModelInfer",
            Op::ModelConfig => "ModelConfig",
            Op::ModelStats => "ModelStatistics",
            Op::RepositoryIndex => "RepositoryIndex",
            Op::RepositoryLoad => "RepositoryModelLoad",
            Op::RepositoryUnload => "RepositoryModelUnload",
            Op::LogSettings => "LogSettings",
            Op::Health { watch: false, .. } => "Check",
            Op::Health { watch: true, .. } => "Watch",
            Op::Reflection => "ServerReflectionInfo",
        }
    }

    /// What the call must be authorized for.
    pub fn scope(self) -> Scope {
        match self {
            Op::ServerLive | Op::ServerReady | Op::ServerMetadata | Op::Reflection => Scope::Server,
            Op::Health { model: false, .. } => Scope::Server,
            Op::ModelMetadata => Scope::Model(Operation::Metadata),
            Op::ModelReady | Op::Health { model: true, .. } => Scope::Model(Operation::Ready),
            Op::ModelInfer => Scope::Model(Operation::Infer),
            Op::ModelConfig => Scope::Model(Operation::Config),
            Op::ModelStats => Scope::ModelOrAll(Operation::Stats),
            Op::RepositoryLoad | Op::RepositoryUnload => Scope::Named(Operation::Admin),
            Op::RepositoryIndex | Op::LogSettings => Scope::ServerWide(Operation::Admin),
        }
    }

    /// The operation the policy authorizes, for the audit record.
    pub fn operation(self) -> Option<Operation> {
        match self.scope() {
            Scope::Server => None,
            Scope::Model(o) | Scope::ModelOrAll(o) | Scope::Named(o) | Scope::ServerWide(o) => {
                Some(o)
            }
        }
    }

    /// Health probes: `/v2/health/*` and `ServerLive`/`ServerReady` always, and
    /// `grpc.health.v1.Health` as configured ([`warden_shared::config::HealthConfig`]),
    /// answer without a credential: rate-limited per client IP, not audited.
    pub fn is_open_probe(self, health: &warden_shared::config::HealthConfig) -> bool {
        match self {
            Op::ServerLive | Op::ServerReady => true,
            Op::Health { model: false, .. } => health.grpc_unauthenticated,
            Op::Health { model: true, .. } => health.grpc_models_unauthenticated,
            _ => false,
        }
    }
}

/// The service names `grpc.health.v1.Health` answers for the whole server; any other
/// name is a model's.
pub const HEALTH_SERVER_NAMES: &[&str] = &["", "inference.GRPCInferenceService"];

/// Most bytes of a `grpc.health.v1` request read before its caller is authenticated
/// (its service name is what decides whether it must be).
pub const HEALTH_MESSAGE_BYTES: usize = 5 + 512;

/// A health status, as `grpc.health.v1` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    Serving,
    NotServing,
}

/// Changes of a watched health status: each new status, until the server stops (its
/// last message is then `NotServing`) or the receiver is dropped.
pub type HealthUpdates = tokio::sync::mpsc::Receiver<Serving>;

/// How often a watched health status is looked at again.
pub const HEALTH_WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// What a Triton repository index or log settings message asks (the gateway's log
/// filter is fixed at start, so any change to it is refused).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Repository index: only models ready now.
    pub ready_only: bool,
    /// Log settings: how many settings the call asks to change.
    pub changes: usize,
}

/// Triton's log settings, as the gateway's log filter has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub info: bool,
    pub warning: bool,
    pub error: bool,
    /// 0: no debug output; 1: debug; 2: trace.
    pub verbose_level: u32,
}

impl LogSettings {
    /// The settings the process's log filter has now.
    pub fn current() -> LogSettings {
        use tracing::level_filters::LevelFilter;
        let max = LevelFilter::current();
        LogSettings {
            info: max >= LevelFilter::INFO,
            warning: max >= LevelFilter::WARN,
            error: max >= LevelFilter::ERROR,
            verbose_level: if max >= LevelFilter::TRACE {
                2
            } else if max >= LevelFilter::DEBUG {
                1
            } else {
                0
            },
        }
    }
}

/// One model version's statistics, as a front renders them.
#[derive(Debug, Clone)]
pub struct ModelStats {
    pub name: String,
    pub version: String,
    pub stats: crate::stats::VersionStats,
}

/// A model and version as a client named them. `version` is empty for "the latest".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub model: String,
    pub version: String,
}

/// What a front knows of a call from its head alone.
#[derive(Debug)]
pub struct Head {
    pub listener: Listener,
    pub api: Api,
    /// `HTTP/1.1`, `HTTP/2`, `gRPC`.
    pub protocol: &'static str,
    /// What the call asks for, or why the head alone already refuses it (no such
    /// route, bad framing, ...): such a call is audited like any other.
    pub op: Result<Op, Refusal>,
    /// The model and version, when the head names them (REST paths).
    pub target: Option<Target>,
    pub token: Option<String>,
    /// The client's `x-request-id`, if short and plain; never Warden's own id.
    pub client_request_id: Option<String>,
    /// The client's own deadline (gRPC `grpc-timeout`), shortened to the server's.
    pub deadline: Option<Duration>,
    /// The body's declared length (`Content-Length`).
    pub declared_len: Option<u64>,
}

/// What the pipeline hands a front to render.
#[derive(Debug)]
pub enum Answer<S> {
    Live,
    Ready(bool),
    ServerMetadata,
    /// `version`: the one asked for, or the latest when none was.
    ModelMetadata {
        meta: proto::ModelMetadataResponse,
        version: String,
    },
    /// `versions`: the one asked for, or every version served when none was.
    ModelReady {
        model: String,
        ready: bool,
        versions: Vec<u64>,
    },
    Infer(proto::ModelInferResponse, S),
    /// Triton's model configuration, from the model's metadata.
    ModelConfig(proto::ModelConfig),
    ModelStats(Vec<ModelStats>),
    RepositoryIndex(proto::RepositoryIndexResponse),
    LogSettings(LogSettings),
    Health(Serving),
    /// The status now, then its changes.
    HealthWatch(Serving, HealthUpdates),
    /// A stream whose request messages the front answers as they arrive.
    Stream(Stream),
}

/// The still-open request body of a bidirectional stream (gRPC reflection), and how
/// long the front may keep answering it.
#[derive(Debug)]
pub struct Stream {
    pub body: Incoming,
    pub deadline: Duration,
}

/// A rendered answer and what the audit record says of it.
pub struct Rendered<R> {
    pub response: R,
    /// HTTP status (for gRPC: its HTTP equivalent).
    pub status: u16,
    pub grpc_code: Option<i32>,
    pub bytes_out: u64,
}

/// Charges decoded bytes to the call's quota before they are allocated.
pub type Charge<'a> = dyn FnMut(usize) -> Result<(), Refusal> + Send + 'a;

/// A front's wire format. It translates; it decides nothing.
pub trait Codec: Sync {
    /// What the front keeps from the request to shape its answer.
    type Shape: Send;
    type Response;

    /// Whether `op` carries a body on this front.
    fn has_body(&self, op: Op) -> bool;
    /// Most body bytes read for `op`.
    fn body_cap(&self, limits: &LimitsConfig, op: Op) -> usize;
    /// The body's length as its first bytes declare it, if the format has such a prefix
    /// (gRPC's length-prefixed message); `None` until enough bytes are there.
    fn framed_len(&self, _first: &[u8]) -> Option<u64> {
        None
    }
    /// The message inside a body read whole (gRPC: its length-prefixed frame).
    fn message(&self, body: Bytes) -> Result<Bytes, Refusal>;
    /// The model and version a message names (fronts whose head does not); for a
    /// `grpc.health.v1` call, the service name as the model.
    fn target(&self, op: Op, message: &[u8]) -> Result<Target, Refusal>;
    /// What a repository index or log settings message asks (a front without those
    /// calls never routes them here).
    fn options(&self, _op: Op, _message: &[u8]) -> Result<Options, Refusal> {
        Err(Refusal::NoRoute)
    }

    /// Whether decoding an inference message needs the model's metadata (a format
    /// whose tensors do not carry their datatype).
    fn needs_metadata(&self) -> bool {
        false
    }
    /// Decodes an inference message. Before allocating the decoded form, `charge` is
    /// called with the bytes it will take beyond the message itself. `metadata` is the
    /// model's, when [`Codec::needs_metadata`] says so.
    fn decode_infer(
        &self,
        target: &Target,
        message: Bytes,
        limits: &LimitsConfig,
        metadata: Option<&proto::ModelMetadataResponse>,
        charge: &mut Charge<'_>,
    ) -> Result<(proto::ModelInferRequest, Self::Shape), Refusal>;
    /// Renders an answer; an `Err` is rendered as that refusal instead.
    fn render(
        &self,
        id: &str,
        answer: Answer<Self::Shape>,
    ) -> Result<Rendered<Self::Response>, Refusal>;
    /// Renders a refusal.
    fn refuse(&self, id: &str, refusal: &Refusal) -> Rendered<Self::Response>;
}

/// One call in flight.
pub struct Call {
    pub id: String,
    pub client_request_id: Option<String>,
    pub conn: Arc<ConnInfo>,
    pub listener: Listener,
    pub api: Api,
    pub protocol: &'static str,
    pub start: Instant,
    pub op: Option<Op>,
    pub principal: Option<Principal>,
    /// Set only once the repository is known to have the model.
    pub model: Option<String>,
    pub version: Option<String>,
    /// The rule that allowed the call.
    pub rule: Option<String>,
    /// `model_digest` the backend reported for the version that answered.
    pub model_digest: Option<String>,
    /// The call's place in the model's metric series, once the repository is known to
    /// have the version.
    pub series: Option<Series>,
    /// What the backend measured of the inference.
    pub timing: Option<Timing>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub reservation: Reservation,
    /// For an inference the backend answered: the time before it was sent there, and
    /// the round trip to the backend (Triton's statistics).
    pub dispatch: Option<(Duration, Duration)>,
    _in_flight: InFlight,
}

/// A call's metric series: the version label and its count in
/// `ovms_current_requests`, held until the call ends, however it ends.
pub struct Series {
    version: String,
    _current: Tracked,
}

/// Counts a call out when it ends, however it ends.
struct InFlight(Arc<std::sync::atomic::AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A request body, read at most once, bounded, or discarded.
pub struct Body {
    inner: Option<Incoming>,
    declared: Option<u64>,
    /// A body read before authentication (a health call's bounded message), handed
    /// out by the next `read`.
    early: Option<Bytes>,
}

impl Body {
    pub fn new(inner: Incoming, declared: Option<u64>) -> Body {
        Body {
            inner: Some(inner),
            declared,
            early: None,
        }
    }

    /// The body itself, unread, for a front that answers it as it streams.
    fn take(&mut self) -> Option<Incoming> {
        self.inner.take()
    }

    /// Whether the client may still be sending it.
    pub fn unfinished(&self) -> bool {
        self.inner.as_ref().is_some_and(|b| !b.is_end_stream())
    }

    /// Reads the whole body under `cap` and the call's memory quota: a declared length
    /// over the cap or the quota is refused before a body byte is read, an undeclared
    /// one as soon as it passes the cap, and every chunk must fit the quota before it is
    /// kept.
    async fn read(
        &mut self,
        state: &State,
        call: &mut Call,
        cap: usize,
        framed_len: &(dyn Fn(&[u8]) -> Option<u64> + Sync),
    ) -> Result<Bytes, Refusal> {
        if let Some(early) = self.early.take() {
            return Ok(early);
        }
        if self.declared.is_some_and(|len| len > cap as u64) {
            return Err(Refusal::TooLarge(cap));
        }
        // A declared length is reserved whole before any byte is read: concurrent
        // uploads then either get all their bytes or are refused at once, instead of
        // all growing a little and starving each other half-way.
        let mut reserved = self.declared.map(|d| d as usize).unwrap_or(0);
        if reserved > 0 {
            state.charge(call, reserved)?;
        }
        let Some(body) = self.inner.as_mut() else {
            return Ok(Bytes::new());
        };
        let mut buf = BytesMut::with_capacity(reserved.min(cap));
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|_| Refusal::Malformed("request body could not be read".into()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buf.len() + data.len() > cap {
                return Err(Refusal::TooLarge(cap));
            }
            let mut needed = buf.len() + data.len();
            if self.declared.is_none() && buf.len() < 16 {
                // A length the format declares in its first bytes (gRPC's message
                // prefix) is held to the cap, and reserved whole, like Content-Length.
                let mut head = buf.to_vec();
                head.extend_from_slice(&data[..data.len().min(16)]);
                if let Some(len) = framed_len(&head) {
                    if len > cap as u64 {
                        return Err(Refusal::TooLarge(cap));
                    }
                    self.declared = Some(len);
                    needed = needed.max(len as usize);
                }
            }
            if needed > reserved {
                state.charge(call, needed - reserved)?;
                reserved = needed;
            }
            buf.extend_from_slice(&data);
        }
        self.inner = None;
        call.bytes_in = buf.len() as u64;
        Ok(buf.freeze())
    }

    /// Reads a small body whole before its caller is authenticated: at most `cap`
    /// bytes, in at most [`REFUSAL_DISCARD_TIME`], charged to no quota (the bound is
    /// the charge). Kept for the next `read`.
    async fn read_early(&mut self, cap: usize) -> Result<Bytes, Refusal> {
        let Some(body) = self.inner.as_mut() else {
            return Ok(Bytes::new());
        };
        if self.declared.is_some_and(|len| len > cap as u64) {
            return Err(Refusal::TooLarge(cap));
        }
        let read = async {
            let mut buf = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let frame = frame
                    .map_err(|_| Refusal::Malformed("request body could not be read".into()))?;
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > cap {
                        return Err(Refusal::TooLarge(cap));
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Ok(buf.freeze())
        };
        let bytes = tokio::time::timeout(REFUSAL_DISCARD_TIME, read)
            .await
            .map_err(|_| Refusal::Timeout)??;
        self.inner = None;
        self.early = Some(bytes.clone());
        Ok(bytes)
    }

    /// Reads and throws away what is left, up to a bound, so the client can read the
    /// answer (documented: docs/configuration.md, "early refusals").
    async fn discard(&mut self, max_bytes: usize, max_time: Duration) {
        let Some(body) = self.inner.as_mut() else {
            return;
        };
        let mut seen = 0usize;
        let _ = tokio::time::timeout(max_time, async {
            while seen <= max_bytes {
                match body.frame().await {
                    Some(Ok(f)) => seen += f.data_ref().map(|d| d.len()).unwrap_or(0),
                    _ => break,
                }
            }
        })
        .await;
    }
}

/// What the pipeline returns to a front.
pub struct Served<R> {
    pub response: R,
    /// The answer was a refusal and the client had not finished sending its body (an
    /// HTTP/1.1 front closes the connection then).
    pub body_unfinished: bool,
}

/// Runs one call through the pipeline and returns the front's rendered answer.
pub async fn serve<C: Codec>(
    state: &Arc<State>,
    conn: &Arc<ConnInfo>,
    head: Head,
    body: Incoming,
    codec: &C,
) -> Served<C::Response> {
    let _active = conn.activity.enter();
    let mut head = head;
    let mut body = Body::new(body, head.declared_len);
    if let Ok(Op::Health { watch, .. }) = head.op {
        // The service name decides whether the call needs a credential: read its
        // small, bounded message first.
        match health_target(&mut body, codec, head.op.clone()).await {
            Ok(t) => {
                let model = !HEALTH_SERVER_NAMES.contains(&t.model.as_str());
                head.op = Ok(Op::Health { watch, model });
                head.target = model.then_some(t);
            }
            Err(r) => head.op = Err(r),
        }
    }
    if let Ok(op) = head.op
        && op.is_open_probe(&state.config.health)
    {
        let id = state.next_request_id();
        let answer = state.probe(conn, op, head.target.as_ref()).await;
        let rendered = match answer.map(|a| watched(state, op, head.target.clone(), a)) {
            Ok(answer) => codec
                .render(&id, answer)
                .unwrap_or_else(|r| codec.refuse(&id, &r)),
            Err(r) => codec.refuse(&id, &r),
        };
        return Served {
            response: rendered.response,
            body_unfinished: false,
        };
    }
    let mut call = state.begin(Arc::clone(conn), &head);
    let limit = Duration::from_secs(state.config.limits.request_timeout_secs);
    let deadline = head.deadline.map_or(limit, |d| d.min(limit));
    let result = match tokio::time::timeout(
        deadline,
        steps(state, &mut call, &head, &mut body, codec),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(Refusal::Timeout),
    };
    let result = match head.op {
        Ok(op) => result.map(|a| watched(state, op, head.target.clone(), a)),
        Err(_) => result,
    };
    let (refusal, rendered) = match result.and_then(|a| codec.render(&call.id, a)) {
        Ok(r) => (None, r),
        Err(refusal) => {
            let r = codec.refuse(&call.id, &refusal);
            (Some(refusal), r)
        }
    };
    let body_unfinished = refusal.is_some() && body.unfinished();
    if body_unfinished {
        body.discard(REFUSAL_DISCARD_BYTES, REFUSAL_DISCARD_TIME)
            .await;
    }
    call.bytes_out = rendered.bytes_out;
    let id = call.id.clone();
    let response = match state
        .finish(call, refusal.as_ref(), rendered.status, rendered.grpc_code)
        .await
    {
        Ok(()) => rendered.response,
        Err(refused) => codec.refuse(&id, &refused).response,
    };
    Served {
        response,
        body_unfinished: body_unfinished && body.unfinished(),
    }
}

/// The service name of a `grpc.health.v1` call, read from its bounded message.
async fn health_target<C: Codec>(
    body: &mut Body,
    codec: &C,
    op: Result<Op, Refusal>,
) -> Result<Target, Refusal> {
    let op = op?;
    let message = codec.message(body.read_early(HEALTH_MESSAGE_BYTES).await?)?;
    codec.target(op, &message)
}

/// A health answer to a Watch call becomes a stream of its changes: a task looks at
/// the status again every [`HEALTH_WATCH_INTERVAL`] and at once when the server begins
/// to stop, sends each change, and ends when the client goes away or the server stops.
fn watched<S>(state: &Arc<State>, op: Op, target: Option<Target>, answer: Answer<S>) -> Answer<S> {
    let (Op::Health { watch: true, .. }, Answer::Health(now)) = (op, &answer) else {
        return answer;
    };
    let now = *now;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let mut stop = state.shutdown.subscribe();
        let mut last = now;
        loop {
            let stopping = tokio::select! {
                _ = tx.closed() => return,
                _ = stop.wait_for(|s| *s) => true,
                _ = tokio::time::sleep(HEALTH_WATCH_INTERVAL) => false,
            };
            let status = if stopping {
                Serving::NotServing
            } else {
                state.serving(target.as_ref()).await
            };
            if status != last {
                if tx.send(status).await.is_err() {
                    return;
                }
                last = status;
            }
            if stopping {
                return;
            }
        }
    });
    Answer::HealthWatch(now, rx)
}

/// Steps 2 to 7 of the module documentation.
async fn steps<C: Codec>(
    state: &State,
    call: &mut Call,
    head: &Head,
    body: &mut Body,
    codec: &C,
) -> Result<Answer<C::Shape>, Refusal> {
    let op = head.op.clone()?;
    if op == Op::Reflection && state.config.reflection.unauthenticated {
        // Opened by configuration: no credential, limited per client IP like the
        // health probes, and audited.
        state.limit_ip(&call.conn)?;
    } else {
        let principal = state.authenticate(call, head.token.as_deref())?;
        call.reservation = state.quotas.start(Some(&principal.display_name()));
        let principal = call.principal.insert(principal);
        state.admit_principal(principal)?;
    }
    match (op.scope(), &head.target) {
        (Scope::Model(o) | Scope::ModelOrAll(o), Some(t)) if !t.model.is_empty() => {
            state.admit_model(call, t, o).await?
        }
        (Scope::Named(o), Some(t)) => state.admit_named(call, t, o)?,
        (Scope::ServerWide(o), _) => state.admit_named(
            call,
            &Target {
                model: crate::authz::SERVER_WIDE.into(),
                version: String::new(),
            },
            o,
        )?,
        _ => {}
    }
    let message = if codec.has_body(op) {
        let cap = codec.body_cap(&state.config.limits, op);
        let framed = |first: &[u8]| codec.framed_len(first);
        codec.message(body.read(state, call, cap, &framed).await?)?
    } else {
        Bytes::new()
    };
    let target = match (&head.target, op.scope()) {
        (Some(t), _) => t.clone(),
        (None, Scope::Model(operation)) => {
            let t = codec.target(op, &message)?;
            state.admit_model(call, &t, operation).await?;
            t
        }
        (None, Scope::ModelOrAll(operation)) => {
            let t = codec.target(op, &message)?;
            if !t.model.is_empty() {
                state.admit_model(call, &t, operation).await?;
            }
            t
        }
        (None, Scope::Named(operation)) => {
            let t = codec.target(op, &message)?;
            state.admit_named(call, &t, operation)?;
            t
        }
        (None, Scope::Server | Scope::ServerWide(_)) => Target::default(),
    };
    let mut backend = state.backend.clone();
    let p = call.principal.clone();
    match op {
        Op::ServerLive | Op::ServerReady => unreachable!("health is answered before the pipeline"),
        Op::ServerMetadata => Ok(Answer::ServerMetadata),
        Op::ModelMetadata => {
            let meta = state.model_metadata(call, target.clone()).await?;
            let version = if target.version.is_empty() {
                meta.versions.first().cloned().unwrap_or_default()
            } else {
                target.version
            };
            Ok(Answer::ModelMetadata { meta, version })
        }
        Op::ModelConfig => Ok(Answer::ModelConfig(crate::triton::model_config(
            state.model_metadata(call, target).await?,
        ))),
        Op::ModelStats => Ok(Answer::ModelStats(state.model_stats(call, &target))),
        Op::RepositoryIndex => {
            let options = codec.options(op, &message)?;
            let mut index = backend
                .repository_index(backend_request(
                    proto::RepositoryIndexRequest::default(),
                    p.as_ref(),
                    &call.id,
                ))
                .await
                .map_err(|s| Refusal::from_backend(&s))?
                .into_inner();
            if options.ready_only {
                index.models.retain(|m| m.state == "READY");
            }
            Ok(Answer::RepositoryIndex(index))
        }
        Op::RepositoryLoad | Op::RepositoryUnload => {
            Err(if state.config.triton.repository_control {
                Refusal::NotSupported(
                    "the backend serves the models of its configuration and follows their folders; it cannot load or unload a model on request",
                )
            } else {
                Refusal::Disabled("model load and unload are disabled on this server")
            })
        }
        Op::LogSettings => {
            if codec.options(op, &message)?.changes > 0 {
                return Err(Refusal::NotSupported(
                    "log settings are read-only: the log level is set at start (--log_level, WARDEN_LOG)",
                ));
            }
            Ok(Answer::LogSettings(LogSettings::current()))
        }
        Op::Health { .. } => Ok(Answer::Health(state.serving(head.target.as_ref()).await)),
        Op::Reflection => Ok(Answer::Stream(Stream {
            body: body.take().ok_or(Refusal::Internal)?,
            deadline: Duration::from_secs(state.config.limits.request_timeout_secs),
        })),
        Op::ModelReady => {
            let ready = backend
                .model_ready(backend_request(
                    proto::ModelReadyRequest {
                        name: target.model.clone(),
                        version: target.version.clone(),
                    },
                    p.as_ref(),
                    &call.id,
                ))
                .await
                .map_err(|s| Refusal::from_backend(&s))?
                .into_inner()
                .ready;
            let versions = match target.version.parse() {
                Ok(v) => vec![v],
                Err(_) => state.catalog.versions(&target.model),
            };
            Ok(Answer::ModelReady {
                model: target.model,
                ready,
                versions,
            })
        }
        Op::ModelInfer => {
            let limits = &state.config.limits;
            let metadata = if codec.needs_metadata() {
                Some(state.model_metadata(call, target.clone()).await?)
            } else {
                None
            };
            let (request, shape) = {
                let mut charge = |n: usize| state.charge(call, n);
                codec.decode_infer(&target, message, limits, metadata.as_ref(), &mut charge)?
            };
            // The socket client encodes the request into one buffer of its own.
            state.charge(call, prost::Message::encoded_len(&request))?;
            let sent = Instant::now();
            let answer = (state.frames.infer(p.as_ref(), &call.id, &request).await)
                .map_err(|s| Refusal::from_backend(&s))?;
            call.dispatch = Some((sent - call.start, sent.elapsed()));
            call.timing = Some(Timing {
                wait_us: answer.wait_us,
                inference_us: answer.inference_us,
            });
            let resp = answer.response;
            // The backend answers the version it used; record that one.
            call.version = Some(resp.model_version.clone());
            call.model_digest = digest_of(&resp.parameters);
            Ok(Answer::Infer(resp, shape))
        }
    }
}

/// A model version as a client may write it: decimal digits, at most 20.
pub fn check_version(version: &str) -> Result<(), Refusal> {
    if version.is_empty() || (version.len() <= 20 && version.bytes().all(|b| b.is_ascii_digit())) {
        Ok(())
    } else {
        Err(Refusal::BadName("model version must be a positive integer"))
    }
}

impl State {
    fn begin(&self, conn: Arc<ConnInfo>, head: &Head) -> Call {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Call {
            _in_flight: InFlight(Arc::clone(&self.in_flight)),
            id: self.next_request_id(),
            client_request_id: head.client_request_id.clone(),
            conn,
            listener: head.listener,
            api: head.api,
            protocol: head.protocol,
            start: Instant::now(),
            op: head.op.as_ref().ok().copied(),
            principal: None,
            model: None,
            version: None,
            rule: None,
            model_digest: None,
            series: None,
            timing: None,
            bytes_in: 0,
            bytes_out: 0,
            reservation: Reservation::default(),
            dispatch: None,
        }
    }

    /// Step 2. A failed attempt counts against the client's IP, so guessing is
    /// throttled.
    fn authenticate(&self, call: &Call, token: Option<&str>) -> Result<Principal, Refusal> {
        let mode = match call.listener {
            Listener::Rest => self.config.auth.rest_mode,
            Listener::Grpc => self.config.auth.grpc_mode,
        };
        auth::authenticate(mode, &self.jwt, &call.conn, token).map_err(|e| {
            self.metrics.inc(metrics::AUTH_FAILURES, [e.reason()]);
            tracing::info!(request_id = %call.id, peer = %call.conn.peer, reason = e.reason(), "authentication failed");
            match self.rates.check_ip(call.conn.peer.ip()) {
                Err(l) => {
                    self.metrics
                        .inc(metrics::RATE_LIMITED, [l.scope.as_str()]);
                    Refusal::RateLimited(l)
                }
                Ok(()) => Refusal::Unauthenticated(e),
            }
        })
    }

    /// Step 3: the total and per-principal rate limits.
    fn admit_principal(&self, p: &Principal) -> Result<(), Refusal> {
        let over = self.policy().rate_override(p);
        self.rates
            .check_principal(&p.display_name(), over)
            .map_err(|l| {
                self.metrics.inc(metrics::RATE_LIMITED, [l.scope.as_str()]);
                Refusal::RateLimited(l)
            })
    }

    /// Step 4: authorization, then the repository, then the model's rate budget.
    async fn admit_model(
        &self,
        call: &mut Call,
        t: &Target,
        operation: Operation,
    ) -> Result<(), Refusal> {
        warden_shared::repository::check_model_name(&t.model)
            .map_err(|_| Refusal::BadName("invalid model name"))?;
        check_version(&t.version)?;
        if !self.catalog.loaded() {
            self.refresh_catalog().await;
            if !self.catalog.loaded() {
                return Err(Refusal::BackendUnavailable);
            }
        }
        let mut lookup = self.catalog.lookup(&t.model, &t.version);
        if lookup != Lookup::Known && self.catalog.take_miss_refresh() {
            self.refresh_catalog().await;
            lookup = self.catalog.lookup(&t.model, &t.version);
        }
        if lookup != Lookup::UnknownModel {
            call.model = Some(t.model.clone());
        }
        if lookup == Lookup::Known {
            call.version = Some(t.version.clone()).filter(|v| !v.is_empty());
            if call.series.is_none()
                && let Some(v) = self.catalog.resolve(&t.model, &t.version)
            {
                let version = v.to_string();
                call.series = Some(Series {
                    _current: self
                        .metrics
                        .track(metrics::CURRENT_REQUESTS, [&t.model, &version]),
                    version,
                });
            }
        }
        let p = call.principal.as_ref().ok_or(Refusal::Internal)?;
        let version = t.version.parse().ok();
        match self.policy().allows(p, &t.model, version, operation) {
            Some(rule) => call.rule = Some(rule.to_owned()),
            None => {
                let label = call.model.as_deref().unwrap_or(UNKNOWN_MODEL_LABEL);
                self.metrics.inc(metrics::AUTHZ_DENIED, [label]);
                tracing::info!(request_id = %call.id, principal = %p.log_name(), model = label, op = operation.as_str(), "authorization denied");
                return Err(Refusal::Forbidden);
            }
        }
        match lookup {
            Lookup::UnknownModel => Err(Refusal::UnknownModel),
            Lookup::UnknownVersion => Err(Refusal::UnknownVersion),
            Lookup::Known => self.rates.check_model(&t.model).map_err(|l| {
                self.metrics.inc(metrics::RATE_LIMITED, [l.scope.as_str()]);
                Refusal::RateLimited(l)
            }),
        }
    }

    /// Asks the backend which models and versions it serves.
    pub async fn refresh_catalog(&self) {
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            self.backend
                .clone()
                .repository_index(proto::RepositoryIndexRequest::default()),
        )
        .await;
        if let Ok(Ok(a)) = answer {
            self.catalog.replace(a.get_ref());
        }
    }

    /// Reserves `bytes` more for the call in the memory quotas.
    fn charge(&self, call: &mut Call, bytes: usize) -> Result<(), Refusal> {
        self.quotas
            .grow(&mut call.reservation, bytes)
            .map_err(|scope| {
                self.metrics.inc(metrics::QUOTA_REFUSED, [scope.as_str()]);
                Refusal::Quota(scope)
            })
    }

    /// Health probes without a credential: limited per client IP. A model's health
    /// names only a model the repository has (an unknown name is `UnknownModel`, never
    /// logged or counted by name).
    async fn probe<S>(
        &self,
        conn: &ConnInfo,
        op: Op,
        target: Option<&Target>,
    ) -> Result<Answer<S>, Refusal> {
        self.limit_ip(conn)?;
        match op {
            Op::ServerLive => Ok(Answer::Live),
            Op::ServerReady => Ok(Answer::Ready(self.ready().await)),
            _ => {
                if let Some(t) = target {
                    warden_shared::repository::check_model_name(&t.model)
                        .map_err(|_| Refusal::BadName("invalid model name"))?;
                    if !self.catalog.loaded() {
                        self.refresh_catalog().await;
                    }
                    if self.catalog.lookup(&t.model, "") == Lookup::UnknownModel {
                        return Err(Refusal::UnknownModel);
                    }
                }
                Ok(Answer::Health(self.serving(target).await))
            }
        }
    }

    /// The per-client-IP limit of calls without a credential.
    fn limit_ip(&self, conn: &ConnInfo) -> Result<(), Refusal> {
        self.rates.check_ip(conn.peer.ip()).map_err(|l| {
            self.metrics.inc(metrics::RATE_LIMITED, [l.scope.as_str()]);
            Refusal::RateLimited(l)
        })
    }

    /// Ready means the backend has its models, the audit log can be written (a server
    /// that would refuse every request for want of an audit log is not ready) and the
    /// server is not draining.
    async fn ready(&self) -> bool {
        let backend = self
            .backend
            .clone()
            .server_ready(proto::ServerReadyRequest {})
            .await
            .map(|r| r.into_inner().ready)
            .unwrap_or(false);
        backend
            && (self.audit.healthy() || self.audit.fail_open())
            && !self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The `grpc.health.v1` status of the server (no target) or of a model the
    /// repository has: serving when ready and not draining.
    async fn serving(&self, target: Option<&Target>) -> Serving {
        let ready = match target {
            None => self.ready().await,
            Some(t) => {
                !self.draining.load(std::sync::atomic::Ordering::Relaxed)
                    && self
                        .backend
                        .clone()
                        .model_ready(proto::ModelReadyRequest {
                            name: t.model.clone(),
                            version: String::new(),
                        })
                        .await
                        .is_ok_and(|r| r.into_inner().ready)
            }
        };
        if ready {
            Serving::Serving
        } else {
            Serving::NotServing
        }
    }

    /// Step 4 for a call that names a model it does not need the repository to have
    /// (load, unload) or concerns the whole server: authorization only. The name is
    /// checked for form and never recorded.
    fn admit_named(
        &self,
        call: &mut Call,
        t: &Target,
        operation: Operation,
    ) -> Result<(), Refusal> {
        if t.model != crate::authz::SERVER_WIDE {
            warden_shared::repository::check_model_name(&t.model)
                .map_err(|_| Refusal::BadName("invalid model name"))?;
        }
        let p = call.principal.as_ref().ok_or(Refusal::Internal)?;
        match self.policy().allows(p, &t.model, None, operation) {
            Some(rule) => {
                call.rule = Some(rule.to_owned());
                Ok(())
            }
            None => {
                self.metrics
                    .inc(metrics::AUTHZ_DENIED, [UNKNOWN_MODEL_LABEL]);
                tracing::info!(request_id = %call.id, principal = %p.log_name(), op = operation.as_str(), "authorization denied");
                Err(Refusal::Forbidden)
            }
        }
    }

    /// The backend's metadata of an admitted model.
    async fn model_metadata(
        &self,
        call: &Call,
        target: Target,
    ) -> Result<proto::ModelMetadataResponse, Refusal> {
        Ok(self
            .backend
            .clone()
            .model_metadata(backend_request(
                proto::ModelMetadataRequest {
                    name: target.model,
                    version: target.version,
                },
                call.principal.as_ref(),
                &call.id,
            ))
            .await
            .map_err(|s| Refusal::from_backend(&s))?
            .into_inner())
    }

    /// Statistics of an admitted model (its version, or every ready version), or, with
    /// no model named, of every model the caller may read statistics of.
    fn model_stats(&self, call: &Call, target: &Target) -> Vec<ModelStats> {
        let models = if target.model.is_empty() {
            let policy = self.policy();
            let p = call.principal.as_ref();
            self.catalog
                .models()
                .into_iter()
                .filter(|m| {
                    p.is_some_and(|p| policy.allows(p, m, None, Operation::Stats).is_some())
                })
                .collect()
        } else {
            vec![target.model.clone()]
        };
        let mut out = Vec::new();
        for m in models {
            for v in self.catalog.versions(&m) {
                if target.version.is_empty() || target.version == v.to_string() {
                    out.push(ModelStats {
                        name: m.clone(),
                        version: v.to_string(),
                        stats: self.stats.get(&m, v),
                    });
                }
            }
        }
        out
    }

    /// Creates, at 0, the request series of a served model version, as OVMS does when
    /// it loads one: a dashboard shows 0 rather than nothing until a call comes.
    pub fn zero_model_series(&self, model: &str, version: &str) {
        let m = &self.metrics;
        for op in [Op::ModelMetadata, Op::ModelReady, Op::ModelInfer] {
            let v = if op == Op::ModelReady { "" } else { version };
            for api in [Api::KServe, Api::Tfs] {
                for listener in [Listener::Rest, Listener::Grpc] {
                    for requests in [metrics::REQUESTS_SUCCESS, metrics::REQUESTS_FAIL] {
                        let labels = [api.as_str(), listener.interface(), op.method(api), model, v];
                        m.add(requests, labels, 0);
                    }
                }
            }
        }
        m.gauge_add(metrics::CURRENT_REQUESTS, [model, version], 0);
    }

    /// Step 8, metrics. OVMS's request metrics count calls on a model the repository
    /// has, labelled as OVMS labels them; every call counts in `warden_requests_total`.
    fn count(
        &self,
        call: &Call,
        refusal: Option<&Refusal>,
        ok: bool,
        decision: Decision,
        latency: Duration,
    ) {
        let m = &self.metrics;
        let api = call.api.as_str();
        let interface = call.listener.interface();
        m.inc(metrics::REQUESTS, [api, interface, decision.as_str()]);
        if let Some(r) = refusal {
            m.inc(metrics::REFUSALS, [r.label()]);
            if matches!(r, Refusal::BackendUnavailable) {
                m.inc(metrics::BACKEND_UNAVAILABLE, []);
            }
        }
        let Some(model) = call.model.as_deref() else {
            return;
        };
        // The version that answered, else the one the call reaches.
        let version = call
            .version
            .as_deref()
            .or(call.series.as_ref().map(|s| s.version.as_str()))
            .unwrap_or("");
        let method = call.op.map_or("Unknown", |op| op.method(call.api));
        // OVMS labels `ModelReady` without a version.
        let method_version = if call.op == Some(Op::ModelReady) {
            ""
        } else {
            version
        };
        let requests = if ok {
            metrics::REQUESTS_SUCCESS
        } else {
            metrics::REQUESTS_FAIL
        };
        m.inc(requests, [api, interface, method, model, method_version]);
        if ok && call.op == Some(Op::ModelInfer) {
            m.observe(
                metrics::REQUEST_TIME,
                [interface, model, version],
                latency.as_micros() as f64,
            );
        }
        if let Some(t) = call.timing {
            m.observe(
                metrics::INFERENCE_TIME,
                [model, version],
                t.inference_us as f64,
            );
            m.observe(
                metrics::WAIT_FOR_INFER_REQ_TIME,
                [model, version],
                t.wait_us as f64,
            );
        }
    }

    /// Step 8: metrics and the audit record. `Err` carries the refusal to answer with
    /// instead, when the record could not be written (fail closed).
    async fn finish(
        &self,
        call: Call,
        refusal: Option<&Refusal>,
        status: u16,
        grpc_code: Option<i32>,
    ) -> Result<(), Refusal> {
        let latency = call.start.elapsed();
        let ok = refusal.is_none() && status < 400;
        if call.op == Some(Op::ModelInfer)
            && let Some(m) = &call.model
            && let Some(v) = call
                .version
                .as_deref()
                .and_then(|v| v.parse().ok())
                .or_else(|| self.catalog.versions(m).last().copied())
        {
            self.stats.record(
                m,
                v,
                crate::stats::Sample {
                    total: latency,
                    backend: call.dispatch.map(|t| t.1),
                    before_backend: call.dispatch.map(|t| t.0),
                    ok,
                },
            );
        }
        let (decision, reason) = match refusal {
            None => (
                Decision::Allowed,
                call.rule.as_ref().map(|r| format!("rule: {r}")),
            ),
            Some(r) => (r.decision(), Some(r.reason())),
        };
        self.count(&call, refusal, ok, decision, latency);
        let p = call.principal.as_ref();
        let record = Record {
            event: "request",
            request_id: Some(call.id.clone()),
            client_request_id: call.client_request_id.clone(),
            client: Some(call.conn.peer.to_string()),
            listener: Some(call.listener.as_str()),
            protocol: Some(call.protocol.to_owned()),
            tls_version: Some(call.conn.tls_version),
            cipher: Some(call.conn.cipher.clone()),
            auth_method: p.map(|p| p.method.as_str()),
            principal: p.map(|p| p.subject.clone()),
            issuer: p.map(|p| p.issuer.clone()),
            certificate: p
                .and_then(|p| p.certificate.clone())
                .or_else(|| call.conn.client_cert.as_ref().map(|c| c.identity.clone())),
            key_id: p.and_then(|p| p.key_id.clone()),
            jti_sha256: p.and_then(|p| p.jti_hash.clone()),
            model: call.model.clone(),
            version: call.version.clone().filter(|v| !v.is_empty()),
            operation: call.op.and_then(Op::operation).map(Operation::as_str),
            decision: Some(decision.as_str()),
            reason,
            status: Some(status),
            grpc_code,
            bytes_in: Some(call.bytes_in),
            bytes_out: Some(call.bytes_out),
            latency_us: Some(latency.as_micros() as u64),
            settings: None,
            model_digest: call.model_digest.clone(),
        };
        match self.audit.append(record).await {
            Ok(()) => Ok(()),
            Err(_) => {
                self.metrics.inc(metrics::AUDIT_WRITE_FAILURES, []);
                if self.audit.fail_open() {
                    Ok(())
                } else {
                    Err(Refusal::AuditUnavailable)
                }
            }
        }
    }
}

/// The `model_digest` string parameter of a backend response, if any.
pub fn digest_of(
    params: &std::collections::HashMap<String, proto::InferParameter>,
) -> Option<String> {
    match params.get("model_digest")?.parameter_choice.as_ref()? {
        proto::infer_parameter::ParameterChoice::StringParam(s) => Some(s.clone()),
        _ => None,
    }
}

/// A client's `x-request-id`, if it is short and plain enough to keep.
pub fn client_request_id(value: Option<&str>) -> Option<String> {
    let v = value?;
    (!v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')))
    .then(|| v.to_owned())
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
