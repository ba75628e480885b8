//! OVMS command-line flags: each one OVMS documents either maps onto Warden's own
//! settings (done in `args.rs`, described here for `warden check`) or is refused at
//! start with its name and the reason. None is accepted and then ignored.

use std::ffi::OsString;
use warden_shared::config::Config;

/// OVMS flags Warden refuses, and why. Everything else OVMS documents is mapped.
pub const REFUSED: &[(&str, &str)] = &[
    (
        "cpu_extension",
        "Warden does not load custom-layer libraries: the sandboxed backend maps no native code beside the OpenVINO runtime",
    ),
    (
        "cache_dir",
        "the sandboxed backend has no writable folder, so it keeps no compiled-model cache",
    ),
    (
        "log_path",
        "Warden logs to standard error (the sandboxed backend may not write files); redirect it or use the log collector",
    ),
    (
        "custom_node_resources_cleaner_interval_seconds",
        "DAG pipelines and custom nodes are not supported",
    ),
    (
        "sequence_cleaner_poll_wait_minutes",
        "stateful (sequence) models are not supported, so there are no sequences to clean",
    ),
    ("stateful", "stateful (sequence) models are not supported"),
    (
        "idle_sequence_cleanup",
        "stateful (sequence) models are not supported",
    ),
    (
        "max_sequence_number",
        "stateful (sequence) models are not supported",
    ),
    (
        "low_latency_transformation",
        "stateful (sequence) models are not supported",
    ),
    (
        "mean",
        "input preprocessing (mean) is not supported yet; normalize on the client",
    ),
    (
        "scale",
        "input preprocessing (scale) is not supported yet; normalize on the client",
    ),
    (
        "color_format",
        "input preprocessing (color_format) is not supported yet; convert on the client",
    ),
    (
        "precision",
        "input precision conversion is not supported yet; send the model's own datatype",
    ),
    (
        "allowed_local_media_path",
        "generative (LLM) endpoints and media inputs are not served; Warden serves KServe v2 tensors",
    ),
    (
        "allowed_media_domains",
        "generative (LLM) endpoints and media inputs are not served; Warden serves KServe v2 tensors",
    ),
    (
        "allow_credentials",
        "Warden sends no CORS headers: cross-origin browser calls are not supported",
    ),
    (
        "allowed_origins",
        "Warden sends no CORS headers: cross-origin browser calls are not supported",
    ),
    (
        "allowed_methods",
        "Warden sends no CORS headers: cross-origin browser calls are not supported",
    ),
    (
        "allowed_headers",
        "Warden sends no CORS headers: cross-origin browser calls are not supported",
    ),
    (
        "api_key_file",
        "callers authenticate with JWT bearer tokens and/or client certificates (--jwt-key, --client-ca); static API keys are not accepted",
    ),
    (
        "verbose_response",
        "generative (LLM) endpoints are not served",
    ),
    ("trace_path", "OVMS's internal tracing has no equivalent"),
    (
        "pull",
        "Warden does not download or convert models; prepare the repository beforehand",
    ),
    (
        "source_model",
        "Warden does not download or convert models; prepare the repository beforehand",
    ),
    (
        "source_loras",
        "Warden does not download or convert models; prepare the repository beforehand",
    ),
    (
        "gguf_filename",
        "Warden does not download or convert models; prepare the repository beforehand",
    ),
    (
        "overwrite_models",
        "Warden does not download or convert models; prepare the repository beforehand",
    ),
    (
        "model_repository_path",
        "Warden does not download or manage models; use --model_path or --config_path",
    ),
    (
        "weight-format",
        "Warden does not download or convert models; prepare the repository beforehand",
    ),
    (
        "extra_quantization_params",
        "Warden does not download or convert models; prepare the repository beforehand",
    ),
    (
        "list_models",
        "config management mode is not supported; edit config.json yourself",
    ),
    (
        "add_to_config",
        "config management mode is not supported; edit config.json yourself",
    ),
    (
        "remove_from_config",
        "config management mode is not supported; edit config.json yourself",
    ),
    (
        "configure",
        "configure mode (graph.pbtxt) is not supported: MediaPipe graphs are not served",
    ),
    (
        "task",
        "generative tasks (LLM, embeddings, image generation, speech) are not served",
    ),
];

/// OVMS's task-specific options (text generation, embeddings, image generation, ...):
/// refused because Warden serves no generative task.
pub const TASK_OPTIONS: &[&str] = &[
    "cache_interval_multiplier",
    "cache_size",
    "default_num_inference_steps",
    "default_resolution",
    "draft_source_model",
    "dynamic_split_fuse",
    "enable_prefix_caching",
    "enable_tool_guided_generation",
    "guidance_scale",
    "kv_cache_precision",
    "max_allowed_chunks",
    "max_num_batched_tokens",
    "max_num_images_per_prompt",
    "max_num_inference_steps",
    "max_num_seqs",
    "max_prompt_len",
    "max_resolution",
    "model_distribution_policy",
    "model_type",
    "normalize",
    "num_images_per_prompt",
    "num_streams",
    "pipeline_type",
    "pooling",
    "reasoning_parser",
    "resolution",
    "tool_parser",
    "truncate",
];

/// Refuses any OVMS flag Warden does not support, naming it and saying why. Runs before
/// the command line is parsed, so the reason is given instead of "unexpected argument".
pub fn refuse_unsupported(args: &[OsString]) -> anyhow::Result<()> {
    for arg in args {
        let Some(flag) = arg.to_str().and_then(|a| a.strip_prefix("--")) else {
            continue;
        };
        let name = flag.split_once('=').map_or(flag, |(n, _)| n);
        if let Some((_, why)) = REFUSED.iter().find(|(n, _)| *n == name) {
            anyhow::bail!("--{name} is refused: {why}");
        }
        if TASK_OPTIONS.contains(&name) {
            anyhow::bail!(
                "--{name} is refused: it is an option of OVMS's generative tasks, which Warden does not serve"
            );
        }
    }
    Ok(())
}

/// `--log_level` (OVMS: TRACE, DEBUG, INFO, WARNING, ERROR) as a `tracing` filter.
pub fn log_filter(level: &str) -> anyhow::Result<&'static str> {
    Ok(match level.to_ascii_uppercase().as_str() {
        "TRACE" => "trace",
        "DEBUG" => "debug",
        "INFO" => "info",
        "WARNING" | "WARN" => "warn",
        "ERROR" => "error",
        _ => {
            anyhow::bail!("--log_level {level:?} is not one of TRACE, DEBUG, INFO, WARNING, ERROR")
        }
    })
}

/// Applies `--grpc_channel_arguments` (`name=value,name=value`), returning one line per
/// argument for `warden check`. Arguments with a Warden equivalent are mapped; any
/// other is refused by name.
pub fn apply_channel_arguments(text: &str, c: &mut Config) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, value) = item.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("--grpc_channel_arguments: {item:?} is not name=value")
        })?;
        let (name, value) = (name.trim(), value.trim());
        let number = |what: &str| -> anyhow::Result<u64> {
            value.parse::<u64>().map_err(|_| {
                anyhow::anyhow!(
                    "--grpc_channel_arguments: {name}={value}: {what} must be a non-negative integer"
                )
            })
        };
        match name {
            "grpc.max_concurrent_streams" => {
                let n = u32::try_from(number("the stream count")?)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "--grpc_channel_arguments: grpc.max_concurrent_streams={value} must be between 1 and 4294967295"
                        )
                    })?;
                c.limits.grpc_h2_max_concurrent_streams = Some(n);
                lines.push(format!(
                    "--grpc_channel_arguments {name}={n} -> limits.grpc_h2_max_concurrent_streams = {n} (HTTP/2 streams per connection on the gRPC listener)"
                ));
            }
            "grpc.max_receive_message_length" => {
                let n = usize::try_from(number("the length")?)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "--grpc_channel_arguments: {name}={value}: Warden keeps a message cap; give a positive byte count"
                        )
                    })?;
                c.limits.max_grpc_message_bytes = n;
                lines.push(format!(
                    "--grpc_channel_arguments {name}={n} -> limits.max_grpc_message_bytes = {n} (Warden caps gRPC messages both ways with it)"
                ));
            }
            other => anyhow::bail!(
                "--grpc_channel_arguments: {other} is refused: Warden maps only grpc.max_concurrent_streams and grpc.max_receive_message_length; its other connection settings are in the [limits] section"
            ),
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_flags_are_named_with_a_reason() {
        let args: Vec<OsString> = ["serve", "--model_name", "m", "--cpu_extension=/x.so"]
            .map(Into::into)
            .into();
        let e = refuse_unsupported(&args).unwrap_err().to_string();
        assert!(e.starts_with("--cpu_extension is refused: "), "{e}");
        let args: Vec<OsString> = ["--max_num_seqs", "8"].map(Into::into).into();
        assert!(
            refuse_unsupported(&args)
                .unwrap_err()
                .to_string()
                .contains("--max_num_seqs")
        );
        let fine: Vec<OsString> = ["--nireq", "2", "--port", "9000"].map(Into::into).into();
        assert!(refuse_unsupported(&fine).is_ok());
    }

    #[test]
    fn channel_arguments_map_or_are_refused_by_name() {
        let mut c = Config::default();
        let lines = apply_channel_arguments(
            "grpc.max_concurrent_streams=8, grpc.max_receive_message_length=1048576",
            &mut c,
        )
        .unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(c.limits.grpc_h2_max_concurrent_streams, Some(8));
        assert_eq!(c.limits.grpc_h2_streams(), 8);
        assert_eq!(c.limits.max_grpc_message_bytes, 1 << 20);
        let e = apply_channel_arguments("grpc.max_connection_age_ms=2000", &mut c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("grpc.max_connection_age_ms is refused"), "{e}");
        for bad in [
            "grpc.max_concurrent_streams=0",
            "grpc.max_concurrent_streams=x",
            "grpc.max_concurrent_streams",
            "grpc.max_receive_message_length=-1",
        ] {
            assert!(apply_channel_arguments(bad, &mut c).is_err(), "{bad}");
        }
    }

    #[test]
    fn log_levels() {
        assert_eq!(log_filter("WARNING").unwrap(), "warn");
        assert_eq!(log_filter("debug").unwrap(), "debug");
        assert!(log_filter("LOUD").is_err());
    }
}
