//! Client certificates: the verifier each listener uses, and the identity a verified
//! certificate stands for (URI SAN such as a SPIFFE ID, then DNS SAN, then subject CN).

use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;
use warden_shared::config::ClientCertMode;

/// A verified client certificate, as the gateway records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// URI SAN, else DNS SAN, else subject CN.
    pub identity: String,
    /// SHA-256 of the DER certificate, base64url (RFC 8705 `x5t#S256`).
    pub thumbprint: String,
}

/// The verifier for a listener's mode; `None` for `off`.
pub fn verifier(
    mode: ClientCertMode,
    ca: Option<&Path>,
) -> anyhow::Result<Option<Arc<dyn ClientCertVerifier>>> {
    if mode == ClientCertMode::Off {
        return Ok(None);
    }
    let ca = ca.ok_or_else(|| anyhow::anyhow!("client certificates need tls.client_ca"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .map_err(|e| anyhow::anyhow!("cannot read client CA {}: {e}", ca.display()))?
    {
        roots.add(cert.map_err(|e| anyhow::anyhow!("client CA {}: {e}", ca.display()))?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if mode == ClientCertMode::Optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    Ok(Some(builder.build()?))
}

/// The identity of a certificate that rustls has already verified.
pub fn identity(der: &[u8]) -> Option<ClientCert> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut uri = None;
    let mut dns = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) if uri.is_none() => uri = Some(u.to_string()),
                GeneralName::DNSName(d) if dns.is_none() => dns = Some(d.to_string()),
                _ => {}
            }
        }
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let identity = uri.or(dns).or(cn)?;
    Some(ClientCert {
        identity,
        thumbprint: thumbprint(der),
    })
}

/// `x5t#S256` of a DER certificate.
pub fn thumbprint(der: &[u8]) -> String {
    use base64::Engine;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    /// A self-signed certificate with these SANs and (if given) this subject CN.
    fn cert(sans: Vec<SanType>, cn: Option<&str>) -> rcgen::Certificate {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.subject_alt_names = sans;
        p.self_signed(&KeyPair::generate().unwrap()).unwrap()
    }

    fn uri(u: &str) -> SanType {
        SanType::URI(u.try_into().unwrap())
    }

    fn dns(d: &str) -> SanType {
        SanType::DnsName(d.try_into().unwrap())
    }

    fn identity_of(sans: Vec<SanType>, cn: Option<&str>) -> Option<String> {
        identity(cert(sans, cn).der()).map(|c| c.identity)
    }

    #[test]
    fn the_identity_is_the_first_uri_then_the_first_dns_name_then_the_cn() {
        let sans = || {
            vec![
                dns("a.example"),
                uri("spiffe://x/one"),
                dns("b.example"),
                uri("spiffe://x/two"),
            ]
        };
        assert_eq!(
            identity_of(sans(), Some("cn")).as_deref(),
            Some("spiffe://x/one")
        );
        let names = vec![dns("a.example"), dns("b.example")];
        assert_eq!(identity_of(names, Some("cn")).as_deref(), Some("a.example"));
        assert_eq!(identity_of(Vec::new(), Some("cn")).as_deref(), Some("cn"));
        assert_eq!(identity_of(Vec::new(), None), None);
        assert_eq!(identity(b"not a certificate"), None);
    }

    #[test]
    fn the_thumbprint_is_the_base64url_sha256_of_the_der() {
        use base64::Engine;
        let c = cert(vec![uri("spiffe://x/one")], None);
        let der = c.der().as_ref();
        let sha = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha.as_ref());
        assert_eq!(expected.len(), 43);
        assert_eq!(identity(der).unwrap().thumbprint, expected);
        assert_eq!(thumbprint(der), expected);
    }

    #[test]
    fn the_verifier_follows_the_mode() {
        let ca = std::env::temp_dir().join(format!("warden-mtls-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, cert(Vec::new(), Some("ca")).pem()).unwrap();
        assert!(verifier(ClientCertMode::Off, Some(&ca)).unwrap().is_none());
        assert!(verifier(ClientCertMode::Required, None).is_err());
        let required = verifier(ClientCertMode::Required, Some(&ca))
            .unwrap()
            .unwrap();
        assert!(required.client_auth_mandatory());
        let optional = verifier(ClientCertMode::Optional, Some(&ca))
            .unwrap()
            .unwrap();
        assert!(!optional.client_auth_mandatory());
    }
}
