//! Unit tests of `jwt.rs`: each asserts one rule of the module's doc (the key decides
//! the algorithm, the claims and their bounds, the key files' reloads, the cache of
//! verified tokens), so that breaking the rule fails a test (see scripts/mutants.sh).

use super::*;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use warden_shared::config::DEFAULT_JWT_MAX_LIFETIME_SECS;

const ISS: &str = "cache-test";

/// A fresh P-256 key: its signing key, its JWKS entry (with `kid`) and its PEM form.
struct TestKey {
    signing: EncodingKey,
    jwk: serde_json::Value,
    pem: String,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn key(kid: &str) -> TestKey {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref();
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
        "x": b64(&point[1..33]), "y": b64(&point[33..65])});
    // SubjectPublicKeyInfo of a P-256 key: the fixed algorithm prefix, then the point.
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend_from_slice(point);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(&spki)
    );
    TestKey {
        signing: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk,
        pem,
    }
}

/// The claims of a good token of [`ISS`] for `warden`, expiring at `exp`.
fn claims(exp: u64) -> serde_json::Value {
    json!({"iss": ISS, "aud": "warden", "sub": "alice", "iat": now(), "exp": exp})
}

fn sign(key: &EncodingKey, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn token(key: &EncodingKey, kid: &str, exp: u64) -> String {
    sign(key, Some(kid), &claims(exp))
}

fn write_jwks(path: &Path, keys: &[&serde_json::Value], stamp: u64) {
    std::fs::write(path, json!({"keys": keys}).to_string()).unwrap();
    stamp_file(path, stamp);
}

/// A distinct modification time, whatever the file system's granularity.
fn stamp_file(path: &Path, stamp: u64) {
    let when = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + stamp);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

fn issuer(name: &str, keys: &[&Path]) -> IssuerConfig {
    IssuerConfig {
        issuer: name.into(),
        audiences: vec!["warden".into()],
        keys: keys.iter().map(|k| k.to_path_buf()).collect(),
        hs256_secret: None,
    }
}

fn authority(jwks: &Path, leeway: u64) -> JwtAuthority {
    let auth = AuthConfig {
        leeway_secs: leeway,
        issuers: vec![issuer(ISS, &[jwks])],
        ..AuthConfig::default()
    };
    JwtAuthority::from_config(&auth).unwrap()
}

/// An authority over one JWKS that re-reads it on an unknown `kid` at most every
/// `refresh` seconds.
fn authority_refreshing(jwks: &Path, refresh: u64) -> JwtAuthority {
    let auth = AuthConfig {
        issuers: vec![issuer(ISS, &[jwks])],
        jwks_refresh_secs: refresh,
        ..AuthConfig::default()
    };
    JwtAuthority::from_config(&auth).unwrap()
}

fn folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-jwt-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An authority over a fresh JWKS holding one key with kid `a`, and that key.
fn one_key(name: &str, leeway: u64) -> (JwtAuthority, TestKey) {
    let dir = folder(name);
    let k = key("a");
    write_jwks(&dir.join("jwks.json"), &[&k.jwk], 1);
    (authority(&dir.join("jwks.json"), leeway), k)
}

fn cached(a: &JwtAuthority) -> usize {
    a.verified.lock().unwrap().len()
}

fn alice() -> Principal {
    Principal {
        method: Method::Jwt,
        subject: "alice".into(),
        issuer: ISS.into(),
        key_id: None,
        jti_hash: None,
        scopes: Vec::new(),
        groups: Vec::new(),
        certificate: None,
    }
}

/// A cache entry good until `good_until`, remembered `age` ago.
fn entry(good_until: u64, age: Duration) -> Verified {
    Verified {
        principal: alice(),
        thumbprint: None,
        good_until,
        cached_at: Instant::now().checked_sub(age).unwrap(),
    }
}

#[test]
fn a_remembered_token_gives_the_same_answer() {
    let (a, k) = one_key("same", 30);
    let t = token(&k.signing, "a", now() + 600);
    let first = a.verify(&t).unwrap();
    assert_eq!(cached(&a), 1);
    assert_eq!(a.verify(&t).unwrap(), first);
    assert_eq!(cached(&a), 1);
    // Another token is remembered beside it.
    a.verify(&token(&k.signing, "a", now() + 601)).unwrap();
    assert_eq!(cached(&a), 2);
}

#[test]
fn a_remembered_token_is_not_checked_again() {
    let (a, k) = one_key("remembered", 30);
    let t = token(&k.signing, "a", now() + 600);
    let first = a.verify(&t).unwrap();
    // The keys vanish from memory without the cache being told: only the cache can
    // still vouch for the token, and only for that one.
    *a.issuers[ISS].keys.write().unwrap() = Arc::new(KeySet::default());
    assert_eq!(a.verify(&t).unwrap(), first);
    assert_eq!(
        a.verify(&token(&k.signing, "a", now() + 601)),
        Err(TokenError::UnknownKid("a".into()))
    );
}

#[test]
fn failures_are_not_remembered() {
    let (a, k) = one_key("fail", 30);
    let good = token(&k.signing, "a", now() + 600);
    // The same claims under another key's signature.
    let forged = token(&key("a").signing, "a", now() + 600);
    assert_eq!(a.verify(&forged), Err(TokenError::Signature));
    assert_eq!(cached(&a), 0);
    // Nor does a good token vouch for a forged one with the same claims.
    a.verify(&good).unwrap();
    assert_eq!(a.verify(&forged), Err(TokenError::Signature));
}

#[test]
fn a_removed_key_stops_vouching_for_remembered_tokens() {
    let dir = folder("rotate");
    let jwks = dir.join("jwks.json");
    let (k1, k2) = (key("one"), key("two"));
    write_jwks(&jwks, &[&k1.jwk, &k2.jwk], 1);
    let a = authority(&jwks, 30);
    let t = token(&k1.signing, "one", now() + 600);
    a.verify(&t).unwrap();
    // Nothing changed: nothing is re-read, the cache stays.
    assert!(a.refresh().is_empty());
    assert_eq!(cached(&a), 1);
    write_jwks(&jwks, &[&k2.jwk], 2);
    let reloaded = a.refresh();
    assert_eq!(reloaded.len(), 1);
    assert_eq!(reloaded[0].0, ISS);
    assert!(reloaded[0].1.is_ok());
    assert_eq!(cached(&a), 0);
    assert_eq!(a.verify(&t), Err(TokenError::UnknownKid("one".into())));
}

#[test]
fn a_remembered_token_still_expires() {
    let (a, k) = one_key("expire", 0);
    let exp = now() + 1;
    let t = token(&k.signing, "a", exp);
    a.verify(&t).unwrap();
    while now() <= exp {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(a.verify(&t), Err(TokenError::Expired));
    assert_eq!(cached(&a), 0);
}

#[test]
fn a_cache_entry_is_good_before_its_end_and_for_less_than_the_ttl() {
    let (a, _) = one_key("entry", 30);
    a.remember([1; 32], entry(100, Duration::ZERO), 50);
    assert!(a.remembered(&[1; 32], 99).is_some());
    assert!(a.remembered(&[1; 32], 100).is_none());
    assert_eq!(cached(&a), 0, "an expired entry is dropped");
    a.remember(
        [2; 32],
        entry(u64::MAX, CACHE_TTL + Duration::from_secs(1)),
        50,
    );
    assert!(a.remembered(&[2; 32], 50).is_none());
    a.remember(
        [3; 32],
        entry(u64::MAX, CACHE_TTL - Duration::from_secs(5)),
        50,
    );
    assert!(a.remembered(&[3; 32], 50).is_some());
}

#[test]
fn a_full_cache_drops_what_is_no_longer_good() {
    let (a, _) = one_key("prune", 30);
    let now = 1_000;
    let digest = |i: usize| -> [u8; 32] {
        let mut d = [0; 32];
        d[..8].copy_from_slice(&(i as u64).to_le_bytes());
        d
    };
    let old = CACHE_TTL + Duration::from_secs(1);
    {
        let mut cache = a.verified.lock().unwrap();
        for i in 0..CACHE_ENTRIES {
            let e = match i % 4 {
                0 => entry(now + 1, Duration::ZERO),
                1 => entry(now, Duration::ZERO),
                2 => entry(now + 1, old),
                _ => entry(now - 1, old),
            };
            cache.insert(digest(i), e);
        }
    }
    a.remember([0xff; 32], entry(now + 1, Duration::ZERO), now);
    let cache = a.verified.lock().unwrap();
    let mut kept: Vec<usize> = (0..CACHE_ENTRIES)
        .filter(|i| cache.contains_key(&digest(*i)))
        .collect();
    kept.sort();
    let good: Vec<usize> = (0..CACHE_ENTRIES).filter(|i| i % 4 == 0).collect();
    assert_eq!(kept, good);
    assert!(cache.contains_key(&[0xff; 32]));
    drop(cache);

    // When everything is still good, the cache starts over.
    {
        let mut cache = a.verified.lock().unwrap();
        cache.clear();
        for i in 0..CACHE_ENTRIES {
            cache.insert(digest(i), entry(now + 1, Duration::ZERO));
        }
    }
    a.remember([0xff; 32], entry(now + 1, Duration::ZERO), now);
    assert_eq!(cached(&a), 1);
}

#[test]
fn the_cache_stays_bounded() {
    let (a, k) = one_key("bound", 30);
    for i in 0..(CACHE_ENTRIES as u64 + 10) {
        a.verify(&token(&k.signing, "a", now() + 600 + i)).unwrap();
        assert!(cached(&a) <= CACHE_ENTRIES);
    }
}

#[test]
fn the_token_length_limit() {
    let (a, k) = one_key("length", 30);
    // Real tokens are well under 8 KiB; one of about 12 KiB still verifies.
    let mut big = claims(now() + 600);
    big["groups"] = json!(vec!["g".repeat(60); 150]);
    let t = sign(&k.signing, Some("a"), &big);
    assert!(
        (10 * 1024..MAX_TOKEN_BYTES).contains(&t.len()),
        "{}",
        t.len()
    );
    assert_eq!(a.verify(&t).unwrap().groups.len(), 150);
    // The limit itself is not too long; one byte more is.
    let at_limit = "a".repeat(MAX_TOKEN_BYTES);
    assert!(matches!(a.verify(&at_limit), Err(TokenError::Malformed(_))));
    let over = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(a.verify(&over), Err(TokenError::TooLong));
}

#[test]
fn reasons_are_fixed_labels() {
    assert_eq!(TokenError::Expired.reason(), "token_expired");
    assert_eq!(TokenError::Signature.reason(), "token_signature");
    assert_eq!(
        TokenError::UnknownKid("a".into()).reason(),
        "token_unknown_kid"
    );
}

#[test]
fn the_claims_are_checked() {
    let (a, k) = one_key("claims", 30);
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims(now() + 600);
        f(&mut c);
        a.verify(&sign(&k.signing, Some("a"), &c))
    };
    assert_eq!(
        with(&|c| c["nbf"] = json!(now() + 600)),
        Err(TokenError::NotYetValid)
    );
    assert_eq!(
        with(&|c| c["aud"] = json!("other")),
        Err(TokenError::Audience)
    );
    assert_eq!(
        with(&|c| c["iss"] = json!("nobody")),
        Err(TokenError::UnknownIssuer)
    );
    assert_eq!(with(&|c| c["sub"] = json!("")), Err(TokenError::NoSubject));
    // `iat` may be ahead by the leeway, not more.
    assert!(with(&|c| c["iat"] = json!(now() + 30)).is_ok());
    assert_eq!(
        with(&|c| c["iat"] = json!(now() + 130)),
        Err(TokenError::IssuedInFuture)
    );
    // The lifetime may be the maximum, not more.
    let lifetime = |secs: u64| {
        with(&|c| {
            let iat = now();
            c["iat"] = json!(iat);
            c["exp"] = json!(iat + secs);
        })
    };
    assert!(lifetime(DEFAULT_JWT_MAX_LIFETIME_SECS).is_ok());
    assert_eq!(
        lifetime(DEFAULT_JWT_MAX_LIFETIME_SECS + 1),
        Err(TokenError::LifetimeTooLong)
    );
    // What the principal carries.
    let p = with(&|c| {
        c["scope"] = json!("read write");
        c["scp"] = json!(["admin"]);
        c["groups"] = json!(["ops"]);
        c["jti"] = json!("id-1");
    })
    .unwrap();
    assert_eq!(p.subject, "alice");
    assert_eq!(p.issuer, ISS);
    assert_eq!(p.key_id.as_deref(), Some("a"));
    assert_eq!(p.scopes, ["read", "write", "admin"]);
    assert_eq!(p.groups, ["ops"]);
    assert_eq!(p.jti_hash.as_ref().map(String::len), Some(32));
}

#[test]
fn the_header_cannot_choose() {
    let (a, k) = one_key("header", 30);
    // A `crit` header is refused before anything else is looked at.
    let t = token(&k.signing, "a", now() + 600);
    let crit = b64(br#"{"alg":"ES256","kid":"a","crit":["exp"]}"#);
    let rest = t.split_once('.').unwrap().1;
    assert_eq!(a.verify(&format!("{crit}.{rest}")), Err(TokenError::Crit));
    // HS256 with whatever secret is not an algorithm of an EC key.
    let hs = jsonwebtoken::encode(
        &Header {
            kid: Some("a".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims(now() + 600),
        &EncodingKey::from_secret(&[7; 32]),
    )
    .unwrap();
    assert_eq!(a.verify(&hs), Err(TokenError::Algorithm("HS256".into())));
    // A JWKS key needs its kid named.
    assert_eq!(
        a.verify(&sign(&k.signing, None, &claims(now() + 600))),
        Err(TokenError::UnknownKid(String::new()))
    );
}

#[test]
fn pem_keys_verify_with_or_without_kid() {
    let dir = folder("pem");
    let k = key("unused");
    std::fs::write(dir.join("key.pem"), &k.pem).unwrap();
    let a = authority(&dir.join("key.pem"), 30);
    let c = claims(now() + 600);
    assert!(a.verify(&sign(&k.signing, None, &c)).is_ok());
    let p = a.verify(&sign(&k.signing, Some("some-kid"), &c)).unwrap();
    assert_eq!(p.key_id.as_deref(), Some("some-kid"));
    assert_eq!(
        a.describe(),
        [format!(
            "issuer \"{ISS}\": audiences [\"warden\"], 0 kid key(s), 1 PEM key(s)"
        )]
    );
}

#[test]
fn an_hs256_secret_is_at_least_32_bytes() {
    let dir = folder("hs256");
    let secret = dir.join("secret");
    let auth = AuthConfig {
        issuers: vec![IssuerConfig {
            hs256_secret: Some(secret.clone()),
            ..issuer(ISS, &[])
        }],
        ..AuthConfig::default()
    };
    std::fs::write(&secret, format!("{}\n", "s".repeat(31))).unwrap();
    assert!(matches!(
        JwtAuthority::from_config(&auth),
        Err(KeyError::Parse { .. })
    ));
    std::fs::write(&secret, format!("{}\n", "s".repeat(32))).unwrap();
    let a = JwtAuthority::from_config(&auth).unwrap();
    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(now() + 600),
        &EncodingKey::from_secret("s".repeat(32).as_bytes()),
    )
    .unwrap();
    assert_eq!(a.verify(&t).unwrap().subject, "alice");
    assert_eq!(
        a.describe(),
        [format!(
            "issuer \"{ISS}\": audiences [\"warden\"], 0 kid key(s), 0 PEM key(s), HS256 shared secret"
        )]
    );
}

#[test]
fn empty_audiences_are_ignored() {
    let dir = folder("aud");
    let k = key("a");
    write_jwks(&dir.join("jwks.json"), &[&k.jwk], 1);
    let auth = AuthConfig {
        issuers: vec![IssuerConfig {
            audiences: vec![String::new(), "warden".into()],
            ..issuer(ISS, &[&dir.join("jwks.json")])
        }],
        ..AuthConfig::default()
    };
    let a = JwtAuthority::from_config(&auth).unwrap();
    assert!(a.verify(&token(&k.signing, "a", now() + 600)).is_ok());
    assert_eq!(
        a.describe(),
        [format!(
            "issuer \"{ISS}\": audiences [\"warden\"], 1 kid key(s), 0 PEM key(s)"
        )]
    );
}

#[test]
fn an_unknown_kid_rereads_the_jwks_at_most_every_refresh_interval() {
    let dir = folder("kid");
    let jwks = dir.join("jwks.json");
    let (k1, k2) = (key("one"), key("two"));
    write_jwks(&jwks, &[&k1.jwk], 1);
    let eager = authority_refreshing(&jwks, 0);
    let lazy = authority_refreshing(&jwks, 3600);
    let t1 = token(&k1.signing, "one", now() + 600);
    eager.verify(&t1).unwrap();
    // A known kid re-reads nothing, so the cache is kept.
    eager
        .verify(&token(&k1.signing, "one", now() + 601))
        .unwrap();
    assert_eq!(cached(&eager), 2);
    write_jwks(&jwks, &[&k1.jwk, &k2.jwk], 2);
    let t2 = token(&k2.signing, "two", now() + 600);
    assert_eq!(eager.verify(&t2).unwrap().key_id.as_deref(), Some("two"));
    assert_eq!(lazy.verify(&t2), Err(TokenError::UnknownKid("two".into())));
}

#[test]
fn sighup_rereads_every_issuer_and_a_broken_file_keeps_the_old_keys() {
    let dir = folder("sighup");
    let (ka, kb) = (key("a"), key("b"));
    let (ja, jb) = (dir.join("a.json"), dir.join("b.json"));
    write_jwks(&ja, &[&ka.jwk], 1);
    write_jwks(&jb, &[&kb.jwk], 1);
    let auth = AuthConfig {
        issuers: vec![issuer("b-issuer", &[&jb]), issuer("a-issuer", &[&ja])],
        ..AuthConfig::default()
    };
    let a = JwtAuthority::from_config(&auth).unwrap();
    let mut c = claims(now() + 600);
    c["iss"] = json!("b-issuer");
    let tb = sign(&kb.signing, Some("b"), &c);
    a.verify(&tb).unwrap();
    std::fs::write(&jb, "{not json").unwrap();
    let out = a.reload_all();
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a-issuer", "b-issuer"]);
    assert!(out[0].1.is_ok());
    assert!(matches!(out[1].1, Err(KeyError::Parse { .. })));
    assert_eq!(cached(&a), 0);
    assert!(a.verify(&tb).is_ok(), "the old keys stay in force");
}
