//! JWT verification.
//!
//! The accepted algorithms follow from the configured key, never from the token: an RSA
//! key verifies RS*/PS*, an EC key ES256/ES384, an Ed25519 key EdDSA. `alg: none`, HMAC
//! with a public key as secret, and headers that point at other keys (`jku`, `x5u`,
//! `jwk`) therefore cannot work. `exp`, `iss` and `aud` are required; `nbf` and `iat`
//! are checked with a leeway; a token may not live longer than the configured maximum.

use super::Principal;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use warden_shared::config::AuthConfig;

/// Longest token accepted, in bytes; real tokens are well under 8 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

const RSA_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC_ALGS: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];
const ED_ALGS: &[Algorithm] = &[Algorithm::EdDSA];

/// A verification key and the algorithms it may verify.
struct Key {
    key: DecodingKey,
    algorithms: &'static [Algorithm],
}

/// Why a key file cannot be used (an operator error, reported at start).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read JWT key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("JWT key {path} is neither a PEM public key (RSA, EC, Ed25519) nor a JWKS: {message}")]
    Parse { path: String, message: String },
}

/// Why a token was refused. Goes to logs and the audit record; the client only ever
/// learns "invalid token".
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token too long")]
    TooLong,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("no key with kid {0:?}")]
    UnknownKid(String),
    #[error("token has no kid and several keys are configured")]
    MissingKid,
    #[error("algorithm {0:?} not allowed for this key")]
    Algorithm(String),
    #[error("verification failed: {0}")]
    Invalid(String),
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("token lifetime exceeds the maximum")]
    LifetimeTooLong,
    #[error("token has no subject")]
    NoSubject,
}

/// The claims Warden reads; the rest are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    iss: String,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
}

/// Verifies tokens for one issuer.
pub struct JwtVerifier {
    /// By kid; a PEM key is stored under `None`.
    keys: HashMap<Option<String>, Key>,
    issuer: String,
    audience: String,
    leeway: u64,
    max_lifetime: u64,
}

fn pem_key(pem: &[u8]) -> Result<Key, String> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok(Key {
            key,
            algorithms: RSA_ALGS,
        });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok(Key {
            key,
            algorithms: EC_ALGS,
        });
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Ok(Key {
            key,
            algorithms: ED_ALGS,
        });
    }
    Err("no RSA, EC or Ed25519 public key found".into())
}

fn jwks_keys(text: &str) -> Result<HashMap<Option<String>, Key>, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone().ok_or("a JWKS key has no kid")?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
        let algorithms = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => RSA_ALGS,
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => EC_ALGS,
            jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => ED_ALGS,
            // Symmetric keys are never accepted from a key file meant for public keys.
            jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_) => {
                return Err(format!("key {kid:?} is a symmetric key; refused"));
            }
        };
        keys.insert(Some(kid), Key { key, algorithms });
    }
    if keys.is_empty() {
        return Err("JWKS has no keys".into());
    }
    Ok(keys)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl JwtVerifier {
    /// Loads the key file named by the configuration.
    pub fn from_config(auth: &AuthConfig) -> Result<JwtVerifier, KeyError> {
        let path = auth.jwt_key.as_deref().unwrap_or(Path::new(""));
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        let keys = if bytes.trim_ascii_start().starts_with(b"{") {
            jwks_keys(&String::from_utf8_lossy(&bytes))
        } else {
            pem_key(&bytes).map(|k| HashMap::from([(None, k)]))
        }
        .map_err(|message| KeyError::Parse {
            path: shown,
            message,
        })?;
        Ok(JwtVerifier {
            keys,
            issuer: auth.jwt_issuer.clone().unwrap_or_default(),
            audience: auth.jwt_audience.clone().unwrap_or_default(),
            leeway: auth.leeway_secs,
            max_lifetime: auth.max_lifetime_secs,
        })
    }

    /// Verifies a token and returns who it speaks for.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let key = match (&header.kid, self.keys.get(&None)) {
            // A single PEM key: the kid, if any, is informational.
            (_, Some(k)) => k,
            (Some(kid), None) => self
                .keys
                .get(&Some(kid.clone()))
                .ok_or_else(|| TokenError::UnknownKid(kid.chars().take(64).collect()))?,
            (None, None) => return Err(TokenError::MissingKid),
        };
        if !key.algorithms.contains(&header.alg) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = key.algorithms.to_vec();
        validation.leeway = self.leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let claims = data.claims;
        let now = now();
        let issued = match claims.iat {
            Some(iat) if iat > now + self.leeway => return Err(TokenError::IssuedInFuture),
            Some(iat) => iat,
            None => now,
        };
        if claims.exp.saturating_sub(issued) > self.max_lifetime {
            return Err(TokenError::LifetimeTooLong);
        }
        let subject = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(TokenError::NoSubject)?;
        Ok(Principal {
            subject,
            issuer: claims.iss,
            key_id: header.kid,
        })
    }
}
