//! Warden's backend: the only process that reads models and runs OpenVINO.
//!
//! Start-up is strictly ordered (see [`run`]): everything that needs privileges or the
//! environment happens first, then the process enters its sandbox, and only then are
//! threads started, the OpenVINO library loaded and model files read.

pub mod integrity;
pub mod model;
pub mod runtime;
pub mod sandbox;
pub mod service;
pub mod validate;

use anyhow::Context;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;
use warden_shared::backend_proto::backend_gauges_server::BackendGaugesServer;
use warden_shared::config::{Config, OPENVINO_DIR_ENV};
use warden_shared::frames;
use warden_shared::proto::grpc_inference_service_server::GrpcInferenceServiceServer;
use warden_shared::repository::ModelSpec;

/// How the backend is started beyond its configuration.
#[derive(Debug, Clone, Default)]
pub struct BackendOptions {
    /// Dev-only: start even if the kernel cannot enforce Landlock.
    pub insecure_allow_unenforced_sandbox: bool,
    /// The uid allowed to connect to the socket; defaults to the gateway's configured uid
    /// when started as root, else this process's own uid.
    pub gateway_uid: Option<u32>,
    /// `warden check --probe`: enter the sandbox, load and verify every model, run one
    /// inference on zeros of each declared shape, print a table, and exit (no socket).
    pub probe: bool,
}

/// The models to load, resolved before the sandbox (the operator's config.json is read
/// here because its base paths become the sandbox's read-only rules).
fn model_specs(config: &Config) -> anyhow::Result<(Vec<ModelSpec>, Vec<PathBuf>)> {
    // Remote repositories are read from the fetcher's cache, never from the network.
    let (specs, file) = config.model_specs().map_err(anyhow::Error::msg)?;
    Ok((specs, file.into_iter().collect()))
}

/// Binds the socket with a umask that makes it 0660 from the start: no window in which
/// another user could connect before a chmod.
fn bind_socket(path: &Path) -> std::io::Result<StdUnixListener> {
    check_socket_dir(path)?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o117));
    let bound = StdUnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound?;
    debug_assert_eq!(std::fs::metadata(path)?.permissions().mode() & 0o777, 0o660);
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The folder the socket goes in must be a real folder (not a symlink, which would let
/// whoever planted it choose where the socket lands) owned by this uid or root, and
/// nobody else may create files in it (they could replace the socket between our bind
/// and the gateway's connect). `warden serve` creates it so (02750, backend:gateway).
fn check_socket_dir(socket: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let m = std::fs::symlink_metadata(dir)?;
    if m.file_type().is_symlink() || !m.is_dir() {
        return Err(refuse(format!(
            "socket directory {} is a symlink or not a directory; refused",
            dir.display()
        )));
    }
    let me = nix::unistd::geteuid().as_raw();
    if m.uid() != me && m.uid() != 0 {
        return Err(refuse(format!(
            "socket directory {} belongs to uid {}, not to this process (uid {me}) or root; refused",
            dir.display(),
            m.uid()
        )));
    }
    // Writable by others without the sticky bit: anyone could unlink our socket.
    if m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0 {
        return Err(refuse(format!(
            "socket directory {} is writable by other users (mode {:o}); refused",
            dir.display(),
            m.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Everything the backend reads before it enters its sandbox: the runtime folder, the
/// models to load, the signing keys, who may connect and the sandbox's plan. Made by
/// [`wire`]; served by [`Wired::serve`]. The benchmark's instruction-count harness
/// (bench/stages) wires the same way, so what it measures is the backend the binary runs.
pub struct Wired {
    config: Config,
    runtime_dir: PathBuf,
    specs: Vec<ModelSpec>,
    integrity: integrity::Integrity,
    gateway_uid: u32,
    plan: warden_sandbox::Plan,
    restarts: u64,
    probe: bool,
}

/// Reads and checks everything the backend needs before its sandbox (see [`Wired`]).
/// Starts no thread and reads no model byte.
pub fn wire(config: &Config, options: &BackendOptions) -> anyhow::Result<Wired> {
    config.validate()?;
    let started_as_root = nix::unistd::getuid().is_root();
    let runtime_dir = runtime::locate(
        config.backend.openvino_dir.as_deref(),
        std::env::var_os(OPENVINO_DIR_ENV).map(PathBuf::from),
    )?;
    let (specs, extra_files) = model_specs(config)?;
    // Trusted keys are read now, like the config: the sandbox need not allow them.
    let integrity =
        integrity::Integrity::load(&config.signing).context("cannot load the signing keys")?;
    let gateway_uid = options
        .gateway_uid
        .or(config.backend.gateway_uid)
        .unwrap_or(if started_as_root {
            config.gateway.uid
        } else {
            nix::unistd::getuid().as_raw()
        });
    let mut read_only: Vec<PathBuf> = vec![runtime_dir.clone()];
    read_only.extend(specs.iter().map(|s| s.base_path.clone()));
    read_only.extend(extra_files);
    let enforcement = if options.insecure_allow_unenforced_sandbox {
        sandbox::Enforcement::BestEffort
    } else {
        sandbox::Enforcement::Required
    };
    let plan = sandbox::plan(
        config.backend.uid,
        config.backend.gid,
        read_only,
        enforcement,
    )
    .map_err(anyhow::Error::msg)?;
    if enforcement == sandbox::Enforcement::BestEffort {
        tracing::warn!(
            "INSECURE: --insecure-allow-unenforced-sandbox is set; the backend may run without Landlock or seccomp"
        );
    }
    // Set by `warden serve` on each backend it starts; absent when run alone. Read now:
    // the sandbox clears the environment.
    let restarts: u64 = std::env::var(warden_shared::wire::BACKEND_RESTARTS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Wired {
        config: config.clone(),
        runtime_dir,
        specs,
        integrity,
        gateway_uid,
        plan,
        restarts,
        probe: options.probe,
    })
}

impl Wired {
    /// Binds the backend's socket (mode 0660, in a folder only its owner may write).
    pub fn bind(&self) -> std::io::Result<StdUnixListener> {
        let socket_path = self.config.socket_path();
        bind_socket(&socket_path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "binding the backend socket {} failed: {e}",
                    socket_path.display()
                ),
            )
        })
    }

    /// Serves `listener` until SIGTERM/SIGINT (or runs the probe): starts the runtime's
    /// threads, loads the OpenVINO library and reads the model files, so the sandbox
    /// (if any) must be entered before.
    pub fn serve(self, listener: Option<StdUnixListener>) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("warden-backend")
            .build()?;
        if self.probe {
            return rt.block_on(probe(
                self.specs,
                self.runtime_dir,
                self.integrity,
                &self.config,
            ));
        }
        let listener = listener.context("socket not bound")?;
        rt.block_on(serve(
            listener,
            self.config,
            self.specs,
            self.runtime_dir,
            self.integrity,
            self.gateway_uid,
            self.restarts,
        ))
    }
}

/// Runs the backend until SIGTERM/SIGINT: [`wire`], enter the sandbox (binding the
/// socket on the way in), [`Wired::serve`].
pub fn run(config: &Config, options: &BackendOptions) -> anyhow::Result<()> {
    let wired = wire(config, options)?;
    let mut listener = None;
    // INVARIANT: no thread exists yet and no model byte has been read.
    let report = sandbox::enter(&wired.plan, || {
        if !wired.probe {
            listener = Some(wired.bind()?);
        }
        Ok(())
    })
    .context("the backend could not enter its sandbox")?;
    for w in &report.warnings {
        tracing::warn!("sandbox: {w}");
    }
    tracing::info!(
        uid = report.uid,
        gid = report.gid,
        limits = %report.limits,
        landlock = %report.landlock,
        seccomp = %report.seccomp,
        bounding_set_cleared = report.bounding_set_cleared,
        "backend sandboxed"
    );
    // Only now: threads, the runtime library, model files.
    wired.serve(listener)
}

/// `warden check --probe`, inside the sandbox: every configured model is loaded (and
/// its signature verified), then run once on zeros of its declared shape (dynamic
/// dimensions as 1), as the OVMS docs advise testing a configuration before deploying
/// it. Prints one line per model version; fails if any model fails.
async fn probe(
    specs: Vec<ModelSpec>,
    runtime_dir: PathBuf,
    integrity: integrity::Integrity,
    config: &Config,
) -> anyhow::Result<()> {
    let queue = config.limits.max_queued_inferences;
    let registry = tokio::task::spawn_blocking(move || {
        runtime::load(&runtime_dir)?;
        Ok::<_, anyhow::Error>(load_models(&specs, &integrity, queue, None))
    })
    .await??;
    let mut failures = 0;
    println!(
        "{:<24} {:>8}  {:<10} {:<28} result",
        "model", "version", "signature", "inputs"
    );
    for (name, versions) in &registry.models {
        for (version, model) in versions {
            let inputs: Vec<model::BoundInput> = model
                .inputs
                .iter()
                .enumerate()
                .map(|(index, t)| {
                    let shape: Vec<i64> =
                        t.shape.iter().map(|&d| if d < 0 { 1 } else { d }).collect();
                    let bytes = warden_shared::datatype::byte_size(t.datatype, &shape)
                        .ok()
                        .flatten()
                        .unwrap_or(0);
                    model::BoundInput {
                        index,
                        shape,
                        data: bytes::Bytes::from(vec![0u8; bytes]),
                    }
                })
                .collect();
            let shapes: Vec<String> = inputs.iter().map(|i| format!("{:?}", i.shape)).collect();
            let outputs = (0..model.outputs.len()).collect();
            let result = match model.infer(inputs, outputs).await {
                Ok((out, _)) => format!("ok ({} outputs)", out.len()),
                Err(e) => {
                    failures += 1;
                    format!("FAILED: {e}")
                }
            };
            let signature = if model.digest.is_some() {
                "verified"
            } else {
                "-"
            };
            println!(
                "{name:<24} {version:>8}  {signature:<10} {:<28} {result}",
                shapes.join(" ")
            );
        }
    }
    for (name, why) in &registry.failed {
        failures += 1;
        println!(
            "{name:<24} {:>8}  {:<10} {:<28} FAILED: {}",
            "-",
            "-",
            "-",
            why.lines().next().unwrap_or("")
        );
    }
    if failures > 0 {
        anyhow::bail!("{failures} model(s) failed the probe");
    }
    println!("probe OK");
    Ok(())
}

async fn serve(
    listener: StdUnixListener,
    config: Config,
    specs: Vec<ModelSpec>,
    runtime_dir: PathBuf,
    integrity: integrity::Integrity,
    gateway_uid: u32,
    restarts: u64,
) -> anyhow::Result<()> {
    let max_tensor_elements = config.limits.max_tensor_elements;
    let max_queued_inferences = config.limits.max_queued_inferences;
    let integrity = Arc::new(integrity);
    let registry = {
        let (runtime_dir, integrity) = (runtime_dir.clone(), Arc::clone(&integrity));
        tokio::task::spawn_blocking(move || {
            runtime::load(&runtime_dir)?;
            Ok::<_, anyhow::Error>(load_models(&specs, &integrity, max_queued_inferences, None))
        })
        .await??
    };
    let registry = Arc::new(std::sync::RwLock::new(Arc::new(registry)));
    tokio::spawn(watch_repository(
        config,
        Arc::clone(&registry),
        integrity,
        max_queued_inferences,
    ));
    let backend = Arc::new(service::Backend {
        registry: Arc::clone(&registry),
        max_tensor_elements,
    });
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let framed = Arc::clone(&backend);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept on backend socket failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            match stream.peer_cred() {
                Ok(cred) if cred.uid() == gateway_uid => {
                    if tx.is_closed() {
                        return;
                    }
                    let (tx, framed) = (tx.clone(), Arc::clone(&framed));
                    tokio::spawn(async move {
                        match frames::route(stream, &tx, framed).await {
                            Ok(()) => {}
                            // The gateway closed the connection as its answer was
                            // written: its client went away.
                            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                                tracing::debug!("gateway closed a framed connection mid-answer");
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "framed connection from the gateway ended");
                            }
                        }
                    });
                }
                Ok(cred) => {
                    tracing::warn!(
                        peer_uid = cred.uid(),
                        expected = gateway_uid,
                        "refused a socket peer with the wrong uid"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "could not read socket peer credentials"),
            }
        }
    });
    let gauges = BackendGaugesServer::new(service::Gauges {
        registry: Arc::clone(&registry),
        restarts,
    });
    let service = GrpcInferenceServiceServer::from_arc(backend)
        .max_decoding_message_size(warden_shared::wire::MAX_SOCKET_MESSAGE_BYTES)
        .max_encoding_message_size(warden_shared::wire::MAX_SOCKET_MESSAGE_BYTES);
    tracing::info!(restarts, "backend serving");
    tonic::transport::Server::builder()
        .initial_stream_window_size(warden_shared::wire::SOCKET_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(warden_shared::wire::SOCKET_CONNECTION_WINDOW_BYTES)
        .max_frame_size(warden_shared::wire::SOCKET_MAX_FRAME_BYTES)
        .add_service(service)
        .add_service(gauges)
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown_signal())
        .await?;
    tracing::info!("backend stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Keeps the served models in step with the repository: on SIGHUP and every
/// `models.file_system_poll_wait_seconds` (0: SIGHUP only, as OVMS's 0 turns its
/// polling off), re-reads the model list (config.json), loads version folders
/// that appeared (per version policy), drops those that went, and reloads (and so
/// re-verifies) a version whose files changed. A version that fails is not served; the
/// others keep serving. Runs inside the sandbox: only allowed folders can be read.
async fn watch_repository(
    config: Config,
    registry: Arc<std::sync::RwLock<Arc<service::Registry>>>,
    integrity: Arc<integrity::Integrity>,
    max_queued_inferences: Option<usize>,
) {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let poll = config.models.file_system_poll_wait_seconds;
    tracing::info!(
        poll_seconds = poll,
        "model repository watched ({})",
        if poll == 0 {
            "on SIGHUP only"
        } else {
            "polled and on SIGHUP"
        }
    );
    loop {
        tokio::select! {
            _ = async {
                if poll == 0 {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(std::time::Duration::from_secs(poll)).await
                }
            } => {}
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: rescanning the model repository");
            }
        }
        let specs = match model_specs(&config) {
            Ok((specs, _)) => specs,
            Err(e) => {
                tracing::error!(error = %e, "model configuration unreadable; the served models stay as they are");
                continue;
            }
        };
        let old = Arc::clone(&registry.read().unwrap_or_else(|e| e.into_inner()));
        let integrity = Arc::clone(&integrity);
        let next = tokio::task::spawn_blocking(move || {
            let next = load_models(&specs, &integrity, max_queued_inferences, Some(&old));
            (next.differs_from(&old)).then_some(next)
        })
        .await;
        if let Ok(Some(next)) = next {
            tracing::info!(models = ?next.summary(), "model repository reloaded");
            *registry.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        }
    }
}

/// Builds the registry for `specs`, keeping the versions of `previous` that are still
/// wanted and unchanged on disk, and loading the rest.
fn load_models(
    specs: &[ModelSpec],
    integrity: &integrity::Integrity,
    max_queued_inferences: Option<usize>,
    previous: Option<&service::Registry>,
) -> service::Registry {
    let mut registry = service::Registry::default();
    for spec in specs {
        let versions = match warden_shared::repository::list_versions(&spec.base_path) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(model = %spec.name, error = %e, "model not served");
                registry.failed.insert(spec.name.clone(), e.to_string());
                continue;
            }
        };
        let wanted = spec
            .version_policy
            .select(versions.iter().map(|(v, _)| *v).collect());
        if wanted.is_empty() {
            let msg = format!(
                "no version folder matches the version policy under {}",
                spec.base_path.display()
            );
            tracing::error!(model = %spec.name, "{msg}");
            registry.failed.insert(spec.name.clone(), msg);
            continue;
        }
        for (version, dir) in versions.into_iter().filter(|(v, _)| wanted.contains(v)) {
            let kept = previous
                .and_then(|p| p.models.get(&spec.name))
                .and_then(|vs| vs.get(&version))
                .filter(|m| m.spec == *spec && m.dir == dir && !m.changed_on_disk());
            if let Some(m) = kept {
                registry
                    .models
                    .entry(spec.name.clone())
                    .or_default()
                    .insert(version, Arc::clone(m));
                continue;
            }
            // A version that failed before and has not changed is not retried (and not
            // logged) on every poll.
            if let Some(p) = previous
                && p.failed_stamps.get(&(spec.name.clone(), version))
                    == Some(&model::folder_stamp(&dir))
            {
                registry.failed.insert(
                    spec.name.clone(),
                    p.failed.get(&spec.name).cloned().unwrap_or_default(),
                );
                registry
                    .failed_stamps
                    .insert((spec.name.clone(), version), model::folder_stamp(&dir));
                continue;
            }
            let stamp = model::folder_stamp(&dir);
            match model::ModelVersion::load(spec, version, dir, integrity) {
                Ok(mut m) => {
                    if let Some(n) = max_queued_inferences {
                        m.max_waiting = n;
                    }
                    tracing::info!(model = %spec.name, version, nireq = m.nireq, settings = %spec.describe_settings(), queue = m.max_waiting, inputs = m.inputs.len(), outputs = m.outputs.len(), digest = %m.digest.as_deref().unwrap_or("-"), "model loaded");
                    registry
                        .models
                        .entry(spec.name.clone())
                        .or_default()
                        .insert(version, Arc::new(m));
                }
                Err(e) => {
                    tracing::error!(model = %spec.name, version, error = %e, "model version not served");
                    registry.failed.insert(spec.name.clone(), e.to_string());
                    registry
                        .failed_stamps
                        .insert((spec.name.clone(), version), stamp);
                }
            }
        }
    }
    registry
}
