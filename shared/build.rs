//! Generates the KServe v2 gRPC types, Triton's extension messages and gRPC's health
//! messages. protoc comes from the protoc-bin-vendored crate, so a build needs nothing
//! installed beyond cargo.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded; PROTOC is read by prost-build.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_protos(
            &["proto/grpc_predict_v2.proto", "proto/triton_extensions.proto"],
            &["proto"],
        )?;
    // The gateway frames health answers itself: messages only, no stubs.
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_protos(&["proto/grpc_health_v1.proto"], &["proto"])?;
    for f in [
        "grpc_predict_v2.proto",
        "triton_extensions.proto",
        "grpc_health_v1.proto",
    ] {
        println!("cargo:rerun-if-changed=proto/{f}");
    }
    Ok(())
}
