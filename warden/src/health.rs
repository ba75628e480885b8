//! `warden health`: one `GET /v2/health/ready` over TLS, for container HEALTHCHECKs and
//! exec probes. Exit status 0 when the server answers 200, 1 for anything else
//! (refused connection, failed handshake, timeout, any other status).
//!
//! It trusts only the CA given with `--ca`. `--insecure-skip-verify` accepts any server
//! certificate and exists for one case: a probe that runs next to the server, over
//! loopback, where the image cannot know which CA issued the operator's certificate.
//! It still checks the handshake signature, so the server must hold the key of the
//! certificate it presents; it just does not ask who issued that certificate.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Empty;
use rustls_pki_types::ServerName;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything (connect, handshake, request, answer) must finish within this.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
const READY_PATH: &str = "/v2/health/ready";

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("trust").required(true).args(["ca", "insecure_skip_verify"]))]
pub struct HealthArgs {
    /// HOST:PORT of the REST (HTTPS) listener.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8443")]
    pub address: String,
    /// PEM file of the CA(s) that issued the server certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Name the certificate must carry (default: the host part of --address).
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// LOCAL HEALTH CHECKS ONLY: accept any server certificate (the handshake signature
    /// is still checked). Never use it across a network.
    #[arg(long)]
    pub insecure_skip_verify: bool,
}

/// Returns the exit status: 0 ready, 1 not ready (the reason goes to stderr).
pub fn run(args: &HealthArgs) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        match tokio::time::timeout(HEALTH_TIMEOUT, ready_status(args)).await {
            Ok(status) => status,
            Err(_) => Err(anyhow::anyhow!("no answer within {HEALTH_TIMEOUT:?}")),
        }
    });
    match result {
        Ok(200) => Ok(0),
        Ok(status) => {
            eprintln!("warden health: {} answered {status}", args.address);
            Ok(1)
        }
        Err(e) => {
            eprintln!("warden health: {}: {e:#}", args.address);
            Ok(1)
        }
    }
}

/// The host part of `HOST:PORT` or `[V6]:PORT`.
fn host_of(address: &str) -> anyhow::Result<&str> {
    let (host, port) = address
        .rsplit_once(':')
        .context("--address must be HOST:PORT")?;
    port.parse::<u16>().context("--address: bad port")?;
    Ok(host.trim_start_matches('[').trim_end_matches(']'))
}

fn server_name(args: &HealthArgs) -> anyhow::Result<ServerName<'static>> {
    let name = match &args.server_name {
        Some(n) => n.as_str(),
        None => host_of(&args.address)?,
    };
    Ok(match name.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(name.to_owned()).context("--server-name")?,
    })
}

fn client_config(args: &HealthArgs) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = if args.insecure_skip_verify {
        eprintln!(
            "warden health: --insecure-skip-verify: the server certificate is not verified (local health checks only)"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(dangerous::AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        use rustls_pki_types::pem::PemObject;
        let ca = args.ca.as_ref().context("--ca or --insecure-skip-verify")?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("cannot read {}", ca.display()))?
        {
            roots
                .add(cert.with_context(|| format!("bad PEM in {}", ca.display()))?)
                .with_context(|| format!("bad CA certificate in {}", ca.display()))?;
        }
        anyhow::ensure!(!roots.is_empty(), "no certificate in {}", ca.display());
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn ready_status(args: &HealthArgs) -> anyhow::Result<u16> {
    let name = server_name(args)?;
    let config = client_config(args)?;
    let host = host_of(&args.address)?.to_owned();
    let tcp = tokio::net::TcpStream::connect(&args.address)
        .await
        .context("cannot connect")?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .context("TLS handshake failed")?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let request = http::Request::get(READY_PATH)
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    Ok(response.status().as_u16())
}

/// The certificate verifier behind `--insecure-skip-verify`, kept apart so it is easy to
/// find and review.
mod dangerous {
    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    use std::sync::Arc;

    /// Accepts any certificate chain, but still requires a valid handshake signature
    /// made with the presented certificate's key.
    #[derive(Debug)]
    pub struct AnyCertificate(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_taken_from_the_address() {
        assert_eq!(host_of("127.0.0.1:8443").expect("valid"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8443").expect("valid"), "::1");
        assert_eq!(
            host_of("warden.example:443").expect("valid"),
            "warden.example"
        );
        assert!(host_of("127.0.0.1").is_err());
        assert!(host_of("127.0.0.1:http").is_err());
    }

    #[test]
    fn ip_hosts_become_ip_server_names() {
        let args = |address: &str, name: Option<&str>| HealthArgs {
            address: address.into(),
            ca: None,
            server_name: name.map(Into::into),
            insecure_skip_verify: true,
        };
        assert!(matches!(
            server_name(&args("127.0.0.1:8443", None)).expect("valid"),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name(&args("127.0.0.1:8443", Some("localhost"))).expect("valid"),
            ServerName::DnsName(_)
        ));
    }
}
