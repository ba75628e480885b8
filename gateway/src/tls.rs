//! The server's TLS configuration: TLS 1.3 and 1.2 only, rustls's forward-secret AEAD
//! suites, the X25519MLKEM768 hybrid group first, ALPN for HTTP/2 and HTTP/1.1.

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// ALPN protocols offered on the REST port.
pub const REST_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN protocols offered on the gRPC port.
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS certificate {path}: {message}")]
    Cert { path: String, message: String },
    #[error("cannot read TLS private key {path}: {message}")]
    Key { path: String, message: String },
    #[error("TLS configuration refused: {0}")]
    Config(#[from] rustls::Error),
}

/// Builds the server configuration from PEM files.
pub fn server_config(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
    client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert.display().to_string(),
            message: "no certificate in file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let mut config = match client_verifier {
        Some(v) => config.with_client_cert_verifier(v),
        None => config.with_no_client_auth(),
    }
    .with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // The server's preference decides (AES-256-GCM, then ChaCha20, then AES-128-GCM,
    // all AEAD and forward-secret), not the client's: a scanner rightly flags a server
    // that lets a client steer it to its weakest suite.
    config.ignore_client_order = true;
    // Session tickets would need key rotation and weaken forward secrecy; resumption by
    // session id stays in memory only.
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}
