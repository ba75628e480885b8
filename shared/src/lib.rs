//! Types both of Warden's processes agree on: the KServe v2 wire types (used on the
//! network *and* on the Unix socket between gateway and backend), the TensorFlow
//! Serving API messages (the gateway's second API), the tensor datatypes,
//! the configuration file, and the OVMS model repository layout.
//!
//! Nothing in here touches the network, the file system beyond reading a config file,
//! or OpenVINO (the socket's framing reads and writes a stream its caller opened); both processes can depend on it without widening what they can do.
#![forbid(unsafe_code)]

pub mod config;
pub mod datatype;
pub mod frames;
pub mod remote;
pub mod repository;
pub mod wire;

/// Lower-case hexadecimal of `bytes` (digests in audit records and checks), in one
/// buffer: the audit chain writes one per request.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod hex_tests {
    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(super::hex(&[]), "");
    }
}

/// The generated KServe v2 gRPC types and service stubs.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("inference");
}

/// The backend's gauges service (`proto/warden_backend.proto`): model state only the
/// backend sees, read by the gateway for `/metrics`.
#[allow(clippy::all, missing_docs)]
pub mod backend_proto {
    tonic::include_proto!("warden.backend");
}

/// gRPC's standard health checking messages (`grpc.health.v1`).
#[allow(clippy::all, missing_docs)]
pub mod health_proto {
    tonic::include_proto!("grpc.health.v1");
}

/// gRPC server reflection messages (`grpc.reflection.v1`; v1alpha is the same on the
/// wire).
#[allow(clippy::all, missing_docs)]
pub mod reflection_proto {
    tonic::include_proto!("grpc.reflection.v1");
}

/// The descriptors of every proto file above (a `FileDescriptorSet`), for gRPC server
/// reflection.
pub const DESCRIPTORS: &[u8] = tonic::include_file_descriptor_set!("descriptors");

/// The TensorFlow Serving API messages (`tensorflow.*`, `tensorflow.serving.*`), from
/// the trimmed protos under `proto/tensorflow*`.
#[allow(clippy::all, missing_docs)]
pub mod tensorflow {
    tonic::include_proto!("tensorflow");
    pub mod serving {
        tonic::include_proto!("tensorflow.serving");
    }
}

/// Warden's version, reported in server metadata.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The server name reported in server metadata.
pub const SERVER_NAME: &str = "warden";
