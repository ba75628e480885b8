//! gRPC server reflection (`grpc.reflection.v1` and `v1alpha`, the same messages on the
//! wire) for the gRPC front: the descriptors of exactly the services the gateway
//! serves, so grpcurl and grpcio-reflection clients can call it without the .proto
//! files. The call is authorized by the pipeline when it opens; this module only
//! answers its messages, one answer per request message, within a bound on their
//! number, their size and the call's time.

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto};
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;
use warden_shared::reflection_proto::{
    ErrorResponse, FileDescriptorResponse, ListServiceResponse, ServerReflectionRequest,
    ServerReflectionResponse, ServiceResponse, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse,
};

/// The reflection methods' paths.
pub const V1: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
pub const V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
/// Most request messages one reflection call may send.
pub const MAX_MESSAGES: usize = 256;
/// Most bytes of one request message (a file or symbol name).
pub const MAX_MESSAGE_BYTES: usize = 4 << 10;

/// The services the gateway serves, as reflection lists them.
pub const SERVICES: &[&str] = &[
    "inference.GRPCInferenceService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
];

/// Triton's methods the gateway answers on `inference.GRPCInferenceService` beyond
/// the KServe ones of `grpc_predict_v2.proto` (whose service is what the backend
/// serves): (method, request, response).
const TRITON_METHODS: &[(&str, &str, &str)] = &[
    ("ModelConfig", "ModelConfigRequest", "ModelConfigResponse"),
    (
        "ModelStatistics",
        "ModelStatisticsRequest",
        "ModelStatisticsResponse",
    ),
    (
        "RepositoryModelLoad",
        "RepositoryModelLoadRequest",
        "RepositoryModelLoadResponse",
    ),
    (
        "RepositoryModelUnload",
        "RepositoryModelUnloadRequest",
        "RepositoryModelUnloadResponse",
    ),
    ("LogSettings", "LogSettingsRequest", "LogSettingsResponse"),
];

/// Every served file, encoded, and which file defines each symbol.
struct Descriptors {
    files: HashMap<String, (Bytes, Vec<String>)>,
    symbols: HashMap<String, String>,
}

static DESCRIPTORS: LazyLock<Descriptors> = LazyLock::new(Descriptors::build);

fn symbols_of(f: &FileDescriptorProto, out: &mut HashMap<String, String>) {
    fn message(
        prefix: &str,
        m: &prost_types::DescriptorProto,
        file: &str,
        out: &mut HashMap<String, String>,
    ) {
        let name = format!("{prefix}.{}", m.name());
        for n in &m.nested_type {
            message(&name, n, file, out);
        }
        for e in &m.enum_type {
            out.insert(format!("{name}.{}", e.name()), file.into());
        }
        out.insert(name, file.into());
    }
    let package = f.package();
    for m in &f.message_type {
        message(package, m, f.name(), out);
    }
    for e in &f.enum_type {
        out.insert(format!("{package}.{}", e.name()), f.name().into());
    }
    for s in &f.service {
        let service = format!("{package}.{}", s.name());
        for m in &s.method {
            out.insert(format!("{service}.{}", m.name()), f.name().into());
        }
        out.insert(service, f.name().into());
    }
}

impl Descriptors {
    fn build() -> Descriptors {
        // Built into the binary by shared/build.rs: a failure here is a build defect.
        let set = FileDescriptorSet::decode(warden_shared::DESCRIPTORS).unwrap_or_default();
        let mut files = HashMap::new();
        let mut symbols = HashMap::new();
        for mut f in set.file {
            if let Some(s) = f
                .service
                .iter_mut()
                .find(|s| s.name() == "GRPCInferenceService")
            {
                for (name, input, output) in TRITON_METHODS {
                    s.method.push(MethodDescriptorProto {
                        name: Some((*name).into()),
                        input_type: Some(format!(".inference.{input}")),
                        output_type: Some(format!(".inference.{output}")),
                        ..Default::default()
                    });
                }
                f.dependency.push("triton_extensions.proto".into());
            }
            symbols_of(&f, &mut symbols);
            files.insert(
                f.name().to_owned(),
                (Bytes::from(f.encode_to_vec()), f.dependency.clone()),
            );
        }
        Descriptors { files, symbols }
    }

    /// A file and everything it imports, the file first.
    fn with_dependencies(&self, name: &str) -> Option<Vec<Bytes>> {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let mut todo = vec![name.to_owned()];
        while let Some(n) = todo.pop() {
            if seen.contains(&n) {
                continue;
            }
            let (bytes, deps) = self.files.get(&n)?;
            out.push(bytes.clone());
            todo.extend(deps.iter().cloned());
            seen.push(n);
        }
        Some(out)
    }
}

/// The answer to one reflection request.
pub fn answer(req: ServerReflectionRequest) -> ServerReflectionResponse {
    let d = &*DESCRIPTORS;
    let not_found = |what: &str| {
        MessageResponse::ErrorResponse(ErrorResponse {
            error_code: tonic::Code::NotFound as i32,
            error_message: format!("{what} not found"),
        })
    };
    let files = |f: Option<Vec<Bytes>>, what: &str| match f {
        Some(f) => MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
            file_descriptor_proto: f.into_iter().map(|b| b.to_vec()).collect(),
        }),
        None => not_found(what),
    };
    let response = match &req.message_request {
        Some(MessageRequest::ListServices(_)) => {
            MessageResponse::ListServicesResponse(ListServiceResponse {
                service: SERVICES
                    .iter()
                    .map(|s| ServiceResponse { name: (*s).into() })
                    .collect(),
            })
        }
        Some(MessageRequest::FileByFilename(name)) => files(d.with_dependencies(name), "file"),
        Some(MessageRequest::FileContainingSymbol(symbol)) => files(
            d.symbols
                .get(symbol.trim_start_matches('.'))
                .and_then(|f| d.with_dependencies(f)),
            "symbol",
        ),
        Some(MessageRequest::FileContainingExtension(_))
        | Some(MessageRequest::AllExtensionNumbersOfType(_)) => not_found("extension"),
        None => MessageResponse::ErrorResponse(ErrorResponse {
            error_code: tonic::Code::InvalidArgument as i32,
            error_message: "empty request".into(),
        }),
    };
    ServerReflectionResponse {
        valid_host: req.host.clone(),
        original_request: Some(req),
        message_response: Some(response),
    }
}

/// Why a reflection stream ended early: a gRPC code and message.
pub type End = (tonic::Code, &'static str);

/// Answers the request messages of `body` as they arrive, each answer a framed data
/// frame on `send`, until the client half-closes or goes away (`Ok`), a bound is
/// passed or the deadline comes (`Err`).
pub async fn serve(
    mut body: Incoming,
    deadline: Duration,
    send: &tokio::sync::mpsc::Sender<http_body::Frame<Bytes>>,
) -> Result<(), End> {
    let run = async {
        let mut buf = BytesMut::new();
        let mut count = 0usize;
        loop {
            while buf.len() >= 5 {
                if buf[0] != 0 {
                    return Err((
                        tonic::Code::Unimplemented,
                        "compressed messages are not accepted",
                    ));
                }
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if len > MAX_MESSAGE_BYTES {
                    return Err((
                        tonic::Code::ResourceExhausted,
                        "reflection request too large",
                    ));
                }
                if buf.len() < 5 + len {
                    break;
                }
                buf.advance(5);
                let message = buf.split_to(len).freeze();
                count += 1;
                if count > MAX_MESSAGES {
                    return Err((
                        tonic::Code::ResourceExhausted,
                        "too many reflection requests on one call",
                    ));
                }
                let req = ServerReflectionRequest::decode(message)
                    .map_err(|_| (tonic::Code::InvalidArgument, "invalid reflection request"))?;
                let out = answer(req).encode_to_vec();
                let mut framed = BytesMut::with_capacity(5 + out.len());
                framed.extend_from_slice(&[0]);
                framed.extend_from_slice(&(out.len() as u32).to_be_bytes());
                framed.extend_from_slice(&out);
                if send
                    .send(http_body::Frame::data(framed.freeze()))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            match body.frame().await {
                None => return Ok(()),
                Some(Err(_)) => return Err((tonic::Code::Cancelled, "request stream failed")),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        if buf.len() + data.len() > 5 + MAX_MESSAGE_BYTES {
                            return Err((
                                tonic::Code::ResourceExhausted,
                                "reflection request too large",
                            ));
                        }
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
    };
    tokio::time::timeout(deadline, run).await.unwrap_or(Err((
        tonic::Code::DeadlineExceeded,
        "reflection call took too long",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(r: MessageRequest) -> MessageResponse {
        answer(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(r),
        })
        .message_response
        .unwrap()
    }

    #[test]
    fn lists_the_served_services_and_finds_their_files() {
        let MessageResponse::ListServicesResponse(l) =
            ask(MessageRequest::ListServices(String::new()))
        else {
            panic!("not a list");
        };
        assert_eq!(l.service.len(), SERVICES.len());
        let MessageResponse::FileDescriptorResponse(f) = ask(MessageRequest::FileContainingSymbol(
            "inference.GRPCInferenceService".into(),
        )) else {
            panic!("no file");
        };
        let files: Vec<FileDescriptorProto> = f
            .file_descriptor_proto
            .iter()
            .map(|b| FileDescriptorProto::decode(b.as_slice()).unwrap())
            .collect();
        assert_eq!(files[0].name(), "grpc_predict_v2.proto");
        assert!(files.iter().any(|f| f.name() == "triton_extensions.proto"));
        let methods: Vec<&str> = files[0].service[0]
            .method
            .iter()
            .map(|m| m.name())
            .collect();
        for m in [
            "ModelInfer",
            "ModelConfig",
            "ModelStatistics",
            "LogSettings",
        ] {
            assert!(methods.contains(&m), "{m}: {methods:?}");
        }
        for symbol in [
            "inference.ModelInferRequest.InferInputTensor",
            "grpc.health.v1.Health",
            "inference.DataType",
            ".inference.ModelConfig",
        ] {
            assert!(
                matches!(
                    ask(MessageRequest::FileContainingSymbol(symbol.into())),
                    MessageResponse::FileDescriptorResponse(_)
                ),
                "{symbol}"
            );
        }
        assert!(matches!(
            ask(MessageRequest::FileContainingSymbol("nope.Nope".into())),
            MessageResponse::ErrorResponse(_)
        ));
    }
}
