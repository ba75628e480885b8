//! JWT verification for one or more issuers.
//!
//! The accepted algorithms follow from the configured key, never from the token: an RSA
//! key verifies RS*/PS*, an EC key ES256/ES384, an Ed25519 key EdDSA, and HS256 only
//! an issuer configured with a shared secret and no public key. So `alg: none`, HMAC
//! with a public key as the secret, and headers that point at other keys (`jku`, `x5u`,
//! `jwk`, `x5c`) cannot work: those headers are never read, let alone fetched. A token
//! with `crit` is refused (RFC 7515 §4.1.11: we understand no extension). `exp`, `iss`
//! and `aud` are required; `nbf` and `iat` are checked with a leeway; a token may not
//! live longer than the configured maximum.
//!
//! JWKS files are re-read when they change (checked by [`JwtAuthority::refresh`]) and,
//! on a `kid` no key has, at most once per `jwks_refresh_secs`.

use super::{Method, Principal};
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use warden_shared::config::{AuthConfig, IssuerConfig};

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
const HMAC_ALGS: &[Algorithm] = &[Algorithm::HS256];

/// A verification key and the algorithms it may verify.
#[derive(Clone)]
struct Key {
    key: DecodingKey,
    algorithms: &'static [Algorithm],
}

/// Why a key file cannot be used (an operator error, reported at start or reload).
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

/// Why a token was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token too long")]
    TooLong,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token has a crit header")]
    Crit,
    #[error("unknown issuer")]
    UnknownIssuer,
    #[error("no key with kid {0:?}")]
    UnknownKid(String),
    #[error("algorithm {0:?} not allowed for this issuer's keys")]
    Algorithm(String),
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("wrong audience")]
    Audience,
    #[error("bad signature")]
    Signature,
    #[error("verification failed: {0}")]
    Invalid(String),
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("token lifetime exceeds the maximum")]
    LifetimeTooLong,
    #[error("token has no subject")]
    NoSubject,
}

impl TokenError {
    /// A short, fixed label for metrics and audit records.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::TooLong => "token_too_long",
            TokenError::Malformed(_) => "token_malformed",
            TokenError::Crit => "token_crit_header",
            TokenError::UnknownIssuer => "token_unknown_issuer",
            TokenError::UnknownKid(_) => "token_unknown_kid",
            TokenError::Algorithm(_) => "token_algorithm",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::Audience => "token_audience",
            TokenError::Signature => "token_signature",
            TokenError::Invalid(_) => "token_invalid",
            TokenError::IssuedInFuture => "token_iat_future",
            TokenError::LifetimeTooLong => "token_lifetime",
            TokenError::NoSubject => "token_no_subject",
        }
    }
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
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Vec<String>>,
    #[serde(default)]
    groups: Option<Vec<String>>,
}

/// The keys of one issuer at one moment.
#[derive(Default, Clone)]
struct KeySet {
    by_kid: HashMap<String, Key>,
    /// PEM keys have no kid: a token without `kid` is tried against these.
    anonymous: Vec<Key>,
}

struct Issuer {
    name: String,
    audiences: Vec<String>,
    sources: Vec<PathBuf>,
    hmac: Option<Key>,
    keys: RwLock<Arc<KeySet>>,
    /// When the sources were last read, and each JWKS file's modification time then.
    last_read: Mutex<(Instant, HashMap<PathBuf, SystemTime>)>,
}

/// Verifies tokens of every configured issuer.
pub struct JwtAuthority {
    issuers: HashMap<String, Issuer>,
    leeway: u64,
    max_lifetime: u64,
    refresh_every: Duration,
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

fn jwks_keys(text: &str, into: &mut KeySet) -> Result<(), String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| e.to_string())?;
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone().ok_or("a JWKS key has no kid")?;
        let algorithms = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => RSA_ALGS,
            AlgorithmParameters::EllipticCurve(_) => EC_ALGS,
            AlgorithmParameters::OctetKeyPair(_) => ED_ALGS,
            // A key file is for public keys: a symmetric key in it is refused outright.
            AlgorithmParameters::OctetKey(_) => {
                return Err(format!("key {kid:?} is a symmetric key; refused"));
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
        into.by_kid.insert(kid, Key { key, algorithms });
    }
    Ok(())
}

fn read_sources(sources: &[PathBuf]) -> Result<(KeySet, HashMap<PathBuf, SystemTime>), KeyError> {
    let mut set = KeySet::default();
    let mut mtimes = HashMap::new();
    for path in sources {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        if bytes.trim_ascii_start().starts_with(b"{") {
            jwks_keys(&String::from_utf8_lossy(&bytes), &mut set).map_err(|message| {
                KeyError::Parse {
                    path: shown,
                    message,
                }
            })?;
            if let Ok(m) = std::fs::metadata(path).and_then(|m| m.modified()) {
                mtimes.insert(path.clone(), m);
            }
        } else {
            set.anonymous
                .push(pem_key(&bytes).map_err(|message| KeyError::Parse {
                    path: shown,
                    message,
                })?);
        }
    }
    Ok((set, mtimes))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn b64_json(segment: &str) -> Result<serde_json::Map<String, serde_json::Value>, TokenError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed("bad base64".into()))?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed("bad JSON".into()))
}

/// The three segments of a compact JWS, refusing anything else.
fn segments(token: &str) -> Result<[&str; 3], TokenError> {
    let mut it = token.split('.');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(h), Some(p), Some(s), None) => Ok([h, p, s]),
        _ => Err(TokenError::Malformed("not three segments".into())),
    }
}

impl Issuer {
    fn load(cfg: &IssuerConfig) -> Result<Issuer, KeyError> {
        let (set, mtimes) = read_sources(&cfg.keys)?;
        let hmac = match &cfg.hs256_secret {
            None => None,
            Some(path) => {
                let secret = std::fs::read(path).map_err(|source| KeyError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                let secret = secret.trim_ascii();
                if secret.len() < 32 {
                    return Err(KeyError::Parse {
                        path: path.display().to_string(),
                        message: "HS256 secret shorter than 32 bytes".into(),
                    });
                }
                Some(Key {
                    key: DecodingKey::from_secret(secret),
                    algorithms: HMAC_ALGS,
                })
            }
        };
        Ok(Issuer {
            name: cfg.issuer.clone(),
            audiences: cfg
                .audiences
                .iter()
                .filter(|a| !a.is_empty())
                .cloned()
                .collect(),
            sources: cfg.keys.clone(),
            hmac,
            keys: RwLock::new(Arc::new(set)),
            last_read: Mutex::new((Instant::now(), mtimes)),
        })
    }

    fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Re-reads the sources; on failure the old keys stay in force.
    fn reload(&self) -> Result<(), KeyError> {
        let (set, mtimes) = read_sources(&self.sources)?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        *self.last_read.lock().unwrap_or_else(|e| e.into_inner()) = (Instant::now(), mtimes);
        Ok(())
    }

    fn changed_on_disk(&self) -> bool {
        let last = self.last_read.lock().unwrap_or_else(|e| e.into_inner());
        last.1.iter().any(|(path, seen)| {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .map(|m| m != *seen)
                .unwrap_or(false)
        })
    }
}

impl JwtAuthority {
    /// Loads every issuer's keys.
    pub fn from_config(auth: &AuthConfig) -> Result<JwtAuthority, KeyError> {
        let mut issuers = HashMap::new();
        for cfg in auth.all_issuers() {
            issuers.insert(cfg.issuer.clone(), Issuer::load(&cfg)?);
        }
        Ok(JwtAuthority {
            issuers,
            leeway: auth.leeway_secs,
            max_lifetime: auth.max_lifetime_secs,
            refresh_every: Duration::from_secs(auth.jwks_refresh_secs),
        })
    }

    /// Re-reads JWKS files that changed on disk. Called periodically; a file that no
    /// longer parses leaves the old keys in force and is reported.
    pub fn refresh(&self) -> Vec<(String, Result<(), KeyError>)> {
        self.issuers
            .values()
            .filter(|i| i.changed_on_disk())
            .map(|i| (i.name.clone(), i.reload()))
            .collect()
    }

    /// The certificate thumbprint a token is bound to (`cnf.x5t#S256`), if any. Call
    /// only on a token [`verify`](Self::verify) accepted.
    pub fn bound_thumbprint(&self, token: &str) -> Option<String> {
        let payload = b64_json(segments(token).ok()?[1]).ok()?;
        payload
            .get("cnf")?
            .get("x5t#S256")?
            .as_str()
            .map(str::to_owned)
    }

    /// Verifies a token and returns who it speaks for.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let [head, payload, _] = segments(token)?;
        let raw_header = b64_json(head)?;
        if raw_header.contains_key("crit") {
            return Err(TokenError::Crit);
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        // The issuer picks the keys; the signature over it is checked below.
        let iss = b64_json(payload)?
            .get("iss")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or(TokenError::UnknownIssuer)?;
        let issuer = self.issuers.get(&iss).ok_or(TokenError::UnknownIssuer)?;
        let keys: Vec<Key> = if let Some(h) = &issuer.hmac {
            vec![h.clone()]
        } else if let Some(kid) = &header.kid {
            let mut set = issuer.current();
            if !set.by_kid.contains_key(kid) && set.anonymous.is_empty() {
                self.reread_for_unknown_kid(issuer);
                set = issuer.current();
            }
            match set.by_kid.get(kid) {
                Some(k) => vec![k.clone()],
                None if !set.anonymous.is_empty() => set.anonymous.clone(),
                None => return Err(TokenError::UnknownKid(kid.chars().take(64).collect())),
            }
        } else {
            let set = issuer.current();
            if set.anonymous.is_empty() {
                return Err(TokenError::UnknownKid(String::new()));
            }
            set.anonymous.clone()
        };
        let mut last = TokenError::Algorithm(format!("{:?}", header.alg));
        for key in keys.iter().filter(|k| k.algorithms.contains(&header.alg)) {
            match self.check(issuer, key, header.alg, token) {
                Ok(claims) => return self.principal(claims, header.kid.clone()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn reread_for_unknown_kid(&self, issuer: &Issuer) {
        let due = issuer
            .last_read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .elapsed()
            >= self.refresh_every;
        if due && let Err(e) = issuer.reload() {
            tracing::warn!(issuer = %issuer.name, error = %e, "JWKS re-read failed; old keys stay in force");
        }
    }

    fn check(
        &self,
        issuer: &Issuer,
        key: &Key,
        alg: Algorithm,
        token: &str,
    ) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(alg);
        validation.algorithms = key.algorithms.to_vec();
        validation.leeway = self.leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[&issuer.name]);
        validation.set_audience(&issuer.audiences);
        jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map(|d| d.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                    ErrorKind::InvalidAudience => TokenError::Audience,
                    ErrorKind::InvalidSignature => TokenError::Signature,
                    _ => TokenError::Invalid(e.to_string()),
                }
            })
    }

    fn principal(&self, claims: Claims, key_id: Option<String>) -> Result<Principal, TokenError> {
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
        let mut scopes: Vec<String> = claims
            .scope
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        scopes.extend(claims.scp.unwrap_or_default());
        let jti_hash = claims.jti.map(|j| {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, j.as_bytes());
            d.as_ref()[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        });
        Ok(Principal {
            method: Method::Jwt,
            subject,
            issuer: claims.iss,
            key_id,
            jti_hash,
            scopes,
            groups: claims.groups.unwrap_or_default(),
            certificate: None,
        })
    }

    /// One line per issuer for `warden check`.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .issuers
            .values()
            .map(|i| {
                let set = i.current();
                format!(
                    "issuer {:?}: audiences {:?}, {} kid key(s), {} PEM key(s){}",
                    i.name,
                    i.audiences,
                    set.by_kid.len(),
                    set.anonymous.len(),
                    if i.hmac.is_some() {
                        ", HS256 shared secret"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        out.sort();
        out
    }
}

/// For callers that only want to know whether a path is a JWKS.
pub fn is_jwks(path: &Path) -> bool {
    std::fs::read(path)
        .map(|b| b.trim_ascii_start().starts_with(b"{"))
        .unwrap_or(false)
}
