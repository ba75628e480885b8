//! Authentication: who is calling. A listener takes a bearer JWT, a verified client
//! certificate, either, or both (see [`AuthMode`]); the result is a [`Principal`].
//! Nothing downstream ever sees the token itself, and a client is never told which
//! check failed: the reason goes to the logs and the audit record.

pub mod jwt;
pub mod mtls;

use crate::peer::ConnInfo;
use warden_shared::config::AuthMode;

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Jwt,
    Mtls,
    JwtAndMtls,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Jwt => "jwt",
            Method::Mtls => "mtls",
            Method::JwtAndMtls => "jwt+mtls",
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub method: Method,
    /// The token's `sub`, or the certificate identity for mTLS alone.
    pub subject: String,
    /// The token's `iss`, or `x509` for mTLS alone.
    pub issuer: String,
    /// The `kid` of the key that verified the token, if it had one.
    pub key_id: Option<String>,
    /// SHA-256 of the token's `jti` (hex, first 16 bytes), if it had one.
    pub jti_hash: Option<String>,
    /// The token's scopes (`scope` or `scp`).
    pub scopes: Vec<String>,
    /// The token's `groups`.
    pub groups: Vec<String>,
    /// The client certificate's identity, if one was presented and verified.
    pub certificate: Option<String>,
}

impl Principal {
    /// The form passed to the backend and written to logs; the issuer keeps equal
    /// subjects of different issuers apart.
    pub fn display_name(&self) -> String {
        format!("{} ({})", self.subject, self.issuer)
    }

    /// [`Principal::display_name`] bounded and escaped for a log line (the subject is
    /// whatever the token's issuer put there).
    pub fn log_name(&self) -> String {
        crate::logsafe::log_safe(&self.display_name()).into_owned()
    }
}

/// Why a call was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials")]
    Missing,
    #[error("token refused: {0}")]
    Token(#[from] jwt::TokenError),
    #[error("no client certificate")]
    NoCertificate,
    #[error("token is bound to a client certificate the connection does not have")]
    CertificateBinding,
}

impl AuthError {
    /// A short, fixed label for metrics and audit records.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_credentials",
            AuthError::Token(t) => t.reason(),
            AuthError::NoCertificate => "no_client_certificate",
            AuthError::CertificateBinding => "certificate_binding",
        }
    }
}

/// Extracts the token from an `Authorization: Bearer` header value. The scheme is
/// case-insensitive (RFC 7235); anything else is no credential at all.
pub fn bearer_token(header: Option<&http::HeaderValue>) -> Option<&str> {
    bearer_from_str(header?.to_str().ok()?)
}

/// The token in an `authorization` value (`Bearer <token>`), if it is one.
pub fn bearer_from_str(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// Authenticates one call on a connection, by the listener's mode.
pub fn authenticate(
    mode: AuthMode,
    jwt: &jwt::JwtAuthority,
    conn: &ConnInfo,
    token: Option<&str>,
) -> Result<Principal, AuthError> {
    let cert = conn.client_cert.as_ref();
    let from_token = |token: &str| -> Result<Principal, AuthError> {
        let (mut p, bound) = jwt.verify_bound(token)?;
        // RFC 8705: a token bound to a certificate is only good on a connection
        // that presented exactly that certificate.
        if let Some(bound) = bound
            && cert.map(|c| c.thumbprint.as_str()) != Some(bound.as_str())
        {
            return Err(AuthError::CertificateBinding);
        }
        p.certificate = cert.map(|c| c.identity.clone());
        Ok(p)
    };
    let from_cert = || -> Result<Principal, AuthError> {
        let c = cert.ok_or(AuthError::NoCertificate)?;
        Ok(Principal {
            method: Method::Mtls,
            subject: c.identity.clone(),
            issuer: "x509".into(),
            key_id: None,
            jti_hash: None,
            scopes: Vec::new(),
            groups: Vec::new(),
            certificate: Some(c.identity.clone()),
        })
    };
    match mode {
        AuthMode::Jwt => from_token(token.ok_or(AuthError::Missing)?),
        AuthMode::Mtls => from_cert(),
        // A token that is present must be valid: a bad token never falls back.
        AuthMode::JwtOrMtls => match token {
            Some(t) => from_token(t),
            None => from_cert().map_err(|_| AuthError::Missing),
        },
        AuthMode::JwtAndMtls => {
            if cert.is_none() {
                return Err(AuthError::NoCertificate);
            }
            let mut p = from_token(token.ok_or(AuthError::Missing)?)?;
            p.method = Method::JwtAndMtls;
            Ok(p)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::mtls::ClientCert;
    use super::*;
    use crate::peer::Activity;
    use http::HeaderValue;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;
    use warden_shared::config::{AuthConfig, IssuerConfig};

    #[test]
    fn bearer_parsing() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(bearer_token(Some(&h("Bearer abc"))), Some("abc"));
        assert_eq!(bearer_token(Some(&h("bearer abc"))), Some("abc"));
        assert_eq!(bearer_token(Some(&h("Basic abc"))), None);
        assert_eq!(bearer_token(Some(&h("Bearer "))), None);
        assert_eq!(bearer_token(Some(&h("Bearerabc"))), None);
        assert_eq!(bearer_token(None), None);
    }

    const SECRET: &str = "a shared secret of at least 32 bytes";

    /// Issuer `iss` with an HS256 secret written at `path` (the shortest way to a
    /// token a test can sign).
    pub(crate) fn issuer(path: &std::path::Path) -> IssuerConfig {
        std::fs::write(path, SECRET).unwrap();
        IssuerConfig {
            issuer: "iss".into(),
            audiences: vec!["warden".into()],
            keys: Vec::new(),
            hs256_secret: Some(path.to_owned()),
        }
    }

    /// An authority for [`issuer`].
    fn authority(name: &str) -> jwt::JwtAuthority {
        let path =
            std::env::temp_dir().join(format!("warden-auth-{name}-{}.secret", std::process::id()));
        jwt::JwtAuthority::from_config(&AuthConfig {
            issuers: vec![issuer(&path)],
            ..AuthConfig::default()
        })
        .unwrap()
    }

    /// A token of [`issuer`] for `subject`, bound to certificate `bound` if given.
    pub(crate) fn token_of(subject: &str, bound: Option<&str>) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut claims =
            json!({"iss": "iss", "aud": "warden", "sub": subject, "iat": now, "exp": now + 600});
        if let Some(t) = bound {
            claims["cnf"] = json!({"x5t#S256": t});
        }
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    /// A token for `alice`.
    fn token(bound: Option<&str>) -> String {
        token_of("alice", bound)
    }

    /// A connection with the client certificate `thumbprint` (identity `cert-id`), or none.
    fn conn(thumbprint: Option<&str>) -> ConnInfo {
        ConnInfo {
            peer: "127.0.0.1:1".parse().unwrap(),
            tls_version: "TLSv1.3",
            cipher: String::new(),
            alpn: None,
            client_cert: thumbprint.map(|t| ClientCert {
                identity: "cert-id".into(),
                thumbprint: t.into(),
            }),
            activity: Activity::new(),
        }
    }

    #[test]
    fn each_mode_takes_what_it_names() {
        let a = authority("modes");
        let (t, bad) = (token(None), "x.y.z");
        let (none, with) = (conn(None), conn(Some("T1")));
        let auth = |mode, c: &ConnInfo, t: Option<&str>| authenticate(mode, &a, c, t);

        assert_eq!(auth(AuthMode::Jwt, &none, None), Err(AuthError::Missing));
        let p = auth(AuthMode::Jwt, &none, Some(&t)).unwrap();
        assert_eq!(
            (p.method, p.subject.as_str(), p.certificate),
            (Method::Jwt, "alice", None)
        );
        let p = auth(AuthMode::Jwt, &with, Some(&t)).unwrap();
        assert_eq!(p.certificate.as_deref(), Some("cert-id"));

        assert_eq!(
            auth(AuthMode::Mtls, &none, Some(&t)),
            Err(AuthError::NoCertificate)
        );
        let p = auth(AuthMode::Mtls, &with, None).unwrap();
        assert_eq!(
            (p.method, p.subject.as_str(), p.issuer.as_str()),
            (Method::Mtls, "cert-id", "x509")
        );

        assert_eq!(
            auth(AuthMode::JwtOrMtls, &with, Some(&t)).unwrap().method,
            Method::Jwt
        );
        assert_eq!(
            auth(AuthMode::JwtOrMtls, &with, None).unwrap().method,
            Method::Mtls
        );
        assert!(
            matches!(
                auth(AuthMode::JwtOrMtls, &with, Some(bad)),
                Err(AuthError::Token(_))
            ),
            "a bad token never falls back to the certificate"
        );
        assert_eq!(
            auth(AuthMode::JwtOrMtls, &none, None),
            Err(AuthError::Missing)
        );

        assert_eq!(
            auth(AuthMode::JwtAndMtls, &none, Some(&t)),
            Err(AuthError::NoCertificate)
        );
        assert_eq!(
            auth(AuthMode::JwtAndMtls, &with, None),
            Err(AuthError::Missing)
        );
        let p = auth(AuthMode::JwtAndMtls, &with, Some(&t)).unwrap();
        assert_eq!(p.method, Method::JwtAndMtls);
        assert_eq!(p.certificate.as_deref(), Some("cert-id"));
    }

    #[test]
    fn a_bound_token_needs_its_certificate() {
        let a = authority("bound");
        let t = token(Some("T1"));
        let mode = AuthMode::Jwt;
        assert!(authenticate(mode, &a, &conn(Some("T1")), Some(&t)).is_ok());
        for other in [conn(Some("T2")), conn(None)] {
            assert_eq!(
                authenticate(mode, &a, &other, Some(&t)),
                Err(AuthError::CertificateBinding)
            );
        }
    }

    #[test]
    fn names_and_labels() {
        assert_eq!(Method::Jwt.as_str(), "jwt");
        assert_eq!(Method::Mtls.as_str(), "mtls");
        assert_eq!(Method::JwtAndMtls.as_str(), "jwt+mtls");
        let p = Principal {
            method: Method::Jwt,
            subject: "eve\nforged".into(),
            issuer: "iss".into(),
            key_id: None,
            jti_hash: None,
            scopes: Vec::new(),
            groups: Vec::new(),
            certificate: None,
        };
        assert_eq!(p.display_name(), "eve\nforged (iss)");
        assert_eq!(p.log_name(), "eve\\nforged (iss)");
        assert_eq!(AuthError::Missing.reason(), "missing_credentials");
        assert_eq!(AuthError::NoCertificate.reason(), "no_client_certificate");
        assert_eq!(
            AuthError::CertificateBinding.reason(),
            "certificate_binding"
        );
        assert_eq!(
            AuthError::Token(jwt::TokenError::Expired).reason(),
            "token_expired"
        );
    }
}
