//! Generates the KServe v2 gRPC types and the TensorFlow Serving API messages. protoc
//! comes from the protoc-bin-vendored crate, so a build needs nothing installed beyond
//! cargo.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded; PROTOC is read by prost-build.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_protos(&["proto/grpc_predict_v2.proto"], &["proto"])?;
    // The TFS services are framed by the gateway's own gRPC front: messages only.
    let tfs = [
        "proto/tensorflow_serving/apis/prediction_service.proto",
        "proto/tensorflow_serving/apis/model_service.proto",
    ];
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .bytes(".tensorflow.TensorProto.tensor_content")
        .compile_protos(&tfs, &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
