//! `warden token`: mints a JWT for trying a server out. The algorithm follows from the
//! key (EC P-256 → ES256, P-384 → ES384, RSA → RS256, Ed25519 → EdDSA).

use anyhow::Context;
use clap::Args;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// PEM private key to sign with (e.g. the `jwt.key` of `warden certs-dev`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// `sub`: who the token speaks for.
    #[arg(long, default_value = "dev-user")]
    pub sub: String,
    /// `iss`.
    #[arg(long, default_value = "warden-dev")]
    pub iss: String,
    /// `aud`.
    #[arg(long, default_value = "warden")]
    pub aud: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// `kid` header.
    #[arg(long)]
    pub kid: Option<String>,
    /// Signing algorithm; default follows the key.
    #[arg(long)]
    pub alg: Option<String>,
    /// Extra claims, `name=value` (value parsed as JSON when it is JSON).
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    pub claims: Vec<String>,
}

/// The algorithm a PEM private key signs with, from the OIDs in its DER.
fn key_family(pem: &str) -> Option<Algorithm> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()?;
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    const RSA: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    if has(P256) {
        Some(Algorithm::ES256)
    } else if has(P384) {
        Some(Algorithm::ES384)
    } else if has(ED25519) {
        Some(Algorithm::EdDSA)
    } else if has(RSA) || pem.contains("RSA PRIVATE KEY") {
        Some(Algorithm::RS256)
    } else {
        None
    }
}

fn key_for(pem: &[u8], alg: Option<&str>) -> anyhow::Result<(EncodingKey, Algorithm)> {
    let text = String::from_utf8_lossy(pem);
    let alg = match alg {
        Some(a) => a
            .parse::<Algorithm>()
            .map_err(|e| anyhow::anyhow!("--alg: {e}"))?,
        None => match key_family(&text) {
            Some(alg) => alg,
            None => anyhow::bail!("cannot tell the key's algorithm; pass --alg"),
        },
    };
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem)?,
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem)?,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => EncodingKey::from_secret(pem),
        _ => EncodingKey::from_rsa_pem(pem)?,
    };
    Ok((key, alg))
}

pub fn run(args: &TokenArgs) -> anyhow::Result<()> {
    let pem =
        std::fs::read(&args.key).with_context(|| format!("cannot read {}", args.key.display()))?;
    let (key, alg) = key_for(&pem, args.alg.as_deref())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut claims = serde_json::json!({
        "sub": args.sub, "iss": args.iss, "aud": args.aud,
        "iat": now, "nbf": now, "exp": now + args.ttl,
    });
    for c in &args.claims {
        let (k, v) = c.split_once('=').context("--claim takes NAME=VALUE")?;
        let v = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
        claims[k] = v;
    }
    let mut header = Header::new(alg);
    header.kid = args.kid.clone();
    println!("{}", jsonwebtoken::encode(&header, &claims, &key)?);
    Ok(())
}
