//! Generates the KServe v2 gRPC types, Triton's extension messages, gRPC's health and
//! reflection messages, and the descriptor set the gateway's reflection serves; the
//! TensorFlow Serving API messages (the gateway frames those services itself: messages
//! only); and, apart (never in that descriptor set: no client may discover it),
//! Warden's own backend gauges service. protoc comes from the protoc-bin-vendored
//! crate, so a build needs nothing installed beyond cargo.
const PROTOS: &[&str] = &[
    "grpc_predict_v2.proto",
    "triton_extensions.proto",
    "grpc_health_v1.proto",
    "grpc_reflection_v1.proto",
];
/// Between Warden's own processes only.
const INTERNAL: &str = "warden_backend.proto";
/// The TensorFlow Serving API (trimmed copies, upstream field numbers).
const TFS: &[&str] = &[
    "tensorflow_serving/apis/prediction_service.proto",
    "tensorflow_serving/apis/model_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded; PROTOC is read by prost-build.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let proto = |f: &str| format!("proto/{f}");
    let files: Vec<String> = PROTOS.iter().map(|f| proto(f)).collect();
    let include = ["proto".to_string()];
    tonic_prost_build::configure()
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .file_descriptor_set_path(out.join("descriptors.bin"))
        .compile_protos(&files, &include)?;
    tonic_prost_build::configure().compile_protos(&[proto(INTERNAL)], &include)?;
    let tfs: Vec<String> = TFS.iter().map(|f| proto(f)).collect();
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .bytes(".tensorflow.TensorProto.tensor_content")
        .compile_protos(&tfs, &include)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
