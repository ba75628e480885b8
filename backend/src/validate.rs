//! Checks a `ModelInferRequest` against the model before OpenVINO sees any of it.
//!
//! The backend trusts nothing the socket brings, even though only the gateway can
//! connect: names, datatypes, ranks, dimensions and byte lengths are all checked here,
//! and every failure is an `InvalidArgument` a user can act on.

use crate::model::{BoundInput, ModelVersion};
use tonic::Status;
use warden_shared::datatype::{DataType, byte_size};
use warden_shared::proto::ModelInferRequest;
use warden_shared::proto::model_infer_request::InferInputTensor;

/// The inputs bound to model ports, and the output indices to return.
#[derive(Debug)]
pub struct Prepared {
    pub inputs: Vec<BoundInput>,
    pub outputs: Vec<usize>,
}

fn bad(msg: String) -> Status {
    Status::invalid_argument(msg)
}

/// Validates `req` against `model`, taking its raw buffers without copying them.
pub fn prepare(
    model: &ModelVersion,
    req: &mut ModelInferRequest,
    max_elements: usize,
) -> Result<Prepared, Status> {
    if req.inputs.len() != req.raw_input_contents.len() {
        return Err(bad(format!(
            "{} inputs but {} raw input buffers: every input must carry its data",
            req.inputs.len(),
            req.raw_input_contents.len()
        )));
    }
    let raw = std::mem::take(&mut req.raw_input_contents);
    let mut seen = vec![false; model.inputs.len()];
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for (tensor, data) in req.inputs.iter().zip(raw) {
        let index = model.input_index(&tensor.name).ok_or_else(|| {
            bad(format!(
                "model {} has no input named {:?}",
                model.name,
                clip(&tensor.name)
            ))
        })?;
        if std::mem::replace(&mut seen[index], true) {
            return Err(bad(format!(
                "input {:?} is given more than once",
                clip(&tensor.name)
            )));
        }
        let info = &model.inputs[index];
        check_input(
            Port {
                name: &info.name,
                datatype: info.datatype,
                shape: &info.shape,
                dynamic_rank: info.dynamic_rank,
            },
            tensor,
            data.len(),
            max_elements,
        )?;
        inputs.push(BoundInput {
            index,
            shape: tensor.shape.clone(),
            data,
        });
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(bad(format!(
            "input {:?} is missing",
            model.inputs[missing].name
        )));
    }
    let outputs = if req.outputs.is_empty() {
        (0..model.outputs.len()).collect()
    } else {
        let mut picked = Vec::with_capacity(req.outputs.len());
        for wanted in &req.outputs {
            let i = model
                .outputs
                .iter()
                .position(|o| o.name == wanted.name)
                .ok_or_else(|| {
                    bad(format!(
                        "model {} has no output named {:?}",
                        model.name,
                        clip(&wanted.name)
                    ))
                })?;
            if picked.contains(&i) {
                return Err(bad(format!(
                    "output {:?} is requested more than once",
                    wanted.name
                )));
            }
            picked.push(i);
        }
        picked
    };
    Ok(Prepared { inputs, outputs })
}

/// A model input as validation sees it: plain data, no OpenVINO (so it can be fuzzed).
#[derive(Debug, Clone, Copy)]
pub struct Port<'a> {
    pub name: &'a str,
    pub datatype: DataType,
    pub shape: &'a [i64],
    pub dynamic_rank: bool,
}

/// Checks one request input against the model input it names: datatype, shape, element
/// cap, and that its raw buffer is exactly `data_len` bytes long.
pub fn check_input(
    info: Port<'_>,
    tensor: &InferInputTensor,
    data_len: usize,
    max_elements: usize,
) -> Result<(), Status> {
    let datatype: DataType = tensor
        .datatype
        .parse()
        .map_err(|e| bad(format!("input {:?}: {e}", info.name)))?;
    if datatype != info.datatype {
        return Err(bad(format!(
            "input {:?} takes {}, not {}",
            info.name, info.datatype, datatype
        )));
    }
    check_shape(info.name, info.shape, info.dynamic_rank, &tensor.shape)?;
    let count = warden_shared::datatype::element_count(&tensor.shape)
        .map_err(|e| bad(format!("input {:?}: {e}", info.name)))?;
    if count > max_elements {
        return Err(bad(format!(
            "input {:?} has {count} elements, more than the {max_elements} allowed",
            info.name
        )));
    }
    let expected = byte_size(datatype, &tensor.shape)
        .map_err(|e| bad(format!("input {:?}: {e}", info.name)))?
        .ok_or_else(|| {
            bad(format!(
                "input {:?}: BYTES inputs are not supported by this model",
                info.name
            ))
        })?;
    if data_len != expected {
        return Err(bad(format!(
            "input {:?}: shape {:?} of {} needs {expected} bytes, got {}",
            info.name, tensor.shape, datatype, data_len
        )));
    }
    Ok(())
}

/// A request's shape must have the model's rank and match every static dimension.
pub fn check_shape(
    name: &str,
    model: &[i64],
    dynamic_rank: bool,
    got: &[i64],
) -> Result<(), Status> {
    if got.iter().any(|&d| d < 0) {
        return Err(bad(format!(
            "input {name:?}: shape {got:?} has a negative dimension"
        )));
    }
    if dynamic_rank {
        return Ok(());
    }
    if got.len() != model.len() {
        return Err(bad(format!(
            "input {name:?} has rank {}, the model expects shape {model:?} (rank {})",
            got.len(),
            model.len()
        )));
    }
    for (i, (&m, &g)) in model.iter().zip(got).enumerate() {
        if m >= 0 && m != g {
            return Err(bad(format!(
                "input {name:?}: dimension {i} is {g}, the model expects shape {model:?}"
            )));
        }
    }
    Ok(())
}

/// Names from clients are echoed in errors; keep them short.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::check_shape;

    #[test]
    fn shapes() {
        assert!(check_shape("x", &[1, 3], false, &[1, 3]).is_ok());
        assert!(check_shape("x", &[-1, 3], false, &[7, 3]).is_ok());
        assert!(check_shape("x", &[1, 3], false, &[1, 4]).is_err());
        assert!(check_shape("x", &[1, 3], false, &[1, 3, 1]).is_err());
        assert!(check_shape("x", &[-1, 3], false, &[-1, 3]).is_err());
        assert!(check_shape("x", &[], true, &[2, 2, 2]).is_ok());
    }
}
