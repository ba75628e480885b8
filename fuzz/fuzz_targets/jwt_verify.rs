//! JWT verification with fixed keys: arbitrary strings as tokens (an ES256 issuer), and
//! arbitrary header and claims JSON correctly signed with an HS256 issuer's secret, so
//! the claim checks after the signature are reached too.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use warden_gateway::auth::jwt::JwtAuthority;
use warden_shared::config::{AuthConfig, IssuerConfig};

const EC_PUBLIC_KEY: &str = include_str!("../fixtures/jwt.pub.pem");
const HS_SECRET: &[u8] = b"warden-fuzz-hs256-secret-of-32-bytes-or-more";

fn authority() -> &'static JwtAuthority {
    static A: OnceLock<JwtAuthority> = OnceLock::new();
    A.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("warden-fuzz-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key = dir.join("jwt.pub.pem");
        let secret = dir.join("hs256.secret");
        std::fs::write(&key, EC_PUBLIC_KEY).expect("key");
        std::fs::write(&secret, HS_SECRET).expect("secret");
        let auth = AuthConfig {
            issuers: vec![
                IssuerConfig {
                    issuer: "fuzz-ec".into(),
                    audiences: vec!["warden".into()],
                    keys: vec![key],
                    hs256_secret: None,
                },
                IssuerConfig {
                    issuer: "fuzz-hs".into(),
                    audiences: vec!["warden".into()],
                    keys: vec![],
                    hs256_secret: Some(secret),
                },
            ],
            ..AuthConfig::default()
        };
        JwtAuthority::from_config(&auth).expect("fuzz keys load")
    })
}

fn hs256(header: &[u8], claims: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, HS_SECRET);
    let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", b64.encode(tag.as_ref()))
}

fuzz_target!(|data: &[u8]| {
    let a = authority();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        // header JSON, 0xff, claims JSON
        let (header, claims) = match rest.iter().position(|&b| b == 0xff) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], rest),
        };
        hs256(header, claims)
    };
    if let Ok((p, _)) = a.verify_bound(&token) {
        assert!(!p.subject.is_empty());
        assert!(p.issuer == "fuzz-ec" || p.issuer == "fuzz-hs");
        // A second look answers from the verified-token cache: it must agree.
        let (again, _) = a.verify_bound(&token).expect("a verified token verifies again");
        assert_eq!(again, p);
    }
});
