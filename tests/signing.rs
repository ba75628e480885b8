//! Model integrity end to end: models signed by the real `model_signing` tool (OpenSSF
//! Model Signing, key method), served by the real `warden serve`, called over real TLS.
//! Every tampering is refused with a clear reason in the log while a valid model in the
//! same server keeps serving; `warden models verify` agrees with `model_signing verify`.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use base64::Engine as _;
use bytes::Bytes;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use warden_tests::*;

fn model_signing() -> PathBuf {
    let p = root().join(".venv/bin/model_signing");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    p
}

/// An EC key pair (private, public) as PEM files, made with the `cryptography` package
/// model_signing itself uses; the public key world-readable as a deployment's would be.
fn keygen(dir: &Path, name: &str, curve: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let script = r#"
import sys
from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric import ec
curve = {"prime256v1": ec.SECP256R1(), "secp384r1": ec.SECP384R1()}[sys.argv[1]]
k = ec.generate_private_key(curve)
open(sys.argv[2], "wb").write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))
open(sys.argv[3], "wb").write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))
"#;
    let out = Command::new(root().join(".venv/bin/python"))
        .args(["-c", script, curve])
        .arg(&private)
        .arg(&public)
        .output()
        .expect("the .venv python runs (scripts/fetch-models.sh)");
    assert!(
        out.status.success(),
        "could not make a {curve} key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
    (private, public)
}

/// Copies the version folder `src` to `<base>/1` and returns that version folder.
fn stage(src: &Path, base: &Path) -> PathBuf {
    let version = base.join("1");
    std::fs::create_dir_all(base).unwrap();
    let ok = Command::new("cp")
        .arg("-r")
        .arg(src)
        .arg(&version)
        .status()
        .unwrap()
        .success();
    assert!(ok, "copying {} failed", src.display());
    readable(base);
    version
}

/// The backend runs as uid 5000: folders 0755, files 0644.
fn readable(path: &Path) {
    let ok = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// `model_signing sign key DIR --private_key KEY --signature DIR/model.sig`.
fn sign(dir: &Path, private: &Path) {
    let out = Command::new(model_signing())
        .args(["sign", "key"])
        .arg(dir)
        .arg("--private_key")
        .arg(private)
        .arg("--signature")
        .arg(dir.join("model.sig"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "model_signing sign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    readable(dir);
}

/// The subject digest the bundle signs, read straight from the JSON.
fn signed_digest(sig: &Path) -> String {
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(sig).unwrap()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(bundle["dsseEnvelope"]["payload"].as_str().unwrap())
        .unwrap();
    let statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    format!(
        "sha256:{}",
        statement["subject"][0]["digest"]["sha256"]
            .as_str()
            .unwrap()
    )
}

fn flip_a_byte(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(file, bytes).unwrap();
}

/// An OVMS config.json serving every (name, base path).
fn ovms_config(dir: &Path, models: &[(&str, &Path)]) -> Vec<String> {
    let list: Vec<serde_json::Value> = models
        .iter()
        .map(|(name, base)| serde_json::json!({"config": {"name": name, "base_path": base}}))
        .collect();
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&serde_json::json!({ "model_config_list": list })).unwrap(),
    )
    .unwrap();
    readable(&path);
    vec!["--config-path".into(), path.display().to_string()]
}

/// Waits until `model` answers ready: the server as a whole is not ready while a
/// configured model failed, which is the point of these tests.
async fn wait_model_ready(server: &mut Server, model: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "warden serve exited early ({status}):\n{}",
                server.log_text()
            );
        }
        let auth = format!("Bearer {}", server.good_token());
        if let Ok(r) = server
            .request(
                "GET",
                &format!("/v2/models/{model}/ready"),
                &[("authorization", &auth)],
                Bytes::new(),
            )
            .await
            && r.status == 200
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{model} not ready in time:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Infers on zeros shaped like the model's first input (dynamic dimensions as 1).
async fn infer_zeros(server: &Server, model: &str) -> Reply {
    let meta = server
        .call("GET", &format!("/v2/models/{model}"), Bytes::new())
        .await;
    assert_eq!(meta.status, 200, "{model} metadata: {:?}", meta.body);
    let meta = meta.json();
    let inputs: Vec<serde_json::Value> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let shape: Vec<i64> = i["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap().max(1))
                .collect();
            let n: i64 = shape.iter().product();
            serde_json::json!({"name": i["name"], "shape": shape, "datatype": i["datatype"],
                               "data": vec![0; n as usize]})
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "inputs": inputs })).unwrap();
    server
        .call("POST", &format!("/v2/models/{model}/infer"), body)
        .await
}

/// Asserts the model is not served and the log says why.
async fn assert_refused(server: &Server, model: &str, mode: &str, reason: &str) {
    let r = server
        .call(
            "POST",
            &format!("/v2/models/{model}/infer"),
            r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
        )
        .await;
    assert_eq!(r.status, 404, "{model} must not be served: {:?}", r.body);
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("model {model} version 1: signature check failed")))
        .unwrap_or_else(|| panic!("no refusal logged for {model}:\n{log}"));
    assert!(
        line.contains(&format!("({mode} mode)")) && line.contains(reason),
        "{model}: expected {reason:?} in\n{line}"
    );
    // The model was refused before OpenVINO saw it: no OpenVINO error for it.
    assert!(
        !log.lines()
            .any(|l| l.contains(&format!("model {model} version 1: OpenVINO"))),
        "{log}"
    );
}

const ADDN_REQUEST: &str =
    r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;

#[tokio::test(flavor = "multi_thread")]
async fn signed_models_serve_and_every_tampering_is_refused() {
    let dir = TempDir::new("signing");
    let d = dir.path();
    let (k256, pub256) = keygen(d, "release256", "prime256v1");
    let (k384, pub384) = keygen(d, "release384", "secp384r1");
    let (other, _) = keygen(d, "stranger", "prime256v1");
    let addn = model_dir("addn").join("1");

    // Three real models in three formats, signed on two curves.
    let good = stage(&addn, &d.join("good"));
    sign(&good, &k256);
    let nsfw = stage(&model_dir("nsfw").join("1"), &d.join("nsfw"));
    sign(&nsfw, &k384);
    let blazeface = stage(&model_dir("blazeface").join("1"), &d.join("blazeface"));
    sign(&blazeface, &k256);

    // Each tampering, on its own signed copy of addn.
    let tampered = |name: &str, f: &dyn Fn(&Path)| {
        let v = stage(&addn, &d.join(name));
        sign(&v, &k256);
        f(&v);
        readable(&v);
    };
    tampered("flipped", &|v| flip_a_byte(&v.join("model.bin")));
    tampered("added", &|v| {
        std::fs::write(v.join("notes.txt"), b"hi").unwrap()
    });
    tampered("removed", &|v| {
        std::fs::remove_file(v.join("model.bin")).unwrap()
    });
    tampered("renamed", &|v| {
        std::fs::rename(v.join("model.xml"), v.join("renamed.xml")).unwrap()
    });
    tampered("truncated", &|v| {
        let sig = std::fs::read(v.join("model.sig")).unwrap();
        std::fs::write(v.join("model.sig"), &sig[..sig.len() / 2]).unwrap();
    });
    tampered("garbage", &|v| {
        std::fs::write(v.join("model.sig"), b"\x8f\x00not a bundle\xff\xfe").unwrap()
    });
    tampered("unsigned", &|v| {
        std::fs::remove_file(v.join("model.sig")).unwrap()
    });
    let stranger = stage(&addn, &d.join("stranger"));
    sign(&stranger, &other);

    let names = [
        "good",
        "nsfw",
        "blazeface",
        "flipped",
        "added",
        "removed",
        "renamed",
        "truncated",
        "garbage",
        "unsigned",
        "stranger",
    ];
    let bases: Vec<(&str, PathBuf)> = names.iter().map(|n| (*n, d.join(n))).collect();
    let models: Vec<(&str, &Path)> = bases.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let flags = ovms_config(d, &models);
    // Keys given, no mode: the default is `required`.
    let pub256 = pub256.display().to_string();
    let pub384 = pub384.display().to_string();
    let mut server = Server::start(
        &flags,
        &["--signing-key", &pub256, "--signing-key", &pub384],
    );
    wait_model_ready(&mut server, "good").await;

    let r = server
        .call("POST", "/v2/models/good/infer", ADDN_REQUEST)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let json = r.json();
    assert_eq!(
        json["outputs"][0]["data"],
        serde_json::json!([2.0, 3.0, 4.0, 5.0])
    );
    let digest = signed_digest(&good.join("model.sig"));
    assert_eq!(json["parameters"]["model_digest"], digest.as_str());
    for (model, version) in [("nsfw", &nsfw), ("blazeface", &blazeface)] {
        let r = infer_zeros(&server, model).await;
        assert_eq!(r.status, 200, "{model}: {:?}", r.body);
        assert_eq!(
            r.json()["parameters"]["model_digest"],
            signed_digest(&version.join("model.sig")).as_str()
        );
    }
    let log = server.log_text();
    assert!(
        log.lines().any(|l| l.contains("model signature verified")
            && l.contains(&digest)
            && l.contains("P-256")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("model signature verified") && l.contains("P-384")),
        "{log}"
    );

    for (model, reason) in [
        ("flipped", "digest mismatch(s): model.bin"),
        ("added", "unsigned extra file(s): notes.txt"),
        ("removed", "missing file(s): model.bin"),
        (
            "renamed",
            "unsigned extra file(s): renamed.xml; missing file(s): model.xml",
        ),
        ("truncated", "signature file is malformed"),
        ("garbage", "signature file is malformed"),
        ("unsigned", "no signature file at"),
        ("stranger", "signed by a key that is not trusted"),
    ] {
        assert_refused(&server, model, "required", reason).await;
    }
    // A failed model keeps the server from reporting ready, and the good one serving.
    let r = server
        .request("GET", "/v2/health/ready", &[], Bytes::new())
        .await
        .unwrap();
    assert_ne!(r.status, 200);
    let r = server
        .call("POST", "/v2/models/good/infer", ADDN_REQUEST)
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn optional_serves_unsigned_models_and_off_ignores_signatures() {
    let dir = TempDir::new("signing-optional");
    let d = dir.path();
    let (k, public) = keygen(d, "release", "secp384r1");
    let addn = model_dir("addn").join("1");

    let signed = stage(&addn, &d.join("signed"));
    sign(&signed, &k);
    stage(&addn, &d.join("plain"));
    for name in ["tampered", "legacy"] {
        let v = stage(&addn, &d.join(name));
        sign(&v, &k);
        flip_a_byte(&v.join("model.bin"));
    }
    let bases: Vec<(&str, PathBuf)> = ["signed", "plain", "tampered", "legacy"]
        .iter()
        .map(|n| (*n, d.join(n)))
        .collect();
    let models: Vec<(&str, &Path)> = bases.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let flags = ovms_config(d, &models);
    // Per-model overrides live in the TOML file; the flags set the keys and the mode.
    let toml = d.join("warden.toml");
    std::fs::write(&toml, "[signing.models]\nlegacy = \"off\"\n").unwrap();
    readable(&toml);
    let public = public.display().to_string();
    let toml = toml.display().to_string();
    let mut server = Server::start(
        &flags,
        &[
            "--config",
            &toml,
            "--signing-key",
            &public,
            "--signing-mode",
            "optional",
        ],
    );
    wait_model_ready(&mut server, "signed").await;
    wait_model_ready(&mut server, "legacy").await;

    let r = server
        .call("POST", "/v2/models/signed/infer", ADDN_REQUEST)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["parameters"]["model_digest"],
        signed_digest(&signed.join("model.sig")).as_str()
    );
    // Unsigned under `optional`: served, without a digest, with a warning.
    let r = server
        .call("POST", "/v2/models/plain/infer", ADDN_REQUEST)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.json().get("parameters").is_none(), "{:?}", r.body);
    let log = server.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("model is not signed") && l.contains("plain")),
        "{log}"
    );
    // Signed but tampered under `optional`: a signature that is there must verify.
    assert_refused(
        &server,
        "tampered",
        "optional",
        "digest mismatch(s): model.bin",
    )
    .await;
    // `off` for one model: its (now wrong) signature is not even read.
    let r = server
        .call("POST", "/v2/models/legacy/infer", ADDN_REQUEST)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.json().get("parameters").is_none());
    assert!(
        !log.lines().any(|l| l.contains("model legacy version 1")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mode_off_ignores_signatures_even_with_keys() {
    let dir = TempDir::new("signing-off");
    let d = dir.path();
    let (k, public) = keygen(d, "release", "prime256v1");
    let v = stage(&model_dir("addn").join("1"), &d.join("addn"));
    sign(&v, &k);
    flip_a_byte(&v.join("model.bin"));
    std::fs::write(v.join("model.sig"), b"garbage").unwrap();
    readable(&v);
    let base = d.join("addn").display().to_string();
    let public = public.display().to_string();
    let mut server = Server::start(
        &[
            "--model-path".into(),
            base,
            "--model-name".into(),
            "addn".into(),
        ],
        &["--signing-key", &public, "--signing-mode", "off"],
    );
    server.wait_ready().await;
    let r = server
        .call("POST", "/v2/models/addn/infer", ADDN_REQUEST)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.json().get("parameters").is_none());
    let log = server.log_text();
    assert!(
        !log.contains("signature check failed") && !log.contains("model signature verified"),
        "{log}"
    );
}

/// Runs `warden models verify` and `model_signing verify key` on the same inputs.
fn both_verify(dir: &Path, public: &Path) -> (i32, i32, String) {
    let ours = Command::new(warden_bin())
        .args(["models", "verify"])
        .arg(dir)
        .arg("--key")
        .arg(public)
        .output()
        .unwrap();
    let theirs = Command::new(model_signing())
        .args(["verify", "key"])
        .arg(dir)
        .arg("--public_key")
        .arg(public)
        .arg("--signature")
        .arg(dir.join("model.sig"))
        .output()
        .unwrap();
    (
        ours.status.code().unwrap_or(-1),
        theirs.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&ours.stdout).into_owned(),
    )
}

fn flip_xml(v: &Path) {
    flip_a_byte(&v.join("model.xml"))
}
fn add_file(v: &Path) {
    std::fs::write(v.join("x"), b"").unwrap()
}
fn remove_weights(v: &Path) {
    std::fs::remove_file(v.join("model.bin")).unwrap()
}
fn rename_weights(v: &Path) {
    std::fs::rename(v.join("model.bin"), v.join("w.bin")).unwrap()
}
fn truncate_signature(v: &Path) {
    let s = std::fs::read(v.join("model.sig")).unwrap();
    std::fs::write(v.join("model.sig"), &s[..s.len() - 40]).unwrap();
}
fn garbage_signature(v: &Path) {
    std::fs::write(v.join("model.sig"), b"{]").unwrap()
}
fn untouched(_: &Path) {}

/// (case, model, signing key, trusted key, tampering, expected exit status)
type Case<'a> = (&'a str, &'a Path, &'a Path, &'a Path, fn(&Path), i32);

#[test]
fn models_verify_agrees_with_model_signing() {
    let dir = TempDir::new("signing-cli");
    let d = dir.path();
    let (k256, pub256) = keygen(d, "k256", "prime256v1");
    let (k384, pub384) = keygen(d, "k384", "secp384r1");
    let addn = model_dir("addn").join("1");
    let blazeface = model_dir("blazeface").join("1");

    let cases: [Case; 9] = [
        ("good-p256", &addn, &k256, &pub256, untouched, 0),
        ("good-p384", &blazeface, &k384, &pub384, untouched, 0),
        ("flipped", &addn, &k256, &pub256, flip_xml, 1),
        ("added", &addn, &k256, &pub256, add_file, 1),
        ("removed", &addn, &k256, &pub256, remove_weights, 1),
        ("renamed", &addn, &k256, &pub256, rename_weights, 1),
        ("other-key", &addn, &k384, &pub256, untouched, 1),
        ("truncated", &addn, &k256, &pub256, truncate_signature, 1),
        ("garbage", &addn, &k256, &pub256, garbage_signature, 1),
    ];
    for (name, src, private, public, tamper, want) in cases {
        let v = stage(src, &d.join(name));
        sign(&v, private);
        let digest = signed_digest(&v.join("model.sig"));
        tamper(&v);
        let (ours, theirs, out) = both_verify(&v, public);
        assert_eq!(
            ours, theirs,
            "{name}: warden exit {ours}, model_signing exit {theirs}\n{out}"
        );
        assert_eq!(ours, want, "{name}: {out}");
        if want == 0 {
            assert!(
                out.contains(&format!("digest:    {digest}")),
                "{name}: {out}"
            );
        } else {
            assert!(out.contains("verification FAILED"), "{name}: {out}");
        }
    }
}

#[test]
fn check_verifies_signatures_like_the_backend() {
    let dir = TempDir::new("signing-check");
    let d = dir.path();
    let certs = make_certs(d);
    let (k, public) = keygen(d, "k", "prime256v1");
    let v = stage(&model_dir("addn").join("1"), &d.join("addn"));
    sign(&v, &k);
    let toml = d.join("warden.toml");
    std::fs::write(
        &toml,
        format!(
            "[tls]\ncert = \"{c}/server.pem\"\nkey = \"{c}/server.key\"\n[auth]\njwt_key = \"{c}/jwt.pub.pem\"\njwt_issuer = \"i\"\njwt_audience = \"a\"\n[models]\nmodel_path = \"{m}\"\nmodel_name = \"addn\"\n[signing]\ntrusted_keys = [\"{p}\"]\n",
            c = certs.display(),
            m = d.join("addn").display(),
            p = public.display()
        ),
    )
    .unwrap();
    let check = || {
        Command::new(warden_bin())
            .arg("check")
            .arg("--config")
            .arg(&toml)
            .output()
            .unwrap()
    };
    let out = check();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("mode required"), "{text}");
    assert!(
        text.contains(&format!(
            "signature verified {}",
            signed_digest(&v.join("model.sig"))
        )),
        "{text}"
    );
    flip_a_byte(&v.join("model.bin"));
    let out = check();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("digest mismatch(s): model.bin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `required` with no key could never load a model: refused outright.
    let text = std::fs::read_to_string(&toml).unwrap();
    let cut = text.find("[signing]").unwrap();
    std::fs::write(
        &toml,
        format!("{}[signing]\nmode = \"required\"\n", &text[..cut]),
    )
    .unwrap();
    let out = check();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signing.trusted_keys"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn probe_and_audit_record_show_the_verified_digest() {
    let dir = TempDir::new("signing-probe");
    let d = dir.path();
    let certs = make_certs(d);
    let (k, public) = keygen(d, "k", "prime256v1");
    let v = stage(&model_dir("addn").join("1"), &d.join("addn"));
    sign(&v, &k);
    let digest = signed_digest(&v.join("model.sig"));
    // `warden check --probe`: verified, loaded and run once in the sandbox.
    let out = Command::new(warden_bin())
        .arg("check")
        .arg("--probe")
        .args([
            "--model-path",
            &d.join("addn").display().to_string(),
            "--model-name",
            "addn",
        ])
        .arg("--signing-key")
        .arg(&public)
        .arg("--tls-cert")
        .arg(certs.join("server.pem"))
        .arg("--tls-key")
        .arg(certs.join("server.key"))
        .arg("--jwt-key")
        .arg(certs.join("jwt.pub.pem"))
        .args(["--jwt-issuer", "i", "--jwt-audience", "a"])
        .arg("--socket-dir")
        .arg(d.join("probe-sock"))
        .arg("--openvino-dir")
        .arg(runtime_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("addn"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("verified") && line.contains("ok (1 outputs)"),
        "{line}"
    );
    assert!(text.contains("probe OK"));
    // The audit record of each inference names the digest that answered.
    let audit = audit_dir(d).join("audit.log");
    let mut server = Server::start(
        &[
            "--model-path".into(),
            d.join("addn").display().to_string(),
            "--model-name".into(),
            "addn".into(),
        ],
        &[
            "--signing-key",
            public.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    server.wait_ready().await;
    let r = server
        .call(
            "POST",
            "/v2/models/addn/infer",
            r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0,0,0,0]}]}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["parameters"]["model_digest"], digest.as_str());
    let rec = audit_records(&audit)
        .into_iter()
        .find(|r| r["event"] == "request")
        .expect("a request record");
    assert_eq!(rec["model_digest"], digest.as_str());
}
