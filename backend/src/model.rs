//! Compiled models and the pool of infer requests each one keeps.
//!
//! A [`ModelVersion`] is one version folder compiled for one device. Requests arrive
//! already validated (see `validate.rs`); this module only moves bytes into OpenVINO
//! tensors, runs inference on a blocking thread and moves the results out.

use crate::integrity::{Integrity, IntegrityError, Outcome};
use bytes::Bytes;
use openvino::{
    CompiledModel, Core, DeviceType, ElementType, InferRequest, PropertyKey, RwPropertyKey, Shape,
    Tensor,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use warden_shared::datatype::DataType;
use warden_shared::repository::{Dim, ModelFiles, ModelSpec};

/// A model input or output as clients see it.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// The primary name (OpenVINO's first name for the port).
    pub name: String,
    pub datatype: DataType,
    /// Dimensions; -1 for a dynamic one.
    pub shape: Vec<i64>,
    /// True when even the rank is not fixed.
    pub dynamic_rank: bool,
    element_type: ElementType,
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("model {model} version {version}: OpenVINO refused it: {source}")]
    OpenVino {
        model: String,
        version: u64,
        source: openvino::InferenceError,
    },
    #[error("model {model} version {version}: OpenVINO could not start: {message}")]
    Setup {
        model: String,
        version: u64,
        message: String,
    },
    #[error("model {model} version {version}: {message}")]
    Settings {
        model: String,
        version: u64,
        message: String,
    },
    #[error(
        "model {model} version {version}: {what} {name:?} has element type {ty:?}, which Warden cannot serve"
    )]
    UnsupportedType {
        model: String,
        version: u64,
        what: &'static str,
        name: String,
        ty: ElementType,
    },
}

/// Why an inference failed after validation.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("OpenVINO failed: {0}")]
    OpenVino(#[from] openvino::InferenceError),
    #[error("the model produced an output of type {0:?}, which cannot be returned")]
    OutputType(ElementType),
    #[error("the inference worker stopped")]
    Worker,
    #[error("every infer request is busy and the wait queue is full")]
    Busy,
}

/// One validated input, ready to hand to OpenVINO.
#[derive(Debug)]
pub struct BoundInput {
    pub index: usize,
    pub shape: Vec<i64>,
    pub data: Bytes,
}

/// Where the time of one inference went, in microseconds (OVMS's two backend
/// histograms).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// From the call until an infer request was free and bound to it: the wait for a
    /// permit, then the hand-off to a blocking thread (`ovms_wait_for_infer_req_time_us`).
    pub wait_us: u64,
    /// OpenVINO's inference call alone (`ovms_inference_time_us`).
    pub inference_us: u64,
}

/// One result tensor.
#[derive(Debug)]
pub struct OutputTensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
    pub data: Bytes,
}

/// One served version of a model.
pub struct ModelVersion {
    pub name: String,
    pub version: u64,
    pub files: ModelFiles,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    /// Every name OpenVINO knows an input by, mapped to its index.
    input_aliases: Mutex<BTreeMap<String, Option<usize>>>,
    compiled: Mutex<CompiledModel>,
    /// Bounds in-flight inferences to the pool's size. A permit is held until its infer
    /// request is back in `free`, even when the caller stops waiting for the result.
    permits: Arc<Semaphore>,
    free: Mutex<Vec<InferRequest>>,
    pub nireq: usize,
    /// OpenVINO's execution streams for this compiled model (`NUM_STREAMS`).
    pub streams: u32,
    /// Inferences waiting for a permit now, and the most that may wait: past that a
    /// request fails fast ([`InferError::Busy`]) instead of queueing without bound.
    waiting: AtomicUsize,
    pub max_waiting: usize,
    /// `sha256:<hex>` of the verified OMS manifest (the in-toto subject digest), when
    /// the model was signed and verified.
    pub digest: Option<String>,
    /// The version folder and what its files looked like when loaded, so a reload can
    /// tell a replaced file and load (and verify) the version again.
    pub dir: PathBuf,
    pub stamp: FolderStamp,
    /// The spec it was loaded with; a changed spec reloads it.
    pub spec: ModelSpec,
}

/// Requests that may wait for a free infer request when the configuration does not
/// say: four rounds of the pool, and at least 16 so a small pool still absorbs a burst.
pub fn default_max_waiting(nireq: usize) -> usize {
    nireq.saturating_mul(4).max(16)
}

/// Counts a request as waiting for a permit for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn datatype_of(ty: ElementType) -> Option<DataType> {
    Some(match ty {
        ElementType::Boolean => DataType::Bool,
        ElementType::U8 => DataType::U8,
        ElementType::U16 => DataType::U16,
        ElementType::U32 => DataType::U32,
        ElementType::U64 => DataType::U64,
        ElementType::I8 => DataType::I8,
        ElementType::I16 => DataType::I16,
        ElementType::I32 => DataType::I32,
        ElementType::I64 => DataType::I64,
        ElementType::F16 => DataType::F16,
        ElementType::Bf16 => DataType::Bf16,
        ElementType::F32 => DataType::F32,
        ElementType::F64 => DataType::F64,
        _ => return None,
    })
}

fn dimension(d: Dim) -> openvino::Dimension {
    match d {
        Dim::Fixed(n) => openvino::Dimension::new(n, n),
        Dim::Any => openvino::Dimension::new(-1, -1),
        Dim::Range(a, b) => openvino::Dimension::new(a, b),
    }
}

/// Applies the OVMS model settings to a model as read, in OVMS's order: `layout` (a
/// transposition from the layout requests use to the model's), then `shape`, else
/// `batch_size` on the batch dimension (`N` of the layout, else the first).
fn apply_settings(spec: &ModelSpec, model: openvino::Model) -> Result<openvino::Model, String> {
    let mut model = model;
    let input_names = |m: &openvino::Model| -> Result<Vec<String>, String> {
        let n = m.get_inputs_len().map_err(|e| e.to_string())?;
        (0..n)
            .map(|i| {
                m.get_input_by_index(i)
                    .and_then(|node| node.get_name())
                    .map_err(|e| e.to_string())
            })
            .collect()
    };
    let names = input_names(&model)?;
    let resolve = |_model: &openvino::Model, key: &str, what: &str| -> Result<String, String> {
        if key.is_empty() {
            return match names.as_slice() {
                [only] => Ok(only.clone()),
                _ => Err(format!(
                    "{what} without an input name needs a model with one input; this one has {} ({}): give {what} as {{\"input\": ...}}",
                    names.len(),
                    names.join(", ")
                )),
            };
        }
        if names.iter().any(|n| n == key) {
            return Ok(key.to_owned());
        }
        Err(format!(
            "{what} names {key:?}, which is not an input of the model (inputs: {}; output layouts are not supported)",
            names.join(", ")
        ))
    };
    if !spec.layout.is_empty() {
        let pipeline =
            openvino::prepostprocess::Pipeline::new(&model).map_err(|e| e.to_string())?;
        let layout = |t: &str| openvino::Layout::new(t).map_err(|e| format!("layout {t}: {e}"));
        for (key, l) in &spec.layout {
            let input = resolve(&model, key, "layout")?;
            let failed = |e: openvino::InferenceError| format!("layout {l} of {input}: {e}");
            let info = pipeline
                .get_input_info_by_name(&input)
                .map_err(|e| e.to_string())?;
            info.get_tensor_info()
                .map_err(failed)?
                .set_layout(layout(&l.tensor)?)
                .map_err(failed)?;
            info.get_model_info()
                .map_err(failed)?
                .set_layout(layout(&l.model)?)
                .map_err(failed)?;
            if l.tensor != l.model {
                info.get_steps()
                    .map_err(failed)?
                    .convert_layout(layout(&l.model)?)
                    .map_err(failed)?;
            }
        }
        model = pipeline
            .build_new_model()
            .map_err(|e| format!("layout: OpenVINO refused it: {e}"))?;
    }
    let mut reshape: Vec<(String, openvino::PartialShape)> = Vec::new();
    for (key, dims) in &spec.shape {
        let input = resolve(&model, key, "shape")?;
        let dims: Vec<openvino::Dimension> = dims.iter().copied().map(dimension).collect();
        let shape = openvino::PartialShape::new(dims.len() as i64, &dims)
            .map_err(|e| format!("shape of {input}: {e}"))?;
        reshape.push((input, shape));
    }
    if let (Some(batch), true) = (spec.batch_size, spec.shape.is_empty()) {
        let batch = i64::try_from(batch).map_err(|_| "batch_size too large".to_string())?;
        for (i, name) in names.iter().enumerate() {
            let node = model.get_input_by_index(i).map_err(|e| e.to_string())?;
            let ps = node.get_partial_shape().map_err(|e| e.to_string())?;
            if ps.get_rank().is_dynamic() {
                return Err(format!(
                    "batch_size: input {name} has a dynamic rank, so it has no batch dimension; use shape"
                ));
            }
            let layout = spec
                .layout
                .iter()
                .find(|(k, _)| k.is_empty() || *k == name)
                .map(|(_, l)| l);
            let at = match layout {
                Some(l) => l.batch_index().ok_or_else(|| {
                    format!("batch_size: the layout {l} of input {name} has no N (batch) dimension")
                })?,
                None => 0,
            };
            let mut dims = ps.get_dimensions().to_vec();
            if at >= dims.len() {
                return Err(format!(
                    "batch_size: input {name} has rank {}, no batch dimension at {at}",
                    dims.len()
                ));
            }
            dims[at] = openvino::Dimension::new(batch, batch);
            let shape =
                openvino::PartialShape::new(dims.len() as i64, &dims).map_err(|e| e.to_string())?;
            reshape.push((name.clone(), shape));
        }
    }
    if !reshape.is_empty() {
        let refs: Vec<(&str, &openvino::PartialShape)> =
            reshape.iter().map(|(n, s)| (n.as_str(), s)).collect();
        model
            .reshape(&refs)
            .map_err(|e| format!("OpenVINO cannot reshape the model so: {e}"))?;
    }
    Ok(model)
}

/// (inode, size, mtime, ctime) of every file in a version folder, sorted by path.
pub type FolderStamp = Vec<(PathBuf, (u64, u64, i64, i64))>;

/// The [`FolderStamp`] of a version folder now.
pub fn folder_stamp(dir: &std::path::Path) -> FolderStamp {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = std::fs::symlink_metadata(e.path()).ok()?;
            Some((e.path(), (m.ino(), m.size(), m.mtime(), m.ctime())))
        })
        .collect();
    out.sort();
    out
}

fn describe(
    node: &openvino::Node,
) -> Result<(String, ElementType, Vec<i64>, bool), openvino::InferenceError> {
    let name = node.get_name()?;
    let ty = node.get_element_type()?;
    let ps = node.get_partial_shape()?;
    let dynamic_rank = ps.get_rank().is_dynamic();
    let shape = ps
        .get_dimensions()
        .iter()
        .map(|d| if d.is_dynamic() { -1 } else { d.get_min() })
        .collect();
    Ok((name, ty, shape, dynamic_rank))
}

impl ModelVersion {
    /// Checks the folder against the signing policy, then reads and compiles one
    /// version. Runs inside the sandbox.
    pub fn load(
        spec: &ModelSpec,
        version: u64,
        dir: PathBuf,
        integrity: &Integrity,
    ) -> Result<ModelVersion, anyhow::Error> {
        let model = spec.name.clone();
        // INVARIANT: the signature check comes before OpenVINO reads any byte of the
        // folder; a model that fails it is never parsed.
        let outcome = integrity.check(&model, version, &dir)?;
        match &outcome {
            Outcome::Verified(v) => tracing::info!(
                model = %model, version, digest = %v.digest, key = %v.key, curve = %v.curve,
                files = v.files.len(), "model signature verified"
            ),
            Outcome::Unsigned => tracing::warn!(
                model = %model, version,
                "model is not signed; served because its signing mode is optional"
            ),
            Outcome::NotChecked => {}
        }
        let files = warden_shared::repository::find_model_files(&dir)?;
        let ov = |source| LoadError::OpenVino {
            model: model.clone(),
            version,
            source,
        };
        let mut core = Core::new().map_err(|e| LoadError::Setup {
            model: model.clone(),
            version,
            message: e.to_string(),
        })?;
        let device: DeviceType<'static> = spec.target_device.parse().unwrap_or(DeviceType::CPU);
        // One Core per model, so each model's plugin config stays its own.
        for (key, value) in &spec.plugin_config {
            core.set_property(&device, &RwPropertyKey::Other(key.clone().into()), value)
                .map_err(ov)?;
        }
        let (xml, bin) = match &files {
            ModelFiles::Ir { xml, bin } => (xml.clone(), bin.to_string_lossy().into_owned()),
            ModelFiles::Single(p) => (p.clone(), String::new()),
        };
        let read = core
            .read_model_from_file(&xml.to_string_lossy(), &bin)
            .map_err(ov)?;
        // OVMS `layout`, `shape`, `batch_size`: applied before compiling so OpenVINO
        // optimizes for them; what clients see below is the model after them.
        let read = apply_settings(spec, read).map_err(|message| LoadError::Settings {
            model: model.clone(),
            version,
            message,
        })?;
        let mut compiled = core.compile_model(&read, device).map_err(ov)?;
        // OpenVINO has now read (and compiled) the files: make sure they are still the
        // ones that were verified, closing the window between hashing and reading.
        if let Outcome::Verified(v) = &outcome {
            v.check_unchanged().map_err(|source| IntegrityError {
                model: model.clone(),
                version,
                mode: integrity.config.mode_for(&model),
                source,
            })?;
        }

        // Names, types and shapes come from the model as read: compiling adds internal
        // tensor names (such as "/Cast_1_output_0") that clients should not see.
        let ports = |is_input: bool| -> Result<Vec<TensorInfo>, anyhow::Error> {
            let n = if is_input {
                read.get_inputs_len()
            } else {
                read.get_outputs_len()
            }
            .map_err(ov)?;
            (0..n)
                .map(|i| {
                    let node = if is_input {
                        read.get_input_by_index(i)
                    } else {
                        read.get_output_by_index(i)
                    }
                    .map_err(ov)?;
                    let (name, ty, shape, dynamic_rank) = describe(&node).map_err(ov)?;
                    let datatype = datatype_of(ty).ok_or_else(|| LoadError::UnsupportedType {
                        model: model.clone(),
                        version,
                        what: if is_input { "input" } else { "output" },
                        name: name.clone(),
                        ty,
                    })?;
                    Ok(TensorInfo {
                        name,
                        datatype,
                        shape,
                        dynamic_rank,
                        element_type: ty,
                    })
                })
                .collect()
        };
        let inputs = ports(true)?;
        let outputs = ports(false)?;

        let optimal = compiled
            .get_property(&PropertyKey::OptimalNumberOfInferRequests)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(1);
        let streams = compiled
            .get_property(&PropertyKey::Rw(RwPropertyKey::NumStreams))
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(1);
        // Unset: twice OpenVINO's optimal number, so each stream has the next request
        // queued while the previous one's result travels back (the hand-off would
        // otherwise leave a stream idle: +40% on BlazeFace, bench/README.md).
        let nireq = spec
            .nireq
            .map(|n| n as usize)
            .unwrap_or(optimal.saturating_mul(2))
            .clamp(1, 256);
        let requests = (0..nireq)
            .map(|_| compiled.create_infer_request())
            .collect::<Result<Vec<_>, _>>()
            .map_err(ov)?;
        let aliases = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), Some(i)))
            .collect();
        Ok(ModelVersion {
            name: spec.name.clone(),
            version,
            files,
            inputs,
            outputs,
            input_aliases: Mutex::new(aliases),
            compiled: Mutex::new(compiled),
            permits: Arc::new(Semaphore::new(nireq)),
            free: Mutex::new(requests),
            nireq,
            streams,
            waiting: AtomicUsize::new(0),
            max_waiting: default_max_waiting(nireq),
            digest: outcome.digest().map(str::to_owned),
            stamp: folder_stamp(&dir),
            dir,
            spec: spec.clone(),
        })
    }

    /// True when the folder's files are no longer the ones loaded.
    pub fn changed_on_disk(&self) -> bool {
        folder_stamp(&self.dir) != self.stamp
    }

    /// The index of the input a client names, by any of the names OpenVINO knows it by.
    pub fn input_index(&self, name: &str) -> Option<usize> {
        let mut aliases = self.input_aliases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = aliases.get(name) {
            return *found;
        }
        // Not a primary name: ask OpenVINO (tensors can have several names), and remember
        // the answer, bounded so a client cannot grow the map without limit.
        let found = {
            let compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
            compiled
                .get_input_by_name(name)
                .ok()
                .and_then(|node| node.get_name().ok())
                .and_then(|primary| self.inputs.iter().position(|t| t.name == primary))
        };
        if found.is_some() && aliases.len() < 64 + self.inputs.len() {
            aliases.insert(name.to_owned(), found);
        }
        found
    }

    /// Infer requests bound to a call now (holding a permit): loading its data,
    /// inferring or handing the results back.
    pub fn active(&self) -> usize {
        self.nireq.saturating_sub(self.permits.available_permits())
    }

    /// Runs one inference on a pooled infer request, on a blocking thread.
    pub async fn infer(
        self: &Arc<Self>,
        inputs: Vec<BoundInput>,
        outputs: Vec<usize>,
    ) -> Result<(Vec<OutputTensor>, Timing), InferError> {
        let called = std::time::Instant::now();
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(InferError::Worker),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                // Every infer request is busy: wait in a bounded queue, or fail fast.
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(InferError::Busy);
                }
                let _waiting = Waiting(&self.waiting);
                Arc::clone(&self.permits)
                    .acquire_owned()
                    .await
                    .map_err(|_| InferError::Worker)?
            }
        };
        let this = Arc::clone(self);
        // The permit moves into the blocking task: if the caller goes away mid-inference
        // (a client reset its stream), the infer request is still busy and must not be
        // promised to the next caller before it is back in the pool.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut request = this
                .free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
                .ok_or(InferError::Worker)?;
            let wait_us = called.elapsed().as_micros() as u64;
            let result = this
                .run(&mut request, &inputs, &outputs)
                .map(|(out, inference_us)| {
                    (
                        out,
                        Timing {
                            wait_us,
                            inference_us,
                        },
                    )
                });
            this.free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(request);
            result
        })
        .await
        .map_err(|_| InferError::Worker)?
    }

    fn run(
        &self,
        request: &mut InferRequest,
        inputs: &[BoundInput],
        outputs: &[usize],
    ) -> Result<(Vec<OutputTensor>, u64), InferError> {
        for input in inputs {
            let info = &self.inputs[input.index];
            let mut tensor = Tensor::new(info.element_type, &Shape::new(&input.shape)?)?;
            tensor.get_raw_data_mut()?.copy_from_slice(&input.data);
            request.set_input_tensor_by_index(input.index, &tensor)?;
        }
        let started = std::time::Instant::now();
        request.infer()?;
        let inference_us = started.elapsed().as_micros() as u64;
        let outputs = outputs
            .iter()
            .map(|&i| {
                let info = &self.outputs[i];
                let tensor = request.get_output_tensor_by_index(i)?;
                let ty = tensor.get_element_type()?;
                let datatype = datatype_of(ty).ok_or(InferError::OutputType(ty))?;
                let shape = tensor.get_shape()?.get_dimensions().to_vec();
                let data = Bytes::copy_from_slice(tensor.get_raw_data()?);
                Ok(OutputTensor {
                    name: info.name.clone(),
                    datatype,
                    shape,
                    data,
                })
            })
            .collect::<Result<Vec<_>, InferError>>()?;
        Ok((outputs, inference_us))
    }
}
