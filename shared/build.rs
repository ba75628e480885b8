//! Generates the KServe v2 gRPC types, Triton's extension messages, gRPC's health and
//! reflection messages, and the descriptor set the gateway's reflection serves; and,
//! apart (never in that descriptor set: no client may discover it), Warden's own
//! backend gauges service. protoc comes from the protoc-bin-vendored crate, so a build
//! needs nothing installed beyond cargo.
const PROTOS: &[&str] = &[
    "grpc_predict_v2.proto",
    "triton_extensions.proto",
    "grpc_health_v1.proto",
    "grpc_reflection_v1.proto",
];
/// Between Warden's own processes only.
const INTERNAL: &str = "warden_backend.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded; PROTOC is read by prost-build.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let files: Vec<String> = PROTOS.iter().map(|f| format!("proto/{f}")).collect();
    tonic_prost_build::configure()
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .file_descriptor_set_path(out.join("descriptors.bin"))
        .compile_protos(&files, &["proto".to_string()])?;
    let internal = format!("proto/{INTERNAL}");
    tonic_prost_build::configure().compile_protos(&[internal.clone()], &["proto".to_string()])?;
    for f in files.iter().chain([&internal]) {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}
