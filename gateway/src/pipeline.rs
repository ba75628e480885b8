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
            let resp = backend
                .model_infer(backend_request(request, p.as_ref(), &call.id))
                .await
                .map_err(|s| Refusal::from_backend(&s))?;
            call.dispatch = Some((sent - call.start, sent.elapsed()));
            call.timing = Timing::read(resp.metadata());
            let resp = resp.into_inner();
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
mod tests {
    use super::*;

    #[test]
    fn listeners_apis_and_methods_are_named_as_ovms_names_them() {
        assert_eq!(
            [Listener::Rest, Listener::Grpc].map(Listener::as_str),
            ["rest", "grpc"]
        );
        assert_eq!(
            [Listener::Rest, Listener::Grpc].map(Listener::interface),
            ["REST", "gRPC"]
        );
        assert_eq!(
            [Api::KServe, Api::Tfs].map(Api::as_str),
            ["KServe", "TensorFlowServing"]
        );
        assert_eq!(
            ALL_OPS.map(|o| o.method(Api::KServe)),
            [
                "ServerLive",
                "ServerReady",
                "ServerMetadata",
                "ModelMetadata",
                "ModelReady",
                "ModelInfer",
                "ModelConfig",
                "ModelStatistics",
                "RepositoryIndex",
                "RepositoryModelLoad",
                "RepositoryModelUnload",
                "LogSettings",
                "Check",
                "Watch",
                "ServerReflectionInfo",
                "Watch",
            ]
        );
        // TensorFlow Serving's own names for the three calls it has.
        assert_eq!(
            [
                Op::ModelMetadata,
                Op::ModelReady,
                Op::ModelInfer,
                Op::ServerLive
            ]
            .map(|o| o.method(Api::Tfs)),
            [
                "GetModelMetadata",
                "GetModelStatus",
                "Predict",
                "ServerLive"
            ]
        );
    }

    const ALL_OPS: [Op; 16] = [
        Op::ServerLive,
        Op::ServerReady,
        Op::ServerMetadata,
        Op::ModelMetadata,
        Op::ModelReady,
        Op::ModelInfer,
        Op::ModelConfig,
        Op::ModelStats,
        Op::RepositoryIndex,
        Op::RepositoryLoad,
        Op::RepositoryUnload,
        Op::LogSettings,
        Op::Health {
            watch: false,
            model: false,
        },
        Op::Health {
            watch: true,
            model: true,
        },
        Op::Reflection,
        Op::Health {
            watch: true,
            model: false,
        },
    ];

    #[test]
    fn only_server_liveness_and_configured_health_names_answer_without_a_credential() {
        use warden_shared::config::HealthConfig;
        let open = |h: HealthConfig| -> Vec<Op> {
            ALL_OPS
                .into_iter()
                .filter(|op| op.is_open_probe(&h))
                .collect()
        };
        let health = |grpc_unauthenticated, grpc_models_unauthenticated| HealthConfig {
            grpc_unauthenticated,
            grpc_models_unauthenticated,
        };
        let server_health = [
            Op::Health {
                watch: false,
                model: false,
            },
            Op::Health {
                watch: true,
                model: false,
            },
        ];
        let model_health = Op::Health {
            watch: true,
            model: true,
        };
        assert_eq!(
            open(health(false, false)),
            [Op::ServerLive, Op::ServerReady]
        );
        let mut want = vec![
            Op::ServerLive,
            Op::ServerReady,
            server_health[0],
            server_health[1],
        ];
        want.sort_by_key(|o| ALL_OPS.iter().position(|x| x == o));
        assert_eq!(open(health(true, false)), want);
        assert_eq!(
            open(health(false, true)),
            [Op::ServerLive, Op::ServerReady, model_health]
        );
    }

    #[test]
    fn each_operation_is_authorized_for_what_it_touches() {
        use Operation::*;
        let got: Vec<(Scope, Option<Operation>)> =
            ALL_OPS.map(|o| (o.scope(), o.operation())).to_vec();
        assert_eq!(
            got,
            [
                (Scope::Server, None),
                (Scope::Server, None),
                (Scope::Server, None),
                (Scope::Model(Metadata), Some(Metadata)),
                (Scope::Model(Ready), Some(Ready)),
                (Scope::Model(Infer), Some(Infer)),
                (Scope::Model(Config), Some(Config)),
                (Scope::ModelOrAll(Stats), Some(Stats)),
                (Scope::ServerWide(Admin), Some(Admin)),
                (Scope::Named(Admin), Some(Admin)),
                (Scope::Named(Admin), Some(Admin)),
                (Scope::ServerWide(Admin), Some(Admin)),
                (Scope::Server, None),
                (Scope::Model(Ready), Some(Ready)),
                (Scope::Server, None),
                (Scope::Server, None),
            ]
        );
    }

    /// A subscriber that only says how much it wants: the log filter's maximum level.
    struct MaxLevel(tracing::level_filters::LevelFilter);

    impl tracing::Subscriber for MaxLevel {
        fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
            Some(self.0)
        }
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            false
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {}
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn log_settings_are_read_from_the_log_filter() {
        use tracing::level_filters::LevelFilter;
        let at = |level| tracing::subscriber::with_default(MaxLevel(level), LogSettings::current);
        let settings = |info, warning, error, verbose_level| LogSettings {
            info,
            warning,
            error,
            verbose_level,
        };
        assert_eq!(at(LevelFilter::OFF), settings(false, false, false, 0));
        assert_eq!(at(LevelFilter::ERROR), settings(false, false, true, 0));
        assert_eq!(at(LevelFilter::WARN), settings(false, true, true, 0));
        assert_eq!(at(LevelFilter::INFO), settings(true, true, true, 0));
        assert_eq!(at(LevelFilter::DEBUG), settings(true, true, true, 1));
        assert_eq!(at(LevelFilter::TRACE), settings(true, true, true, 2));
    }

    /// A gateway's state as `warden gateway` builds it (real TLS configuration, audit
    /// log, policy, catalog), with a backend socket nobody listens on: the pipeline's
    /// own steps, without a front.
    struct Harness {
        state: State,
        dir: std::path::PathBuf,
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn harness(tag: &str, policy: &str, models: &[(&str, &str)]) -> Harness {
        harness_with(tag, policy, models, |_| {})
    }

    fn harness_with(
        tag: &str,
        policy: &str,
        models: &[(&str, &str)],
        tweak: impl FnOnce(&mut warden_shared::config::Config),
    ) -> Harness {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "warden-pipeline-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        let tls = |alpn: &[&[u8]]| {
            crate::tls::server_config(&dir.join("cert.pem"), &dir.join("key.pem"), alpn, None)
                .unwrap()
        };
        let mut config = warden_shared::config::Config::default();
        config.audit.path = dir.join("audit.log");
        config.backend.socket_dir = dir.join("no-backend");
        tweak(&mut config);
        let jwt = crate::auth::jwt::JwtAuthority::from_config(&config.auth).unwrap();
        let audit = crate::audit::AuditLog::open(&config.audit).unwrap();
        let (backend, gauges) = crate::backend_client::connect_lazy(config.socket_path());
        let tls = (tls(&[b"h2"]), tls(&[b"h2"]));
        let policy = crate::authz::Policy::from_toml(policy).unwrap();
        let state = State::new(config, jwt, policy, tls, audit, backend, gauges);
        // No model at all: the catalog is left unread, as before the backend answers.
        if !models.is_empty() {
            state.catalog.replace(&proto::RepositoryIndexResponse {
                models: models
                    .iter()
                    .map(
                        |(name, version)| proto::repository_index_response::ModelIndex {
                            name: (*name).into(),
                            version: (*version).into(),
                            state: "READY".into(),
                            reason: String::new(),
                        },
                    )
                    .collect(),
            });
        }
        Harness { state, dir }
    }

    fn call_of(state: &State, subject: &str) -> Call {
        let conn = Arc::new(ConnInfo {
            peer: "192.0.2.7:50000".parse().unwrap(),
            tls_version: "TLSv1.3",
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            alpn: Some("h2".into()),
            client_cert: None,
            activity: crate::peer::Activity::new(),
        });
        let head = Head {
            listener: Listener::Grpc,
            api: Api::KServe,
            protocol: "gRPC",
            op: Ok(Op::ModelInfer),
            target: None,
            token: None,
            client_request_id: None,
            deadline: None,
            declared_len: None,
        };
        let mut call = state.begin(conn, &head);
        call.principal = Some(Principal {
            method: crate::auth::Method::Jwt,
            subject: subject.into(),
            issuer: "https://issuer.example".into(),
            key_id: None,
            jti_hash: None,
            scopes: vec![],
            groups: vec![],
            certificate: None,
        });
        call
    }

    fn target(model: &str, version: &str) -> Target {
        Target {
            model: model.into(),
            version: version.into(),
        }
    }

    const ALICE_ON_M: &str = "[[rule]]\nname = 'alice-m'\nsubjects = ['alice']\nmodels = ['m']\noperations = ['infer']\n\
                              [[rule]]\nname = 'bob-any'\nsubjects = ['bob']\nmodels = ['*']\noperations = ['infer']\n";

    #[tokio::test]
    async fn a_model_is_authorized_before_its_existence_is_told() {
        let h = harness(
            "admit",
            ALICE_ON_M,
            &[("m", "1"), ("m", "2"), ("other", "1")],
        );
        let s = &h.state;
        let admit = |subject: &str, model: &str, version: &str| {
            let mut call = call_of(s, subject);
            let t = target(model, version);
            async move {
                let r = s.admit_model(&mut call, &t, Operation::Infer).await;
                (
                    r,
                    call.rule.clone(),
                    call.model.clone(),
                    call.version.clone(),
                )
            }
        };
        // Allowed: the rule that allowed it is recorded, with the model and version.
        assert_eq!(
            admit("alice", "m", "2").await,
            (
                Ok(()),
                Some("alice-m".into()),
                Some("m".into()),
                Some("2".into())
            )
        );
        // Not allowed: refused, whether the model exists or not (no rule, no answer
        // about the repository), and never under another operation.
        assert_eq!(admit("alice", "other", "").await.0, Err(Refusal::Forbidden));
        assert_eq!(admit("alice", "ghost", "").await.0, Err(Refusal::Forbidden));
        assert_eq!(admit("mallory", "m", "").await.0, Err(Refusal::Forbidden));
        let mut call = call_of(s, "alice");
        let m = target("m", "");
        let metadata = s.admit_model(&mut call, &m, Operation::Metadata).await;
        assert_eq!(metadata, Err(Refusal::Forbidden));
        // Allowed everywhere: now the repository answers.
        assert_eq!(
            admit("bob", "ghost", "").await.0,
            Err(Refusal::UnknownModel)
        );
        assert_eq!(admit("bob", "m", "9").await.0, Err(Refusal::UnknownVersion));
        let (r, rule, model, version) = admit("bob", "other", "").await;
        assert_eq!(
            (r, rule, model, version),
            (Ok(()), Some("bob-any".into()), Some("other".into()), None)
        );
        // Names are checked before anything else.
        assert!(matches!(
            admit("bob", "../m", "").await.0,
            Err(Refusal::BadName(_))
        ));
        assert!(matches!(
            admit("bob", "m", "x").await.0,
            Err(Refusal::BadName(_))
        ));
        // A call without a principal never gets this far; if it did, it is refused.
        let mut anonymous = call_of(s, "bob");
        anonymous.principal = None;
        let r = s.admit_model(&mut anonymous, &m, Operation::Infer).await;
        assert_eq!(r, Err(Refusal::Internal));
    }

    fn last_record(h: &Harness) -> serde_json::Value {
        let text = std::fs::read_to_string(h.dir.join("audit.log")).unwrap();
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn without_the_backends_catalog_a_model_call_is_refused_as_unavailable() {
        let h = harness("no-catalog", ALICE_ON_M, &[]);
        let s = &h.state;
        let mut call = call_of(s, "alice");
        // The backend is asked (nobody listens), and the call refused, not guessed at.
        let r = s
            .admit_model(&mut call, &target("m", ""), Operation::Infer)
            .await;
        assert_eq!(r, Err(Refusal::BackendUnavailable));
        assert!(!s.catalog.loaded());
    }

    #[tokio::test]
    async fn probes_answer_from_the_backend_and_are_limited_per_ip() {
        let h = harness_with("probes", ALICE_ON_M, &[("m", "1")], |c| {
            c.limits.rate_per_ip_unauthenticated_rps = 1;
            c.limits.rate_burst_seconds = 4;
        });
        let s = &h.state;
        let from = |ip: &str| ConnInfo {
            peer: format!("{ip}:50000").parse().unwrap(),
            ..(*call_of(s, "x").conn).clone()
        };
        // One client IP: its burst of 4, then refused (the calls follow each other
        // within far less than the second a token takes to come back).
        let a = from("192.0.2.7");
        for _ in 0..4 {
            assert!(matches!(
                s.probe::<()>(&a, Op::ServerLive, None).await,
                Ok(Answer::Live)
            ));
        }
        assert!(matches!(
            s.probe::<()>(&a, Op::ServerLive, None).await,
            Err(Refusal::RateLimited(_))
        ));
        // Another IP has its own budget. Nobody answers on the backend's socket: not
        // ready, not serving.
        let b = from("192.0.2.8");
        assert!(matches!(
            s.probe::<()>(&b, Op::ServerReady, None).await,
            Ok(Answer::Ready(false))
        ));
        let health = Op::Health {
            watch: false,
            model: true,
        };
        assert!(matches!(
            s.probe::<()>(&b, health, Some(&target("m", ""))).await,
            Ok(Answer::Health(Serving::NotServing))
        ));
        // A model's health names only a model the repository has, by a valid name.
        assert!(matches!(
            s.probe::<()>(&b, health, Some(&target("ghost", ""))).await,
            Err(Refusal::UnknownModel)
        ));
        assert!(matches!(
            s.probe::<()>(&b, health, Some(&target("../m", ""))).await,
            Err(Refusal::BadName(_))
        ));
    }

    #[tokio::test]
    async fn every_decision_is_recorded_and_a_call_whose_record_cannot_be_written_fails() {
        let h = harness("finish", ALICE_ON_M, &[("m", "1")]);
        let s = &h.state;
        let mut call = call_of(s, "alice");
        s.admit_model(&mut call, &target("m", ""), Operation::Infer)
            .await
            .unwrap();
        let id = call.id.clone();
        assert_eq!(s.finish(call, None, 200, Some(0)).await, Ok(()));
        let r = last_record(&h);
        assert_eq!(r["request_id"], id.as_str());
        assert_eq!(
            (
                &r["principal"],
                &r["model"],
                &r["operation"],
                &r["listener"]
            ),
            (
                &"alice".into(),
                &"m".into(),
                &"infer".into(),
                &"grpc".into()
            )
        );
        assert_eq!(
            (&r["decision"], &r["reason"]),
            (&"allowed".into(), &"rule: alice-m".into())
        );
        assert_eq!((&r["status"], &r["grpc_code"]), (&200.into(), &0.into()));

        let refused = call_of(s, "mallory");
        let forbidden = Refusal::Forbidden;
        assert_eq!(
            s.finish(refused, Some(&forbidden), 403, Some(7)).await,
            Ok(())
        );
        let r = last_record(&h);
        assert_eq!(
            (&r["decision"], &r["principal"]),
            (&"denied".into(), &"mallory".into())
        );
        assert_eq!(r["reason"], forbidden.reason().as_str());
        let chain = crate::audit::verify(&[h.dir.join("audit.log")]).unwrap();
        assert!(chain.is_ok(), "the records chain");

        // Fail closed: a call whose record cannot be written is refused, whatever
        // its own outcome, and counted.
        s.audit.break_writes();
        let call = call_of(s, "alice");
        assert_eq!(
            s.finish(call, None, 200, Some(0)).await,
            Err(Refusal::AuditUnavailable)
        );
        let call = call_of(s, "mallory");
        assert_eq!(
            s.finish(call, Some(&forbidden), 403, Some(7)).await,
            Err(Refusal::AuditUnavailable)
        );
    }

    #[tokio::test]
    async fn an_inference_counts_in_its_versions_statistics_as_it_ended() {
        let h = harness("stats", ALICE_ON_M, &[("m", "1"), ("m", "2")]);
        let s = &h.state;
        let counts = || {
            let v = s.stats.get("m", 2);
            (v.success.count, v.fail.count)
        };
        // Named version, or the latest when none is named; a 4xx or a refusal fails.
        for (version, status, refusal, want) in [
            ("2", 200, None, (1, 0)),
            ("", 200, None, (2, 0)),
            ("2", 399, None, (3, 0)),
            ("2", 400, None, (3, 1)),
            ("2", 200, Some(Refusal::Timeout), (3, 2)),
        ] {
            let mut call = call_of(s, "alice");
            s.admit_model(&mut call, &target("m", version), Operation::Infer)
                .await
                .unwrap();
            s.finish(call, refusal.as_ref(), status, None)
                .await
                .unwrap();
            assert_eq!(counts(), want, "version {version:?}, status {status}");
        }
        assert_eq!(
            s.stats.get("m", 1),
            Default::default(),
            "version 1 was not called"
        );
        // Only inferences count.
        let mut call = call_of(s, "alice");
        s.admit_model(&mut call, &target("m", "2"), Operation::Infer)
            .await
            .unwrap();
        call.op = Some(Op::ModelMetadata);
        s.finish(call, None, 200, None).await.unwrap();
        assert_eq!(counts(), (3, 2));
        // An empty version is not recorded as one.
        let mut call = call_of(s, "alice");
        call.version = Some(String::new());
        s.finish(call, None, 200, None).await.unwrap();
        assert_eq!(last_record(&h).get("version"), None);
    }

    #[tokio::test]
    async fn each_call_is_counted_in_the_metrics_ovms_names() {
        let h = harness("metrics", ALICE_ON_M, &[("m", "1")]);
        let s = &h.state;
        let finished = |op: Op, refusal: Option<Refusal>, status: u16| async move {
            let mut call = call_of(s, "alice");
            s.admit_model(&mut call, &target("m", "1"), Operation::Infer)
                .await
                .unwrap();
            call.op = Some(op);
            s.finish(call, refusal.as_ref(), status, None)
                .await
                .unwrap();
        };
        finished(Op::ModelInfer, None, 200).await;
        finished(Op::ModelInfer, None, 200).await;
        finished(Op::ModelInfer, None, 500).await;
        finished(Op::ModelReady, None, 200).await;
        finished(Op::ModelInfer, Some(Refusal::BackendUnavailable), 503).await;
        let text = s.metrics.render(|_| true);
        let has = |line: &str| assert!(text.contains(line), "{line} in:\n{text}");
        has(
            "ovms_requests_success{api=\"KServe\",interface=\"gRPC\",method=\"ModelInfer\",name=\"m\",version=\"1\"} 2\n",
        );
        has(
            "ovms_requests_fail{api=\"KServe\",interface=\"gRPC\",method=\"ModelInfer\",name=\"m\",version=\"1\"} 2\n",
        );
        // OVMS labels ModelReady without a version.
        has(
            "ovms_requests_success{api=\"KServe\",interface=\"gRPC\",method=\"ModelReady\",name=\"m\"} 1\n",
        );
        // Only successful inferences are timed.
        has("ovms_request_time_us_count{interface=\"gRPC\",name=\"m\",version=\"1\"} 2\n");
        has("warden_requests_total{api=\"KServe\",interface=\"gRPC\",decision=\"allowed\"} 4\n");
        has("warden_refusals_total{reason=\"backend_unavailable\"} 1\n");
        has("warden_backend_unavailable_total 1\n");
        // A call that never named a model the repository has counts in no model series.
        let stranger = call_of(s, "mallory");
        s.finish(stranger, Some(&Refusal::Forbidden), 403, Some(7))
            .await
            .unwrap();
        let text = s.metrics.render(|_| true);
        assert!(!text.contains("method=\"Unknown\""), "{text}");
    }

    #[tokio::test]
    async fn statistics_of_every_model_list_only_those_the_caller_may_read() {
        let policy = "[[rule]]\nname = 'stats'\nsubjects = ['alice']\nmodels = ['m*']\noperations = ['stats']\n";
        let h = harness(
            "model-stats",
            policy,
            &[("m1", "1"), ("m1", "2"), ("m2", "1"), ("other", "1")],
        );
        let s = &h.state;
        let listed = |call: &Call, model: &str, version: &str| -> Vec<(String, String)> {
            s.model_stats(call, &target(model, version))
                .into_iter()
                .map(|m| (m.name, m.version))
                .collect()
        };
        let pair = |m: &str, v: &str| (m.to_string(), v.to_string());
        let alice = call_of(s, "alice");
        let mut all = listed(&alice, "", "");
        all.sort();
        assert_eq!(all, [pair("m1", "1"), pair("m1", "2"), pair("m2", "1")]);
        assert_eq!(listed(&alice, "m1", "2"), [pair("m1", "2")]);
        assert_eq!(listed(&alice, "m1", "3"), []);
        assert_eq!(listed(&call_of(s, "mallory"), "", ""), []);
        let mut anonymous = call_of(s, "alice");
        anonymous.principal = None;
        assert_eq!(listed(&anonymous, "", ""), []);
    }

    #[tokio::test]
    async fn with_audit_fail_open_a_call_is_served_without_its_record() {
        let h = harness("fail-open", ALICE_ON_M, &[("m", "1")]);
        // The configuration is read when deciding: set it as an operator would.
        let mut config = h.state.config.clone();
        config.audit.fail_open = true;
        let audit = crate::audit::AuditLog::open(&config.audit).unwrap();
        audit.break_writes();
        assert!(audit.fail_open());
        let s = State::new(
            config,
            crate::auth::jwt::JwtAuthority::from_config(&Default::default()).unwrap(),
            crate::authz::Policy::from_toml(ALICE_ON_M).unwrap(),
            (h.state.tls(false), h.state.tls(true)),
            audit,
            h.state.backend.clone(),
            h.state.backend_gauges.clone(),
        );
        let call = call_of(&s, "alice");
        assert_eq!(s.finish(call, None, 200, Some(0)).await, Ok(()));
    }

    #[tokio::test]
    async fn each_budget_refuses_past_its_limit_and_only_its_own_callers() {
        let h = harness_with("budgets", ALICE_ON_M, &[("m", "1")], |c| {
            c.limits.rate_per_principal_rps = 1;
            c.limits.rate_per_model_rps = 0;
            c.limits.rate_total_rps = 0;
            c.limits.rate_per_ip_unauthenticated_rps = 1;
            c.limits.rate_burst_seconds = 2;
            c.limits.quota_bytes = 0;
            c.limits.quota_per_principal_bytes = 1000;
        });
        let s = &h.state;
        // Per principal: a burst of 2, then refused; another principal is not.
        let alice = call_of(s, "alice").principal.unwrap();
        let bob = call_of(s, "bob").principal.unwrap();
        assert_eq!(s.admit_principal(&alice), Ok(()));
        assert_eq!(s.admit_principal(&alice), Ok(()));
        assert!(matches!(
            s.admit_principal(&alice),
            Err(Refusal::RateLimited(_))
        ));
        assert_eq!(s.admit_principal(&bob), Ok(()));
        // Per client IP, for calls without a credential.
        let conn = call_of(s, "x").conn;
        assert_eq!(s.limit_ip(&conn), Ok(()));
        assert_eq!(s.limit_ip(&conn), Ok(()));
        assert!(matches!(s.limit_ip(&conn), Err(Refusal::RateLimited(_))));
        // Memory: a principal's calls together stay under its quota; a call that ends
        // gives its bytes back. (Step 2 starts each call's reservation.)
        let reserved = |who: &str| {
            let mut call = call_of(s, who);
            call.reservation = s.quotas.start(Some(who));
            call
        };
        let mut first = reserved("alice");
        assert_eq!(s.charge(&mut first, 600), Ok(()));
        let mut second = reserved("alice");
        assert!(matches!(s.charge(&mut second, 600), Err(Refusal::Quota(_))));
        let mut other = reserved("bob");
        assert_eq!(s.charge(&mut other, 600), Ok(()));
        drop(first);
        assert_eq!(s.charge(&mut second, 600), Ok(()));
    }

    #[tokio::test]
    async fn a_bad_credential_is_refused_and_a_flood_of_them_is_rate_limited_per_ip() {
        let h = harness_with("authn", ALICE_ON_M, &[("m", "1")], |c| {
            c.limits.rate_per_ip_unauthenticated_rps = 1;
            c.limits.rate_burst_seconds = 1;
        });
        let s = &h.state;
        let call = call_of(s, "x");
        assert!(matches!(
            s.authenticate(&call, Some("not.a.token")),
            Err(Refusal::Unauthenticated(_))
        ));
        assert!(matches!(
            s.authenticate(&call, None),
            Err(Refusal::RateLimited(_))
        ));
    }

    #[tokio::test]
    async fn a_named_or_server_wide_operation_is_authorized_without_the_repository() {
        let policy =
            "[[rule]]\nname = 'ops'\nsubjects = ['ops']\nmodels = ['*']\noperations = ['admin']\n";
        let h = harness("named", policy, &[]);
        let s = &h.state;
        let mut call = call_of(s, "ops");
        assert_eq!(
            s.admit_named(&mut call, &target("new-model", ""), Operation::Admin),
            Ok(())
        );
        assert_eq!(call.rule.as_deref(), Some("ops"));
        assert_eq!(
            call.model, None,
            "a name the repository may not have is never recorded"
        );
        let mut call = call_of(s, "ops");
        let server = target(crate::authz::SERVER_WIDE, "");
        assert_eq!(s.admit_named(&mut call, &server, Operation::Admin), Ok(()));
        let mut call = call_of(s, "alice");
        assert_eq!(
            s.admit_named(&mut call, &target("new-model", ""), Operation::Admin),
            Err(Refusal::Forbidden)
        );
        let mut call = call_of(s, "ops");
        assert!(matches!(
            s.admit_named(&mut call, &target("../x", ""), Operation::Admin),
            Err(Refusal::BadName(_))
        ));
        call.principal = None;
        assert_eq!(
            s.admit_named(&mut call, &target("x", ""), Operation::Admin),
            Err(Refusal::Internal)
        );
    }

    #[test]
    fn a_call_is_counted_out_however_it_ends() {
        // The count shutdown waits on (lib.rs drains until it is 0).
        let count = Arc::new(std::sync::atomic::AtomicI64::new(2));
        drop(InFlight(Arc::clone(&count)));
        assert_eq!(count.load(std::sync::atomic::Ordering::Acquire), 1);
        let held = InFlight(Arc::clone(&count));
        let unwound = std::panic::catch_unwind(move || {
            let _call = held;
            panic!("a call that fails half way");
        });
        assert!(unwound.is_err());
        assert_eq!(count.load(std::sync::atomic::Ordering::Acquire), 0);
    }

    #[test]
    fn versions_are_digits_and_bounded() {
        assert!(check_version("").is_ok());
        assert!(check_version("12").is_ok());
        assert!(check_version(&"9".repeat(20)).is_ok());
        for bad in ["x", "-1", "1.0", " 1", &"9".repeat(21)] {
            assert_eq!(
                check_version(bad),
                Err(Refusal::BadName("model version must be a positive integer")),
                "{bad}"
            );
        }
    }

    #[test]
    fn client_request_ids_are_kept_only_when_plain() {
        assert_eq!(
            client_request_id(Some("abc-1.2:3")),
            Some("abc-1.2:3".into())
        );
        assert_eq!(client_request_id(Some("a\nb")), None);
        assert_eq!(client_request_id(Some(&"a".repeat(65))), None);
        assert_eq!(client_request_id(Some("")), None);
    }
}
