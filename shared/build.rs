//! Generates the KServe v2 gRPC types and Warden's own backend gauges service. protoc
//! comes from the protoc-bin-vendored crate, so a build needs nothing installed beyond
//! cargo.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded; PROTOC is read by prost-build.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_protos(
            &["proto/grpc_predict_v2.proto", "proto/warden_backend.proto"],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto/grpc_predict_v2.proto");
    println!("cargo:rerun-if-changed=proto/warden_backend.proto");
    Ok(())
}
