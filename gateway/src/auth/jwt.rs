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
//! Every key file (PEM public keys, JWKS files, the HS256 secret) is re-read when it
//! changes (checked by [`JwtAuthority::refresh`]) and on SIGHUP
//! ([`JwtAuthority::reload_all`]); a JWKS also on a `kid` no key has, at most once per
//! `jwks_refresh_secs`. A key removed from its file is refused from the reload on.
//!
//! A signature check costs tens of microseconds (ES256 verify is the largest CPU cost of
//! a small request), and clients send the same token on every call. So a token that
//! verified is remembered by its SHA-256 for at most [`CACHE_TTL`] and never past its
//! own `exp` (plus leeway): the same bytes give the same answer until then. Only
//! successes are remembered, so a forged token cannot occupy the cache; the cache is
//! bounded and is emptied whenever any issuer's keys are re-read, so a key removed from
//! a JWKS stops vouching for its tokens at once.

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

/// Longest a verified token is trusted without checking its signature again.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Most verified tokens remembered at once.
pub const CACHE_ENTRIES: usize = 4096;

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
    #[error("token confirmation (cnf) cannot be checked: {0}")]
    Confirmation(String),
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
            TokenError::Confirmation(_) => "token_cnf_unsupported",
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
    /// The HS256 shared secret, for an issuer configured with one.
    hmac: Option<Key>,
}

struct Issuer {
    name: String,
    audiences: Vec<String>,
    sources: Vec<PathBuf>,
    hs256_secret: Option<PathBuf>,
    keys: RwLock<Arc<KeySet>>,
    /// When the sources were last read, and each key file's modification time then.
    last_read: Mutex<(Instant, HashMap<PathBuf, SystemTime>)>,
}

/// Verifies tokens of every configured issuer.
pub struct JwtAuthority {
    issuers: HashMap<String, Issuer>,
    leeway: u64,
    max_lifetime: u64,
    refresh_every: Duration,
    verified: Mutex<HashMap<[u8; 32], Verified>>,
    /// `cnf` members accepted unchecked (`auth.ignore_cnf_methods`).
    ignore_cnf: Vec<String>,
}

/// What a token that verified said, remembered by the token's SHA-256.
#[derive(Clone)]
struct Verified {
    principal: Principal,
    /// `cnf.x5t#S256`, the certificate the token is bound to.
    thumbprint: Option<String>,
    /// The token's `exp` plus the leeway, in Unix seconds.
    good_until: u64,
    cached_at: Instant,
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

/// Reads every key source (PEM files, JWKS files) and the HS256 secret, with each
/// file's modification time, so that a change to any of them is noticed.
fn read_sources(
    sources: &[PathBuf],
    hs256_secret: Option<&Path>,
) -> Result<(KeySet, HashMap<PathBuf, SystemTime>), KeyError> {
    let mut set = KeySet::default();
    let mut mtimes = HashMap::new();
    if let Some(path) = hs256_secret {
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
        set.hmac = Some(Key {
            key: DecodingKey::from_secret(secret),
            algorithms: HMAC_ALGS,
        });
        if let Ok(m) = std::fs::metadata(path).and_then(|m| m.modified()) {
            mtimes.insert(path.to_path_buf(), m);
        }
    }
    for path in sources {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        if let Ok(m) = std::fs::metadata(path).and_then(|m| m.modified()) {
            mtimes.insert(path.clone(), m);
        }
        if bytes.trim_ascii_start().starts_with(b"{") {
            jwks_keys(&String::from_utf8_lossy(&bytes), &mut set).map_err(|message| {
                KeyError::Parse {
                    path: shown,
                    message,
                }
            })?;
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
        let (set, mtimes) = read_sources(&cfg.keys, cfg.hs256_secret.as_deref())?;
        Ok(Issuer {
            name: cfg.issuer.clone(),
            audiences: cfg
                .audiences
                .iter()
                .filter(|a| !a.is_empty())
                .cloned()
                .collect(),
            sources: cfg.keys.clone(),
            hs256_secret: cfg.hs256_secret.clone(),
            keys: RwLock::new(Arc::new(set)),
            last_read: Mutex::new((Instant::now(), mtimes)),
        })
    }

    fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Re-reads the sources; on failure the old keys stay in force.
    fn reload(&self) -> Result<(), KeyError> {
        let (set, mtimes) = read_sources(&self.sources, self.hs256_secret.as_deref())?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        *self.last_read.lock().unwrap_or_else(|e| e.into_inner()) = (Instant::now(), mtimes);
        Ok(())
    }

    /// Whether a key file has another modification time than when it was read (a
    /// file being replaced, briefly absent, is not a change until it is back).
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
            verified: Mutex::new(HashMap::new()),
            ignore_cnf: auth.ignore_cnf_methods.clone(),
        })
    }

    /// Forgets every remembered verification (keys changed).
    fn forget_verified(&self) {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Re-reads every issuer's keys (SIGHUP). An issuer whose files do not load keeps
    /// its old keys, and is reported.
    pub fn reload_all(&self) -> Vec<(String, Result<(), KeyError>)> {
        let mut out: Vec<_> = self
            .issuers
            .values()
            .map(|i| (i.name.clone(), i.reload()))
            .collect();
        self.forget_verified();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Re-reads the keys (PEM, JWKS, HS256 secret) of issuers whose files changed on
    /// disk. Called periodically; a file that no longer parses leaves the old keys in
    /// force and is reported.
    pub fn refresh(&self) -> Vec<(String, Result<(), KeyError>)> {
        let reloaded: Vec<_> = self
            .issuers
            .values()
            .filter(|i| i.changed_on_disk())
            .map(|i| (i.name.clone(), i.reload()))
            .collect();
        if !reloaded.is_empty() {
            self.forget_verified();
        }
        reloaded
    }

    /// Verifies a token and returns who it speaks for.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        self.verify_bound(token).map(|(p, _)| p)
    }

    /// Verifies a token and returns who it speaks for and the certificate thumbprint
    /// it is bound to (`cnf.x5t#S256`), if any.
    pub fn verify_bound(&self, token: &str) -> Result<(Principal, Option<String>), TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let digest: [u8; 32] =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
                .as_ref()
                .try_into()
                .expect("SHA-256 is 32 bytes");
        let now = now();
        if let Some(hit) = self.remembered(&digest, now) {
            return Ok((hit.principal, hit.thumbprint));
        }
        let principal = self.verify_signed(token)?;
        // The claims the signature covers: `cnf.x5t#S256` (the certificate the token is
        // bound to) and `exp` (how long it may be remembered).
        let claims = b64_json(segments(token)?[1])?;
        let thumbprint = match claims.get("cnf") {
            None => None,
            Some(cnf) => confirmation(cnf, &self.ignore_cnf)?,
        };
        let exp = claims.get("exp").and_then(|v| v.as_u64()).unwrap_or(0);
        self.remember(
            digest,
            Verified {
                principal: principal.clone(),
                thumbprint: thumbprint.clone(),
                good_until: exp.saturating_add(self.leeway),
                cached_at: Instant::now(),
            },
            now,
        );
        Ok((principal, thumbprint))
    }

    fn remembered(&self, digest: &[u8; 32], now: u64) -> Option<Verified> {
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        let hit = cache.get(digest)?;
        if now < hit.good_until && hit.cached_at.elapsed() < CACHE_TTL {
            return Some(hit.clone());
        }
        // Expired: the full check below gives the precise error.
        cache.remove(digest);
        None
    }

    fn remember(&self, digest: [u8; 32], entry: Verified, now: u64) {
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, v| now < v.good_until && v.cached_at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(digest, entry);
    }

    /// The full check: structure, issuer, key, signature, claims.
    fn verify_signed(&self, token: &str) -> Result<Principal, TokenError> {
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
        let current = issuer.current();
        let keys: Vec<Key> = if let Some(h) = &current.hmac {
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
        if due {
            self.forget_verified();
        }
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
            warden_shared::hex(&d.as_ref()[..16])
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
                    if set.hmac.is_some() {
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

/// The certificate thumbprint a token's `cnf` binds it to. A confirmation Warden
/// cannot check is refused, not ignored: a token its issuer bound to a key (`jkt`,
/// `jwk`, ...) must not work as a plain bearer token because the binding is unknown
/// here. Members listed in `ignore` are let through unchecked.
fn confirmation(cnf: &serde_json::Value, ignore: &[String]) -> Result<Option<String>, TokenError> {
    let obj = cnf
        .as_object()
        .ok_or_else(|| TokenError::Confirmation("cnf is not an object".into()))?;
    let mut thumbprint = None;
    for (method, value) in obj {
        if method == "x5t#S256" {
            match value.as_str() {
                Some(t) if !t.is_empty() => thumbprint = Some(t.to_owned()),
                _ => {
                    return Err(TokenError::Confirmation(
                        "x5t#S256 is not a single thumbprint string".into(),
                    ));
                }
            }
        } else if !ignore.iter().any(|m| m == method) {
            return Err(TokenError::Confirmation(format!(
                "unsupported method {:?}",
                crate::logsafe::log_safe_bounded(method, 64)
            )));
        }
    }
    Ok(thumbprint)
}

#[cfg(test)]
mod cnf_tests {
    use super::confirmation;
    use serde_json::json;

    #[test]
    fn confirmation_methods() {
        let none: Vec<String> = Vec::new();
        assert_eq!(
            confirmation(&json!({"x5t#S256": "abc"}), &none),
            Ok(Some("abc".into()))
        );
        assert_eq!(confirmation(&json!({}), &none), Ok(None));
        for refused in [
            json!({"jkt": "abc"}),
            json!({"x5t#S256": ["abc"]}),
            json!({"x5t#S256": ""}),
            json!({"x5t#S256": "abc", "jkt": "def"}),
            json!({"jwk": {"kty": "EC"}}),
            json!("x5t#S256"),
            json!(["abc"]),
            json!(null),
        ] {
            assert!(
                matches!(
                    confirmation(&refused, &none),
                    Err(super::TokenError::Confirmation(_))
                ),
                "{refused}"
            );
        }
        let ignore = vec!["jkt".to_string()];
        assert_eq!(confirmation(&json!({"jkt": "abc"}), &ignore), Ok(None));
        assert_eq!(
            confirmation(&json!({"jkt": "abc", "x5t#S256": "t"}), &ignore),
            Ok(Some("t".into()))
        );
        assert!(confirmation(&json!({"jwk": {}}), &ignore).is_err());
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
