//! Authentication and authorization against the real server: an attack table of
//! hostile and malformed credentials, mTLS in every mode, certificate-bound tokens,
//! policy rules, and JWKS rotation.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use base64::Engine;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::path::{Path, PathBuf};
use std::process::Command;
use warden_tests::*;

const RSA_ISS: &str = "https://rsa.test";
const JWKS_ISS: &str = "https://jwks.test";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn openssl(args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .status()
        .expect("openssl runs")
        .success();
    assert!(ok, "openssl {args:?}");
}

/// Keys the tests sign with, and the files the server verifies with.
struct Keys {
    dir: PathBuf,
    rsa_pem: Vec<u8>,
    rsa_pub: PathBuf,
    jwks: PathBuf,
    jwks_key: Vec<u8>,
}

/// An EC P-256 key: (PKCS#8 DER, JWK with `kid`).
fn ec_jwk(kid: &str) -> (Vec<u8>, serde_json::Value) {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let public = pair.public_key().as_ref().to_vec(); // 0x04 || x || y
    let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
        "x": b64(&public[1..33]), "y": b64(&public[33..65])});
    (pkcs8.as_ref().to_vec(), jwk)
}

fn make_keys(dir: &Path) -> Keys {
    let rsa_key = dir.join("rsa.key");
    let rsa_pub = dir.join("rsa.pub.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        rsa_key.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        rsa_key.to_str().unwrap(),
        "-pubout",
        "-out",
        rsa_pub.to_str().unwrap(),
    ]);
    let (jwks_key, jwk) = ec_jwk("k1");
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({"keys": [jwk]}).to_string()).unwrap();
    Keys {
        dir: dir.to_owned(),
        rsa_pem: std::fs::read(&rsa_key).unwrap(),
        rsa_pub,
        jwks,
        jwks_key,
    }
}

fn thumbprint(id: &ClientIdentity) -> String {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(id.cert_pem.as_bytes()).unwrap();
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der).as_ref())
}

const POLICY: &str = r#"
[[rule]]
name = "alice uses addn"
subjects = ["alice"]
issuers = ["https://issuer.test", "https://rsa.test", "https://jwks.test"]
models = ["addn"]
operations = ["infer", "metadata", "ready"]

[[rule]]
name = "ml group reads metadata"
groups = ["ml"]
issuers = ["https://issuer.test"]
models = ["addn"]
operations = ["metadata"]

[[rule]]
name = "scope infer v1 only"
scopes = ["addn:infer"]
issuers = ["https://issuer.test"]
models = ["addn"]
versions = [1]
operations = ["infer"]

[[rule]]
name = "the RSA issuer's admin checks nsfw"
subjects = ["root-admin"]
issuers = ["https://rsa.test"]
models = ["nsfw"]
operations = ["ready"]

[[rule]]
name = "service certificates check readiness"
certificates = ["spiffe://warden.test/svc/*"]
models = ["*"]
operations = ["ready"]
"#;

fn config_file(dir: &Path, keys: &Keys, client_ca: &Path, extra_tls: &str) -> String {
    let toml = format!(
        r#"
[tls]
client_ca = "{ca}"
{extra_tls}

[[auth.issuers]]
issuer = "{RSA_ISS}"
audiences = ["{AUDIENCE}"]
keys = ["{rsa}"]

[[auth.issuers]]
issuer = "{JWKS_ISS}"
audiences = ["{AUDIENCE}", "other-aud"]
keys = ["{jwks}"]
"#,
        ca = client_ca.display(),
        rsa = keys.rsa_pub.display(),
        jwks = keys.jwks.display(),
    );
    let path = dir.join("warden.toml");
    std::fs::write(&path, toml).unwrap();
    std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
    path.display().to_string()
}

/// `addn` with both versions, and `nsfw` (which the policy gives nobody).
fn addn_models() -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("warden-auth-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = serde_json::json!({"model_config_list": [
        {"config": {"name": "addn", "base_path": model_dir("addn"), "model_version_policy": {"all": {}}}},
        {"config": {"name": "nsfw", "base_path": model_dir("nsfw")}},
    ]});
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    vec!["--config-path".into(), path.display().to_string()]
}

fn raw_token(header: &serde_json::Value, claims: &serde_json::Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(sig)
    )
}

#[tokio::test]
async fn attack_table_of_hostile_credentials() {
    let tmp = TempDir::new("auth");
    let keys = make_keys(tmp.path());
    let pki = client_pki(tmp.path(), "good");
    let cfg = config_file(
        tmp.path(),
        &keys,
        &pki.ca_pem,
        "rest_client_cert = \"optional\"",
    );
    let policy = tmp.path().join("policy.toml");
    let mut server = Server::start(
        &addn_models(),
        &["--config", &cfg, "--authz-policy", policy.to_str().unwrap()],
    );
    server.wait_ready().await;

    // A listener that would see any attempt to fetch a key from a URL in a token.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let trap_url = format!(
        "https://127.0.0.1:{}/keys",
        trap.local_addr().unwrap().port()
    );

    let es_key = std::fs::read(server.certs.join("jwt.key")).unwrap();
    let es = |h: Header, c: &serde_json::Value| {
        jsonwebtoken::encode(&h, c, &EncodingKey::from_ec_pem(&es_key).unwrap()).unwrap()
    };
    let rsa = |h: Header, c: &serde_json::Value| {
        jsonwebtoken::encode(&h, c, &EncodingKey::from_rsa_pem(&keys.rsa_pem).unwrap()).unwrap()
    };
    let jwks_signed = |kid: &str, c: &serde_json::Value| {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, c, &EncodingKey::from_ec_der(&keys.jwks_key)).unwrap()
    };
    let now = now();
    let good = claims("alice", 600);
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims("alice", 600);
        f(&mut c);
        c
    };
    let rsa_claims = with(&|c| c["iss"] = RSA_ISS.into());
    let jwks_claims = with(&|c| c["iss"] = JWKS_ISS.into());
    let es256 = || Header::new(Algorithm::ES256);

    // An attacker's own EC key, for tokens that carry or point at their own key.
    let attacker = TempDir::new("attacker");
    let attacker_certs = make_certs(attacker.path());
    let attacker_key = std::fs::read(attacker_certs.join("jwt.key")).unwrap();
    let attacker_sign = |h: Header, c: &serde_json::Value| {
        jsonwebtoken::encode(&h, c, &EncodingKey::from_ec_pem(&attacker_key).unwrap()).unwrap()
    };
    let (_, attacker_jwk) = ec_jwk("attacker");

    let hmac = |secret: &[u8], c: &serde_json::Value| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            c,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let good_es = es(es256(), &good);
    let parts: Vec<&str> = good_es.split('.').collect();

    let bound_cert = client_cert(&pki, "spiffe://warden.test/user/alice", false);
    let bound = with(&|c| c["cnf"] = serde_json::json!({"x5t#S256": thumbprint(&bound_cert)}));

    let none = |alg: &str| raw_token(&serde_json::json!({"alg": alg, "typ": "JWT"}), &good, b"");
    let mut jku = es256();
    jku.jku = Some(trap_url.clone());
    let mut x5u = es256();
    x5u.x5u = Some(trap_url.clone());
    let mut jwk_header = es256();
    jwk_header.jwk = serde_json::from_value(attacker_jwk.clone()).ok();
    let mut path_kid = Header::new(Algorithm::ES256);
    path_kid.kid = Some("../../../../etc/passwd".into());

    // (what, Authorization header value or None, path, expected status)
    let infer_path = "/v2/models/addn/versions/1/ready";
    let cases: Vec<(&str, Option<String>, &str, u16)> = vec![
        ("no credentials", None, infer_path, 401),
        (
            "basic scheme",
            Some("Basic YWxpY2U6cHc=".into()),
            infer_path,
            401,
        ),
        ("empty bearer", Some("Bearer ".into()), infer_path, 401),
        ("alg none", Some(none("none")), infer_path, 401),
        ("alg None", Some(none("None")), infer_path, 401),
        ("alg NONE", Some(none("NONE")), infer_path, 401),
        ("alg nOnE", Some(none("nOnE")), infer_path, 401),
        (
            "HS256 with the RSA public key as secret",
            Some(hmac(&std::fs::read(&keys.rsa_pub).unwrap(), &rsa_claims)),
            infer_path,
            401,
        ),
        (
            "HS256 with the EC public key as secret",
            Some(hmac(
                &std::fs::read(server.certs.join("jwt.pub.pem")).unwrap(),
                &good,
            )),
            infer_path,
            401,
        ),
        (
            "unknown kid",
            Some(jwks_signed("k9", &jwks_claims)),
            infer_path,
            401,
        ),
        (
            "kid with a path",
            Some(attacker_sign(path_kid.clone(), &jwks_claims)),
            infer_path,
            401,
        ),
        (
            "kid with SQL",
            Some({
                let mut h = es256();
                h.kid = Some("' OR '1'='1' --".into());
                attacker_sign(h, &jwks_claims)
            }),
            infer_path,
            401,
        ),
        (
            "jku to an attacker's keys",
            Some(attacker_sign(jku, &good)),
            infer_path,
            401,
        ),
        (
            "x5u to an attacker's certificate",
            Some(attacker_sign(x5u, &good)),
            infer_path,
            401,
        ),
        (
            "embedded jwk of the attacker",
            Some(attacker_sign(jwk_header, &good)),
            infer_path,
            401,
        ),
        (
            "signed by another key",
            Some(attacker_sign(es256(), &good)),
            infer_path,
            401,
        ),
        (
            "expired",
            Some(es(
                es256(),
                &with(&|c| {
                    c["iat"] = (now - 7200).into();
                    c["exp"] = (now - 3600).into();
                }),
            )),
            infer_path,
            401,
        ),
        (
            "nbf in the future",
            Some(es(es256(), &with(&|c| c["nbf"] = (now + 3600).into()))),
            infer_path,
            401,
        ),
        (
            "iat in the future beyond leeway",
            Some(es(
                es256(),
                &with(&|c| {
                    c["iat"] = (now + 600).into();
                    c["exp"] = (now + 1200).into();
                }),
            )),
            infer_path,
            401,
        ),
        (
            "lifetime over the maximum",
            Some(es(es256(), &with(&|c| c["exp"] = (now + 3 * 86400).into()))),
            infer_path,
            401,
        ),
        (
            "wrong issuer",
            Some(es(
                es256(),
                &with(&|c| c["iss"] = "https://evil.test".into()),
            )),
            infer_path,
            401,
        ),
        (
            "issuer of another key",
            Some(es(es256(), &rsa_claims)),
            infer_path,
            401,
        ),
        (
            "wrong audience",
            Some(es(es256(), &with(&|c| c["aud"] = "someone-else".into()))),
            infer_path,
            401,
        ),
        (
            "audience list without ours",
            Some(es(
                es256(),
                &with(&|c| c["aud"] = serde_json::json!(["a", "b"])),
            )),
            infer_path,
            401,
        ),
        (
            "missing exp",
            Some(es(
                es256(),
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            )),
            infer_path,
            401,
        ),
        (
            "exp as a string",
            Some(es(
                es256(),
                &with(&|c| c["exp"] = (now + 600).to_string().into()),
            )),
            infer_path,
            401,
        ),
        (
            "empty subject",
            Some(es(es256(), &with(&|c| c["sub"] = "".into()))),
            infer_path,
            401,
        ),
        (
            "bad base64",
            Some(format!("{}.!!!not-base64!!!.{}", parts[0], parts[2])),
            infer_path,
            401,
        ),
        (
            "bad JSON",
            Some(format!("{}.{}.{}", parts[0], b64(b"{\"sub\":"), parts[2])),
            infer_path,
            401,
        ),
        (
            "trailing garbage",
            Some(format!("{good_es}.extra")),
            infer_path,
            401,
        ),
        // Over the 60 KiB header cap: refused before any token parsing.
        (
            "a 100 KB token",
            Some(format!("{good_es}{}", "A".repeat(100 * 1024))),
            infer_path,
            431,
        ),
        (
            "a 40 KB token (under the header cap)",
            Some(format!("{good_es}{}", "A".repeat(40 * 1024))),
            infer_path,
            401,
        ),
        (
            "truncated signature",
            Some(good_es[..good_es.len() - 10].to_string()),
            infer_path,
            401,
        ),
        (
            "signature of another token",
            Some(format!(
                "{}.{}.{}",
                parts[0],
                b64(with(&|c| c["sub"] = "root".into()).to_string().as_bytes()),
                parts[2]
            )),
            infer_path,
            401,
        ),
        (
            "crit header",
            Some({
                let h = serde_json::json!({"alg": "ES256", "typ": "JWT", "crit": ["exp"]});
                let t = es(es256(), &good);
                let p: Vec<&str> = t.split('.').collect();
                format!("{}.{}.{}", b64(h.to_string().as_bytes()), p[1], p[2])
            }),
            infer_path,
            401,
        ),
        (
            "RS256 token relabelled PS256",
            Some({
                let t = rsa(Header::new(Algorithm::RS256), &rsa_claims);
                let p: Vec<&str> = t.split('.').collect();
                format!(
                    "{}.{}.{}",
                    b64(br#"{"alg":"PS256","typ":"JWT"}"#),
                    p[1],
                    p[2]
                )
            }),
            infer_path,
            401,
        ),
        (
            "certificate-bound token without the certificate",
            Some(es(es256(), &bound)),
            infer_path,
            401,
        ),
        (
            "valid token, forbidden model",
            Some(es(es256(), &good)),
            "/v2/models/nsfw/ready",
            403,
        ),
        (
            "valid token, forbidden operation",
            Some(es(
                es256(),
                &with(&|c| {
                    c["sub"] = "bob".into();
                    c["groups"] = serde_json::json!(["ml"]);
                }),
            )),
            infer_path,
            403,
        ),
        (
            "scope rule, version not granted",
            Some(es(
                es256(),
                &with(&|c| {
                    c["sub"] = "carol".into();
                    c["scope"] = "addn:infer".into();
                }),
            )),
            "/v2/models/addn/versions/2/ready",
            403,
        ),
        // Claims are bound to their issuer: another configured issuer that mints the
        // same group or scope gets nothing from rules bound to the first.
        (
            "another issuer minting the ml group",
            Some(rsa(
                Header::new(Algorithm::RS256),
                &with(&|c| {
                    c["iss"] = RSA_ISS.into();
                    c["sub"] = "bob".into();
                    c["groups"] = serde_json::json!(["ml"]);
                }),
            )),
            "/v2/models/addn/versions/1",
            403,
        ),
        (
            "another issuer minting the infer scope",
            Some(jwks_signed(
                "k1",
                &with(&|c| {
                    c["iss"] = JWKS_ISS.into();
                    c["sub"] = "carol".into();
                    c["scope"] = "addn:infer".into();
                }),
            )),
            "/v2/models/addn/versions/1/ready",
            403,
        ),
        (
            "another issuer minting the RSA issuer's admin subject",
            Some(jwks_signed(
                "k1",
                &with(&|c| {
                    c["iss"] = JWKS_ISS.into();
                    c["sub"] = "root-admin".into();
                }),
            )),
            "/v2/models/nsfw/ready",
            403,
        ),
        (
            "the default issuer minting the RSA issuer's admin subject",
            Some(es(es256(), &with(&|c| c["sub"] = "root-admin".into()))),
            "/v2/models/nsfw/ready",
            403,
        ),
        // Confirmation methods Warden cannot check are refused, not ignored.
        (
            "cnf jkt (DPoP-bound) used as a bearer token",
            Some(es(
                es256(),
                &with(&|c| {
                    c["cnf"] =
                        serde_json::json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})
                }),
            )),
            infer_path,
            401,
        ),
        (
            "cnf x5t#S256 as an array",
            Some(es(
                es256(),
                &with(&|c| c["cnf"] = serde_json::json!({"x5t#S256": [thumbprint(&bound_cert)]})),
            )),
            infer_path,
            401,
        ),
        (
            "cnf not an object",
            Some(es(es256(), &with(&|c| c["cnf"] = "x5t#S256".into()))),
            infer_path,
            401,
        ),
        (
            "cnf x5t#S256 plus an unknown method",
            Some(es(
                es256(),
                &with(&|c| c["cnf"] = serde_json::json!({"x5t#S256": "abc", "jwk": {"kty": "EC"}})),
            )),
            infer_path,
            401,
        ),
    ];
    assert!(cases.len() >= 30);
    for (what, auth, path, want) in &cases {
        let mut headers = Vec::new();
        if let Some(a) = auth {
            headers.push((
                "authorization",
                if a.starts_with("Basic") || a.starts_with("Bearer") {
                    a.clone()
                } else {
                    format!("Bearer {a}")
                },
            ));
        }
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = server
            .request("GET", path, &h, Bytes::new())
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            r.status,
            *want,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        if *want == 401 {
            let challenge = r.headers["www-authenticate"].to_str().unwrap();
            assert!(
                challenge.starts_with("Bearer realm=\"warden\""),
                "{what}: {challenge}"
            );
            assert_eq!(
                r.json()["error"],
                "missing or invalid credentials",
                "{what}: the client is not told why"
            );
        }
    }
    assert!(trap.accept().is_err(), "a key URL from a token was fetched");

    // Positive controls: each issuer's good token, an audience list with ours, the
    // bound token with its certificate, a scope rule on its version.
    let ok_cases: Vec<(&str, String, Option<&ClientIdentity>, &str)> = vec![
        ("ES256 PEM key", good_es.clone(), None, infer_path),
        (
            "RS256 key",
            rsa(Header::new(Algorithm::RS256), &rsa_claims),
            None,
            infer_path,
        ),
        (
            "PS384 key",
            rsa(Header::new(Algorithm::PS384), &rsa_claims),
            None,
            infer_path,
        ),
        (
            "JWKS kid",
            jwks_signed("k1", &jwks_claims),
            None,
            infer_path,
        ),
        (
            "JWKS second audience",
            jwks_signed(
                "k1",
                &with(&|c| {
                    c["iss"] = JWKS_ISS.into();
                    c["aud"] = "other-aud".into();
                }),
            ),
            None,
            infer_path,
        ),
        (
            "audience list with ours",
            es(
                es256(),
                &with(&|c| c["aud"] = serde_json::json!(["x", AUDIENCE])),
            ),
            None,
            infer_path,
        ),
        (
            "bound token with its certificate",
            es(es256(), &bound),
            Some(&bound_cert),
            infer_path,
        ),
        (
            "scope rule on its version",
            es(
                es256(),
                &with(&|c| {
                    c["sub"] = "carol".into();
                    c["scope"] = "read addn:infer".into();
                }),
            ),
            None,
            "/v2/models/addn/versions/1/infer",
        ),
        (
            "the RSA issuer's admin on its own rule",
            rsa(
                Header::new(Algorithm::RS256),
                &with(&|c| {
                    c["iss"] = RSA_ISS.into();
                    c["sub"] = "root-admin".into();
                }),
            ),
            None,
            "/v2/models/nsfw/ready",
        ),
        (
            "group rule",
            es(
                es256(),
                &with(&|c| {
                    c["sub"] = "bob".into();
                    c["groups"] = serde_json::json!(["ml"]);
                }),
            ),
            None,
            "/v2/models/addn/versions/1",
        ),
    ];
    for (what, token, id, path) in ok_cases {
        let auth = format!("Bearer {token}");
        let (method, body) = if path.ends_with("/infer") {
            ("POST", Bytes::from_static(br#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0,0,0,0]}]}"#))
        } else {
            ("GET", Bytes::new())
        };
        let r = https_request_as(
            server.rest_port,
            &server.certs.join("ca.pem"),
            id,
            method,
            path,
            &[("authorization", &auth)],
            body,
        )
        .await
        .unwrap();
        assert_eq!(
            r.status,
            200,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // The bound token with a different certificate from the same CA is still refused.
    let other = client_cert(&pki, "spiffe://warden.test/user/mallory", false);
    let auth = format!("Bearer {}", es(es256(), &bound));
    let r = https_request_as(
        server.rest_port,
        &server.certs.join("ca.pem"),
        Some(&other),
        "GET",
        infer_path,
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401, "bound token with another certificate");
    // No token ever reaches the logs.
    let log = server.log_text();
    assert!(
        !log.contains(&good_es[good_es.len() - 40..]),
        "a token signature appears in the log"
    );
    let _ = &keys.dir;
}

#[tokio::test]
async fn mtls_required_refuses_bad_certificates_in_the_handshake() {
    let tmp = TempDir::new("mtls");
    let keys = make_keys(tmp.path());
    let pki = client_pki(tmp.path(), "good");
    let other_pki = client_pki(tmp.path(), "other");
    let cfg = config_file(
        tmp.path(),
        &keys,
        &pki.ca_pem,
        "rest_client_cert = \"required\"",
    );
    let policy = tmp.path().join("policy.toml");
    let mut server = Server::start(
        &addn_models(),
        &[
            "--config",
            &cfg,
            "--authz-policy",
            policy.to_str().unwrap(),
            "--rest-auth",
            "mtls",
        ],
    );
    // Readiness needs a client certificate here too: wait with one.
    let svc = client_cert(&pki, "spiffe://warden.test/svc/probe", false);
    let ca = server.certs.join("ca.pem");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(r) = https_request_as(
            server.rest_port,
            &ca,
            Some(&svc),
            "GET",
            "/v2/health/ready",
            &[],
            Bytes::new(),
        )
        .await
            && r.status == 200
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready:\n{}",
            server.log_text()
        );
        if let Ok(Some(s)) = server.child.try_wait() {
            panic!("exited {s}:\n{}", server.log_text());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let path = "/v2/models/addn/ready";
    // Refused in the handshake: no certificate, another CA, expired.
    for (what, id) in [
        ("no certificate", None),
        (
            "another CA",
            Some(client_cert(&other_pki, "spiffe://warden.test/svc/a", false)),
        ),
        (
            "expired",
            Some(client_cert(&pki, "spiffe://warden.test/svc/a", true)),
        ),
    ] {
        let r = https_request_as(
            server.rest_port,
            &ca,
            id.as_ref(),
            "GET",
            path,
            &[],
            Bytes::new(),
        )
        .await;
        assert!(
            r.is_err(),
            "{what}: expected a failed handshake, got {:?}",
            r.map(|r| r.status)
        );
    }
    // A good certificate maps to its URI SAN: allowed by the certificate rule...
    let r = https_request_as(
        server.rest_port,
        &ca,
        Some(&svc),
        "GET",
        path,
        &[],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // ...for the operation it grants only.
    let r = https_request_as(
        server.rest_port,
        &ca,
        Some(&svc),
        "GET",
        "/v2/models/addn",
        &[],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403);
    // A valid certificate whose identity no rule names is denied.
    let stranger = client_cert(&pki, "spiffe://warden.test/user/x", false);
    let r = https_request_as(
        server.rest_port,
        &ca,
        Some(&stranger),
        "GET",
        path,
        &[],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn jwt_and_mtls_needs_both() {
    let tmp = TempDir::new("both");
    let keys = make_keys(tmp.path());
    let pki = client_pki(tmp.path(), "good");
    let cfg = config_file(
        tmp.path(),
        &keys,
        &pki.ca_pem,
        "rest_client_cert = \"optional\"",
    );
    let policy = tmp.path().join("policy.toml");
    let mut server = Server::start(
        &addn_models(),
        &[
            "--config",
            &cfg,
            "--authz-policy",
            policy.to_str().unwrap(),
            "--rest-auth",
            "jwt-and-mtls",
        ],
    );
    server.wait_ready().await;
    let ca = server.certs.join("ca.pem");
    let cert = client_cert(&pki, "spiffe://warden.test/user/alice", false);
    let auth = format!("Bearer {}", server.good_token());
    let path = "/v2/models/addn/ready";
    let token_only = https_request_as(
        server.rest_port,
        &ca,
        None,
        "GET",
        path,
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(token_only.status, 401);
    let cert_only = https_request_as(
        server.rest_port,
        &ca,
        Some(&cert),
        "GET",
        path,
        &[],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(cert_only.status, 401);
    let both = https_request_as(
        server.rest_port,
        &ca,
        Some(&cert),
        "GET",
        path,
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(both.status, 200);
}

#[tokio::test]
async fn jwks_rotation_is_picked_up_without_a_restart() {
    let tmp = TempDir::new("jwks");
    let keys = make_keys(tmp.path());
    let pki = client_pki(tmp.path(), "good");
    let cfg = config_file(tmp.path(), &keys, &pki.ca_pem, "");
    let policy = tmp.path().join("policy.toml");
    let mut server = Server::start(
        &addn_models(),
        &["--config", &cfg, "--authz-policy", policy.to_str().unwrap()],
    );
    server.wait_ready().await;
    let claims = {
        let mut c = claims("alice", 600);
        c["iss"] = JWKS_ISS.into();
        c
    };
    let sign = |der: &[u8], kid: &str| {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ec_der(der)).unwrap()
    };
    let call = |token: String| {
        let auth = format!("Bearer {token}");
        let server = &server;
        async move {
            server
                .request(
                    "GET",
                    "/v2/models/addn/ready",
                    &[("authorization", &auth)],
                    Bytes::new(),
                )
                .await
                .unwrap()
                .status
        }
    };
    assert_eq!(call(sign(&keys.jwks_key, "k1")).await, 200);
    let (new_key, new_jwk) = ec_jwk("k2");
    assert_eq!(
        call(sign(&new_key, "k2")).await,
        401,
        "k2 is not published yet"
    );
    // Rotate: publish k2, withdraw k1 (written to a temp file and renamed, as a
    // secret-mount update would).
    let next = tmp.path().join("jwks.json.new");
    std::fs::write(&next, serde_json::json!({"keys": [new_jwk]}).to_string()).unwrap();
    std::fs::rename(&next, &keys.jwks).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while call(sign(&new_key, "k2")).await != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "new kid never accepted:\n{}",
            server.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        call(sign(&keys.jwks_key, "k1")).await,
        401,
        "a removed kid is refused"
    );
    // A broken JWKS keeps the current keys in force: first see the gateway read it and
    // reject it (its log says so), then check the key it had still works.
    let rejected = |log: &str| log.matches("JWT key reload failed").count();
    let before = rejected(&server.log_text());
    std::fs::write(&keys.jwks, "{ not json").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while rejected(&server.log_text()) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the broken JWKS was never read and rejected:\n{}",
            server.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        call(sign(&new_key, "k2")).await,
        200,
        "old keys stay after a bad reload"
    );
}

async fn ready_with(server: &Server, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    server
        .request(
            "GET",
            "/v2/models/addn/ready",
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await
        .unwrap()
        .status
}

fn addn_flags() -> Vec<String> {
    vec![
        "--model-path".into(),
        model_dir("addn").display().to_string(),
        "--model-name".into(),
        "addn".into(),
    ]
}

/// A PEM key replaced on disk is re-read on SIGHUP (even when its modification time
/// says nothing changed) and on change: a token of the removed key is refused from the
/// reload on, one of the new key accepted.
#[tokio::test]
async fn a_replaced_pem_key_is_reloaded_on_sighup_and_on_change() {
    let mut server = Server::start(&addn_flags(), &[]);
    server.wait_ready().await;
    let pem = server.certs.join("jwt.pub.pem");
    let other = make_certs(&server.dir.path().join("other"));
    let old_token = server.token(claims("alice", 600));
    let new_token = sign(&other.join("jwt.key"), claims("alice", 600));
    assert_eq!(ready_with(&server, &old_token).await, 200);
    assert_eq!(ready_with(&server, &new_token).await, 401);

    // Swap the key in place and put the old modification time back, so that only the
    // SIGHUP can make the gateway notice.
    let mtime = std::fs::metadata(&pem).unwrap().modified().unwrap();
    std::fs::write(&pem, std::fs::read(other.join("jwt.pub.pem")).unwrap()).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&pem)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        ready_with(&server, &old_token).await,
        200,
        "no reload without a signal or a change (the test's premise)"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ready_with(&server, &new_token).await != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP never loaded the new key:\n{}",
            server.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        ready_with(&server, &old_token).await,
        401,
        "the removed key is refused after the SIGHUP reload (even for a token it verified before)"
    );

    // A change on disk alone reloads too: the old key back, by rename.
    let next = pem.with_extension("new");
    std::fs::write(&next, sign_key_pub(&server)).unwrap();
    std::fs::rename(&next, &pem).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ready_with(&server, &old_token).await != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the changed file was never reloaded:\n{}",
            server.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(ready_with(&server, &new_token).await, 401);
}

/// The public PEM of the server's development signing key.
fn sign_key_pub(server: &Server) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(server.certs.join("jwt.key"))
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A TLS private key only root can read would load at start and then never again
/// after the privilege drop: refused at start and by `warden check`, never a silently
/// stale key.
#[tokio::test]
async fn a_tls_key_the_gateway_could_not_reload_is_refused_at_start() {
    if !is_root() {
        assert!(
            std::env::var_os("WARDEN_REQUIRE_ROOT").is_none_or(|v| v != "1"),
            "WARDEN_REQUIRE_ROOT=1 but not root"
        );
        eprintln!("SKIPPED: needs root (the gateway drops to another uid)");
        return;
    }
    let tmp = TempDir::new("rootkey");
    let certs = make_certs(tmp.path());
    let key = certs.join("server.key");
    std::os::unix::fs::chown(&key, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let audit = audit_dir(tmp.path()).join("audit.log");
    let flags = |cmd: &mut Command| {
        cmd.args(addn_flags())
            .arg("--tls-cert")
            .arg(certs.join("server.pem"))
            .arg("--tls-key")
            .arg(&key)
            .arg("--jwt-key")
            .arg(certs.join("jwt.pub.pem"))
            .args(["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE])
            .arg("--openvino-dir")
            .arg(runtime_dir())
            .arg("--audit-log")
            .arg(&audit);
    };
    let mut check = Command::new(warden_bin());
    check.arg("check");
    flags(&mut check);
    let out = check.output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        text.contains("TLS private key")
            && text.contains("cannot be re-read after the privilege drop"),
        "{text}"
    );
    let mut serve = Command::new(warden_bin());
    serve
        .arg("serve")
        .args([
            "--bind-address",
            "127.0.0.1",
            "--rest-port",
            &free_port().to_string(),
        ])
        .args(["--grpc-port", "0", "--admin-port", "0"])
        .arg("--socket-dir")
        .arg(tmp.path().join("sock"));
    flags(&mut serve);
    let out = serve.output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("cannot be re-read after the privilege drop"),
        "{text}"
    );
    // Readable by the gateway's group: starts (checked by `warden check`).
    std::os::unix::fs::chown(&key, Some(0), Some(GATEWAY_UID)).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let mut check = Command::new(warden_bin());
    check.arg("check");
    flags(&mut check);
    let out = check.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A JWKS rewritten in place is re-read on SIGHUP even when its modification time says
/// nothing changed: the withdrawn key is refused from then on, the new one accepted.
#[tokio::test]
async fn a_jwks_is_reloaded_on_sighup() {
    let tmp = TempDir::new("jwks-hup");
    let (k1, jwk1) = ec_jwk("k1");
    let (k2, jwk2) = ec_jwk("k2");
    let jwks = tmp.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({"keys": [jwk1]}).to_string()).unwrap();
    let cfg = tmp.path().join("warden.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[auth.issuers]]\nissuer = \"{JWKS_ISS}\"\naudiences = [\"{AUDIENCE}\"]\nkeys = [\"{}\"]\n",
            jwks.display()
        ),
    )
    .unwrap();
    let mut server = Server::start(&addn_flags(), &["--config", cfg.to_str().unwrap()]);
    server.wait_ready().await;
    let token = |der: &[u8], kid: &str| {
        let mut c = claims("alice", 600);
        c["iss"] = JWKS_ISS.into();
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, &c, &EncodingKey::from_ec_der(der)).unwrap()
    };
    let (t1, t2) = (token(&k1, "k1"), token(&k2, "k2"));
    assert_eq!(ready_with(&server, &t1).await, 200);
    let mtime = std::fs::metadata(&jwks).unwrap().modified().unwrap();
    std::fs::write(&jwks, serde_json::json!({"keys": [jwk2]}).to_string()).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&jwks)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        ready_with(&server, &t1).await,
        200,
        "no reload without a signal or a change (the test's premise)"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ready_with(&server, &t1).await != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP never withdrew k1:\n{}",
            server.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(ready_with(&server, &t2).await, 200);
}
