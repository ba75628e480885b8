//! Triton's extensions of the KServe v2 API in both wire formats: the REST routes and
//! JSON bodies (as Triton's HTTP server writes them), and the gRPC messages of
//! `inference.GRPCInferenceService`'s Triton methods. The REST and gRPC codecs call
//! these; what a call may do is decided by the pipeline.

use crate::pipeline::{LogSettings, ModelStats, Op, Options};
use crate::refusal::Refusal;
use crate::stats::Duration64;
use http::Method;
use serde_json::{Value, json};
use warden_shared::proto;

/// A Triton REST route: the operation, the model and version its path names, and the
/// HTTP methods it takes.
#[derive(Debug, PartialEq, Eq)]
pub struct Route<'a> {
    pub op: Op,
    pub model: &'a str,
    pub version: &'a str,
    pub methods: &'static [Method],
}

/// Most bytes of a Triton extension's REST body (a repository index or log settings
/// object).
pub const MAX_BODY_BYTES: usize = 16 << 10;

const GET: &[Method] = &[Method::GET];
const POST: &[Method] = &[Method::POST];
const GET_POST: &[Method] = &[Method::GET, Method::POST];

/// The Triton route a path names, if any.
pub fn route<'a>(segs: &[&'a str]) -> Option<Route<'a>> {
    let r = |op, model, version, methods| {
        Some(Route {
            op,
            model,
            version,
            methods,
        })
    };
    match *segs {
        ["v2", "models", "stats"] => r(Op::ModelStats, "", "", GET),
        ["v2", "models", model, "config"] => r(Op::ModelConfig, model, "", GET),
        ["v2", "models", model, "versions", version, "config"] => {
            r(Op::ModelConfig, model, version, GET)
        }
        ["v2", "models", model, "stats"] => r(Op::ModelStats, model, "", GET),
        ["v2", "models", model, "versions", version, "stats"] => {
            r(Op::ModelStats, model, version, GET)
        }
        ["v2", "repository", "index"] => r(Op::RepositoryIndex, "", "", POST),
        ["v2", "repository", "models", model, "load"] => r(Op::RepositoryLoad, model, "", POST),
        ["v2", "repository", "models", model, "unload"] => r(Op::RepositoryUnload, model, "", POST),
        ["v2", "logging"] => r(Op::LogSettings, "", "", GET_POST),
        _ => None,
    }
}

/// What a REST repository index or log settings body asks (an empty body: nothing).
pub fn json_options(op: Op, body: &[u8]) -> Result<Options, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Options::default());
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Refusal::Malformed(format!("invalid JSON body: {e}")))?;
    let Value::Object(o) = v else {
        return Err(Refusal::Malformed("the body must be a JSON object".into()));
    };
    Ok(match op {
        Op::RepositoryIndex => Options {
            ready_only: o.get("ready").and_then(Value::as_bool).unwrap_or(false),
            changes: 0,
        },
        _ => Options {
            ready_only: false,
            changes: o.len(),
        },
    })
}

/// What a gRPC repository index or log settings message asks.
pub fn grpc_options(op: Op, message: &[u8]) -> Result<Options, Refusal> {
    use prost::Message;
    let bad = |e: prost::DecodeError| Refusal::Malformed(format!("invalid message: {e}"));
    Ok(match op {
        Op::RepositoryIndex => Options {
            ready_only: proto::RepositoryIndexRequest::decode(message)
                .map_err(bad)?
                .ready,
            changes: 0,
        },
        _ => Options {
            ready_only: false,
            changes: proto::LogSettingsRequest::decode(message)
                .map_err(bad)?
                .settings
                .len(),
        },
    })
}

/// The model a gRPC load or unload message names.
pub fn grpc_load_target(message: &[u8]) -> Result<String, Refusal> {
    use prost::Message;
    // Load and unload messages share their layout.
    proto::RepositoryModelLoadRequest::decode(message)
        .map(|m| m.model_name)
        .map_err(|e| Refusal::Malformed(format!("invalid message: {e}")))
}

/// A model configuration as Triton's HTTP server writes it.
pub fn config_json(c: &proto::ModelConfig) -> Value {
    let ty = |t: i32| {
        proto::DataType::try_from(t)
            .unwrap_or(proto::DataType::TypeInvalid)
            .as_str_name()
    };
    json!({
        "name": c.name,
        "platform": c.platform,
        "backend": c.backend,
        "max_batch_size": c.max_batch_size,
        "input": c.input.iter().map(|i| json!({"name": i.name, "data_type": ty(i.data_type), "dims": i.dims})).collect::<Vec<_>>(),
        "output": c.output.iter().map(|o| json!({"name": o.name, "data_type": ty(o.data_type), "dims": o.dims})).collect::<Vec<_>>(),
    })
}

fn duration(d: Duration64) -> proto::StatisticDuration {
    proto::StatisticDuration {
        count: d.count,
        ns: d.ns,
    }
}

/// Statistics as Triton's gRPC message.
pub fn stats_message(stats: &[ModelStats]) -> proto::ModelStatisticsResponse {
    proto::ModelStatisticsResponse {
        model_stats: stats
            .iter()
            .map(|m| {
                let s = &m.stats;
                // Counted for each successful call, with no time of their own (see
                // crate::stats); perf_analyzer finds the version that served it by
                // the growth of the queue count.
                let unmeasured = Duration64 {
                    count: s.success.count,
                    ns: 0,
                };
                proto::ModelStatistics {
                    name: m.name.clone(),
                    version: m.version.clone(),
                    last_inference: s.last_inference_ms,
                    inference_count: s.success.count,
                    execution_count: s.success.count,
                    inference_stats: Some(proto::InferStatistics {
                        success: Some(duration(s.success)),
                        fail: Some(duration(s.fail)),
                        queue: Some(duration(unmeasured)),
                        compute_input: Some(duration(s.compute_input)),
                        compute_infer: Some(duration(s.compute_infer)),
                        compute_output: Some(duration(unmeasured)),
                        cache_hit: Some(duration(Duration64::default())),
                        cache_miss: Some(duration(Duration64::default())),
                    }),
                }
            })
            .collect(),
    }
}

/// Statistics as Triton's HTTP server writes them.
pub fn stats_json(stats: &[ModelStats]) -> Value {
    let d = |d: Option<proto::StatisticDuration>| {
        let d = d.unwrap_or_default();
        json!({"count": d.count, "ns": d.ns})
    };
    let m = stats_message(stats);
    json!({
        "model_stats": m.model_stats.iter().map(|s| {
            let i = s.inference_stats.unwrap_or_default();
            json!({
                "name": s.name,
                "version": s.version,
                "last_inference": s.last_inference,
                "inference_count": s.inference_count,
                "execution_count": s.execution_count,
                "inference_stats": {
                    "success": d(i.success),
                    "fail": d(i.fail),
                    "queue": d(i.queue),
                    "compute_input": d(i.compute_input),
                    "compute_infer": d(i.compute_infer),
                    "compute_output": d(i.compute_output),
                    "cache_hit": d(i.cache_hit),
                    "cache_miss": d(i.cache_miss),
                },
                "batch_stats": [],
            })
        }).collect::<Vec<_>>(),
    })
}

/// The repository index as Triton's HTTP server writes it.
pub fn index_json(index: &proto::RepositoryIndexResponse) -> Value {
    Value::Array(
        index
            .models
            .iter()
            .map(|m| json!({"name": m.name, "version": m.version, "state": m.state, "reason": m.reason}))
            .collect(),
    )
}

/// The log settings as Triton names them: the process's log filter (stderr; no log
/// file, default format).
fn log_fields(l: &LogSettings) -> [(&'static str, LogValue); 6] {
    [
        ("log_file", LogValue::Text("")),
        ("log_info", LogValue::Flag(l.info)),
        ("log_warning", LogValue::Flag(l.warning)),
        ("log_error", LogValue::Flag(l.error)),
        ("log_verbose_level", LogValue::Level(l.verbose_level)),
        ("log_format", LogValue::Text("default")),
    ]
}

enum LogValue {
    Text(&'static str),
    Flag(bool),
    Level(u32),
}

pub fn log_json(l: &LogSettings) -> Value {
    Value::Object(
        log_fields(l)
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    LogValue::Text(t) => json!(t),
                    LogValue::Flag(b) => json!(b),
                    LogValue::Level(n) => json!(n),
                };
                (k.to_owned(), v)
            })
            .collect(),
    )
}

pub fn log_message(l: &LogSettings) -> proto::LogSettingsResponse {
    use proto::log_settings_response::{SettingValue, setting_value::ParameterChoice};
    proto::LogSettingsResponse {
        settings: log_fields(l)
            .into_iter()
            .map(|(k, v)| {
                let choice = match v {
                    LogValue::Text(t) => ParameterChoice::StringParam(t.into()),
                    LogValue::Flag(b) => ParameterChoice::BoolParam(b),
                    LogValue::Level(n) => ParameterChoice::Uint32Param(n),
                };
                (
                    k.to_owned(),
                    SettingValue {
                        parameter_choice: Some(choice),
                    },
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = route(&["v2", "models", "stats"]).unwrap();
        assert_eq!((r.op, r.model), (Op::ModelStats, ""));
        let r = route(&["v2", "models", "m", "versions", "2", "config"]).unwrap();
        assert_eq!((r.op, r.model, r.version), (Op::ModelConfig, "m", "2"));
        let r = route(&["v2", "repository", "models", "m", "unload"]).unwrap();
        assert_eq!((r.op, r.model), (Op::RepositoryUnload, "m"));
        assert_eq!(route(&["v2", "logging"]).unwrap().methods.len(), 2);
        assert!(route(&["v2", "models", "m"]).is_none());
    }

    #[test]
    fn options() {
        assert_eq!(
            json_options(Op::RepositoryIndex, b"{\"ready\": true}").unwrap(),
            Options {
                ready_only: true,
                changes: 0
            }
        );
        assert_eq!(json_options(Op::LogSettings, b"").unwrap().changes, 0);
        assert_eq!(
            json_options(Op::LogSettings, b"{\"log_info\": false}")
                .unwrap()
                .changes,
            1
        );
        assert!(json_options(Op::LogSettings, b"[1]").is_err());
    }
}
