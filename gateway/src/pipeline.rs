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
//! refusal), nothing it names is stored, logged or used as a label.

use crate::audit::Record;
use crate::auth::{self, Principal};
use crate::authz::Operation;
use crate::backend_client::backend_request;
use crate::catalog::Lookup;
use crate::limits::quota::Reservation;
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
        }
    }

    /// The operation the policy authorizes, for calls on a model.
    pub fn operation(self) -> Option<Operation> {
        match self {
            Op::ModelMetadata => Some(Operation::Metadata),
            Op::ModelReady => Some(Operation::Ready),
            Op::ModelInfer => Some(Operation::Infer),
            _ => None,
        }
    }

    /// Health probes: open (rate-limited per client IP), not audited.
    pub fn is_health(self) -> bool {
        matches!(self, Op::ServerLive | Op::ServerReady)
    }
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
    /// The model and version a message names (fronts whose head does not).
    fn target(&self, op: Op, message: &[u8]) -> Result<Target, Refusal>;
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
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub reservation: Reservation,
    _in_flight: InFlight,
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
}

impl Body {
    pub fn new(inner: Incoming, declared: Option<u64>) -> Body {
        Body {
            inner: Some(inner),
            declared,
        }
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
    let mut body = Body::new(body, head.declared_len);
    if let Ok(op) = head.op
        && op.is_health()
    {
        let id = state.next_request_id();
        let rendered = match state.health(conn, op).await {
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
    let response = match state.finish(call, refusal.as_ref(), rendered.status, rendered.grpc_code) {
        Ok(()) => rendered.response,
        Err(refused) => codec.refuse(&id, &refused).response,
    };
    Served {
        response,
        body_unfinished: body_unfinished && body.unfinished(),
    }
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
    let principal = state.authenticate(call, head.token.as_deref())?;
    call.reservation = state.quotas.start(Some(&principal.display_name()));
    let principal = call.principal.insert(principal);
    state.admit_principal(principal)?;
    if let (Some(t), Some(operation)) = (&head.target, op.operation()) {
        state.admit_model(call, t, operation).await?;
    }
    let message = if codec.has_body(op) {
        let cap = codec.body_cap(&state.config.limits, op);
        let framed = |first: &[u8]| codec.framed_len(first);
        codec.message(body.read(state, call, cap, &framed).await?)?
    } else {
        Bytes::new()
    };
    let target = match (&head.target, op.operation()) {
        (Some(t), _) => t.clone(),
        (None, Some(operation)) => {
            let t = codec.target(op, &message)?;
            state.admit_model(call, &t, operation).await?;
            t
        }
        (None, None) => Target::default(),
    };
    let mut backend = state.backend.clone();
    let p = call.principal.clone();
    match op {
        Op::ServerLive | Op::ServerReady => unreachable!("health is answered before the pipeline"),
        Op::ServerMetadata => Ok(Answer::ServerMetadata),
        Op::ModelMetadata => {
            let meta = model_metadata(&mut backend, &target, p.as_ref(), &call.id).await?;
            let version = if target.version.is_empty() {
                meta.versions.first().cloned().unwrap_or_default()
            } else {
                target.version
            };
            Ok(Answer::ModelMetadata { meta, version })
        }
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
                Some(model_metadata(&mut backend, &target, p.as_ref(), &call.id).await?)
            } else {
                None
            };
            let (request, shape) = {
                let mut charge = |n: usize| state.charge(call, n);
                codec.decode_infer(&target, message, limits, metadata.as_ref(), &mut charge)?
            };
            // The socket client encodes the request into one buffer of its own.
            state.charge(call, prost::Message::encoded_len(&request))?;
            let resp = backend
                .model_infer(backend_request(request, p.as_ref(), &call.id))
                .await
                .map_err(|s| Refusal::from_backend(&s))?
                .into_inner();
            // The backend answers the version it used; record that one.
            call.version = Some(resp.model_version.clone());
            call.model_digest = digest_of(&resp.parameters);
            Ok(Answer::Infer(resp, shape))
        }
    }
}

/// The model's metadata, from the backend.
async fn model_metadata(
    backend: &mut crate::backend_client::BackendClient,
    target: &Target,
    principal: Option<&Principal>,
    id: &str,
) -> Result<proto::ModelMetadataResponse, Refusal> {
    Ok(backend
        .model_metadata(backend_request(
            proto::ModelMetadataRequest {
                name: target.model.clone(),
                version: target.version.clone(),
            },
            principal,
            id,
        ))
        .await
        .map_err(|s| Refusal::from_backend(&s))?
        .into_inner())
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
            bytes_in: 0,
            bytes_out: 0,
            reservation: Reservation::default(),
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
            self.metrics
                .inc("warden_auth_failures_total", &[("reason", e.reason())]);
            tracing::info!(request_id = %call.id, peer = %call.conn.peer, reason = e.reason(), "authentication failed");
            match self.rates.check_ip(call.conn.peer.ip()) {
                Err(l) => {
                    self.metrics
                        .inc("warden_rate_limited_total", &[("scope", l.scope.as_str())]);
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
                self.metrics
                    .inc("warden_rate_limited_total", &[("scope", l.scope.as_str())]);
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
        }
        let p = call.principal.as_ref().ok_or(Refusal::Internal)?;
        let version = t.version.parse().ok();
        match self.policy().allows(p, &t.model, version, operation) {
            Some(rule) => call.rule = Some(rule.to_owned()),
            None => {
                let label = call.model.as_deref().unwrap_or(UNKNOWN_MODEL_LABEL);
                self.metrics
                    .inc("warden_authz_denied_total", &[("model", label)]);
                tracing::info!(request_id = %call.id, principal = %p.log_name(), model = label, op = operation.as_str(), "authorization denied");
                return Err(Refusal::Forbidden);
            }
        }
        match lookup {
            Lookup::UnknownModel => Err(Refusal::UnknownModel),
            Lookup::UnknownVersion => Err(Refusal::UnknownVersion),
            Lookup::Known => self.rates.check_model(&t.model).map_err(|l| {
                self.metrics
                    .inc("warden_rate_limited_total", &[("scope", l.scope.as_str())]);
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
                self.metrics
                    .inc("warden_quota_refused_total", &[("scope", scope.as_str())]);
                Refusal::Quota(scope)
            })
    }

    /// Health probes: limited per client IP. Ready means the backend has its models,
    /// the audit log can be written (a server that would refuse every request for want
    /// of an audit log is not ready) and the server is not draining.
    async fn health<S>(&self, conn: &ConnInfo, op: Op) -> Result<Answer<S>, Refusal> {
        self.rates.check_ip(conn.peer.ip()).map_err(|l| {
            self.metrics
                .inc("warden_rate_limited_total", &[("scope", l.scope.as_str())]);
            Refusal::RateLimited(l)
        })?;
        if op == Op::ServerLive {
            return Ok(Answer::Live);
        }
        let backend = self
            .backend
            .clone()
            .server_ready(proto::ServerReadyRequest {})
            .await
            .map(|r| r.into_inner().ready)
            .unwrap_or(false);
        let ready = backend
            && (self.audit.healthy() || self.audit.fail_open())
            && !self.draining.load(std::sync::atomic::Ordering::Relaxed);
        Ok(Answer::Ready(ready))
    }

    /// Step 8: metrics and the audit record. `Err` carries the refusal to answer with
    /// instead, when the record could not be written (fail closed).
    fn finish(
        &self,
        call: Call,
        refusal: Option<&Refusal>,
        status: u16,
        grpc_code: Option<i32>,
    ) -> Result<(), Refusal> {
        let latency = call.start.elapsed();
        let model = call.model.as_deref().unwrap_or("");
        let version = call.version.as_deref().unwrap_or("");
        let labels = [
            ("api", call.api.as_str()),
            ("interface", call.listener.interface()),
            (
                "method",
                call.op.map_or("Unknown", |op| op.method(call.api)),
            ),
            ("name", model),
            ("version", version),
        ];
        let ok = refusal.is_none() && status < 400;
        self.metrics.inc(
            if ok {
                "ovms_requests_success"
            } else {
                "ovms_requests_fail"
            },
            &labels,
        );
        if let Some(r) = refusal {
            self.metrics
                .inc("warden_refusals_total", &[("reason", r.label())]);
        }
        if call.model.is_some() {
            self.metrics.observe(
                "ovms_request_time_us",
                &[
                    ("interface", call.listener.interface()),
                    ("name", model),
                    ("version", version),
                ],
                latency.as_micros() as f64,
            );
        }
        let (decision, reason) = match refusal {
            None => (
                Decision::Allowed,
                call.rule.as_ref().map(|r| format!("rule: {r}")),
            ),
            Some(r) => (r.decision(), Some(r.reason())),
        };
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
        match self.audit.write(&record) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.metrics.inc("warden_audit_write_failures_total", &[]);
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
