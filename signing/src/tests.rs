//! Verifier tests: signatures made by the real `model_signing` 1.1.1 tool (committed
//! under `testdata/`, with the public keys; the private keys were thrown away), and
//! bundles built here with aws-lc-rs to reach the cases the tool never writes.

use super::*;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU32, Ordering};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn key(name: &str) -> TrustedKeys {
    TrustedKeys::load(&[testdata(name)]).unwrap()
}

/// A scratch folder (empty, or a copy of a fixture), removed on drop.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    fn fresh_path() -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let dst = std::env::temp_dir().join(format!(
            "warden-signing-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dst);
        dst
    }
    pub(crate) fn empty() -> Scratch {
        let dir = Scratch::fresh_path();
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn copy_of(fixture: &str) -> Scratch {
        let dst = Scratch::fresh_path();
        copy_dir(&testdata(fixture), &dst);
        Scratch(dst)
    }
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
    fn sig(&self) -> PathBuf {
        self.0.join("model.sig")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// The subject digest written in a bundle, read without verifying anything.
fn subject_of(sig_file: &Path) -> String {
    let bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sig_file).unwrap()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(bundle["dsseEnvelope"]["payload"].as_str().unwrap())
        .unwrap();
    let statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    statement["subject"][0]["digest"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn real_model_signing_bundles_verify_on_every_curve() {
    for (fixture, pem, curve) in [
        ("p256", "p256.pub.pem", Curve::P256),
        ("p384", "p384.pub.pem", Curve::P384),
        ("p521", "p521.pub.pem", Curve::P521),
    ] {
        let dir = testdata(fixture);
        let v = verify_model_dir(&dir, &dir.join("model.sig"), &key(pem))
            .unwrap_or_else(|e| panic!("{fixture}: {e}"));
        assert_eq!(v.curve, curve);
        assert_eq!(v.files.len(), 3, "model.xml, model.bin, sub/vocab.txt");
        assert_eq!(
            v.digest,
            format!("sha256:{}", subject_of(&dir.join("model.sig")))
        );
        assert_eq!(v.signed_name, fixture);
        v.check_unchanged().unwrap();
    }
}

#[test]
fn any_of_several_trusted_keys_may_sign() {
    let keys = TrustedKeys::load(&[testdata("p384.pub.pem"), testdata("p256.pub.pem")]).unwrap();
    let dir = testdata("p256");
    let v = verify_model_dir(&dir, &dir.join("model.sig"), &keys).unwrap();
    assert!(v.key.ends_with("p256.pub.pem"), "{}", v.key);
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let dir = testdata("p256");
    let err = verify_model_dir(&dir, &dir.join("model.sig"), &key("p384.pub.pem")).unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedKey { .. }), "{err}");
    assert!(err.to_string().contains("not trusted"), "{err}");
}

#[test]
fn tampered_folders_are_refused_with_what_changed() {
    let keys = key("p256.pub.pem");
    let check = |tamper: &dyn Fn(&Path), want: Mismatch| {
        let s = Scratch::copy_of("p256");
        tamper(s.path());
        match verify_model_dir(s.path(), &s.sig(), &keys) {
            Err(VerifyError::Mismatch(m)) => assert_eq!(m, want),
            other => panic!("expected a mismatch, got {other:?}"),
        }
    };
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // One flipped bit in the weights.
    check(
        &|d| {
            let p = d.join("model.bin");
            let mut b = std::fs::read(&p).unwrap();
            b[3] ^= 1;
            std::fs::write(&p, b).unwrap();
        },
        Mismatch {
            changed: names(&["model.bin"]),
            ..Default::default()
        },
    );
    // An added file, even a hidden one in a subfolder.
    check(
        &|d| std::fs::write(d.join("sub/.extra"), b"x").unwrap(),
        Mismatch {
            extra: names(&["sub/.extra"]),
            ..Default::default()
        },
    );
    // A removed file.
    check(
        &|d| std::fs::remove_file(d.join("sub/vocab.txt")).unwrap(),
        Mismatch {
            missing: names(&["sub/vocab.txt"]),
            ..Default::default()
        },
    );
    // A renamed file: one extra, one missing.
    check(
        &|d| std::fs::rename(d.join("model.xml"), d.join("other.xml")).unwrap(),
        Mismatch {
            extra: names(&["other.xml"]),
            missing: names(&["model.xml"]),
            ..Default::default()
        },
    );
}

#[test]
fn ignored_paths_may_differ_but_nothing_else() {
    let keys = key("p256.pub.pem");
    let s = Scratch::copy_of("p256");
    // The signer's default ignore list holds .git and friends.
    std::fs::create_dir_all(s.path().join(".git/objects")).unwrap();
    std::fs::write(s.path().join(".git/objects/x"), b"x").unwrap();
    std::fs::write(s.path().join(".gitignore"), b"*").unwrap();
    verify_model_dir(s.path(), &s.sig(), &keys).unwrap();
    // An empty folder carries no file, as in model_signing.
    std::fs::create_dir(s.path().join("empty")).unwrap();
    verify_model_dir(s.path(), &s.sig(), &keys).unwrap();
}

#[test]
fn symlinks_and_special_files_are_refused() {
    let keys = key("p256.pub.pem");
    let s = Scratch::copy_of("p256");
    std::os::unix::fs::symlink("model.xml", s.path().join("link.xml")).unwrap();
    let err = verify_model_dir(s.path(), &s.sig(), &keys).unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");

    // A signed file replaced by a symlink to identical bytes is still refused.
    let s = Scratch::copy_of("p256");
    let outside = s.path().with_extension("outside");
    std::fs::rename(s.path().join("model.bin"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, s.path().join("model.bin")).unwrap();
    let err = verify_model_dir(s.path(), &s.sig(), &keys).unwrap_err();
    let _ = std::fs::remove_file(&outside);
    assert!(matches!(err, VerifyError::Folder { .. }), "{err}");

    let s = Scratch::copy_of("p256");
    let fifo = s.path().join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let err = verify_model_dir(s.path(), &s.sig(), &keys).unwrap_err();
    assert!(err.to_string().contains("neither a file"), "{err}");
}

#[test]
fn broken_signature_files_are_refused() {
    let keys = key("p256.pub.pem");
    let s = Scratch::copy_of("p256");
    let good = std::fs::read(s.sig()).unwrap();

    std::fs::write(s.sig(), &good[..good.len() / 2]).unwrap();
    let err = verify_model_dir(s.path(), &s.sig(), &keys).unwrap_err();
    assert!(matches!(err, VerifyError::Malformed(_)), "truncated: {err}");

    std::fs::write(s.sig(), b"\x00\xffgarbage\x13").unwrap();
    let err = verify_model_dir(s.path(), &s.sig(), &keys).unwrap_err();
    assert!(matches!(err, VerifyError::Malformed(_)), "garbage: {err}");

    std::fs::write(s.sig(), b"").unwrap();
    assert!(verify_model_dir(s.path(), &s.sig(), &keys).is_err());

    std::fs::remove_file(s.sig()).unwrap();
    let err = verify_model_dir(s.path(), &s.sig(), &keys).unwrap_err();
    assert!(matches!(err, VerifyError::Missing { .. }), "missing: {err}");

    // One bit flipped inside the base64 signature value.
    let mut bundle: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut raw = b64
        .decode(
            bundle["dsseEnvelope"]["signatures"][0]["sig"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = b64.encode(raw).into();
    std::fs::write(s.sig(), serde_json::to_vec(&bundle).unwrap()).unwrap();
    let err = verify_model_dir(s.path(), &s.sig(), &keys).unwrap_err();
    assert!(matches!(err, VerifyError::BadSignature), "{err}");
}

#[test]
fn a_file_rewritten_after_verification_is_noticed() {
    let keys = key("p256.pub.pem");
    let s = Scratch::copy_of("p256");
    let v = verify_model_dir(s.path(), &s.sig(), &keys).unwrap();
    v.check_unchanged().unwrap();
    // Same bytes, new inode: a swap is a change.
    let p = s.path().join("model.xml");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        v.check_unchanged(),
        Err(VerifyError::Changed { .. })
    ));
}

/// A bundle made here, over any statement, with a fresh key.
struct Forge {
    pair: EcdsaKeyPair,
    keys: TrustedKeys,
}

impl Forge {
    fn new() -> Forge {
        let pair = EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let der = pair.public_key().as_der().unwrap();
        let keys = TrustedKeys {
            keys: vec![TrustedKey::from_spki_der(der.as_ref(), "forge").unwrap()],
        };
        Forge { pair, keys }
    }

    fn bundle(&self, payload: &[u8], hint: &str, edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let signature = self
            .pair
            .sign(
                &SystemRandom::new(),
                &bundle::pae(bundle::IN_TOTO_PAYLOAD_TYPE, payload),
            )
            .unwrap();
        let mut v = serde_json::json!({
            "mediaType": bundle::BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
            "dsseEnvelope": {
                "payload": b64.encode(payload),
                "payloadType": bundle::IN_TOTO_PAYLOAD_TYPE,
                "signatures": [{"sig": b64.encode(signature.as_ref()), "keyid": ""}]
            }
        });
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    }
}

#[test]
fn envelope_rules() {
    let f = Forge::new();
    let hint = f.keys.keys[0].hint().to_owned();
    let ok = |b: &[u8]| bundle::verify_bundle(b, &f.keys).map(|v| v.payload);

    // Signed, with or without a hint.
    assert_eq!(ok(&f.bundle(b"{}", &hint, |_| {})).unwrap(), b"{}");
    assert_eq!(ok(&f.bundle(b"{}", "", |_| {})).unwrap(), b"{}");
    // A payload swapped after signing.
    let swapped = f.bundle(b"{}", &hint, |v| {
        v["dsseEnvelope"]["payload"] = base64::engine::general_purpose::STANDARD
            .encode(b"{ }")
            .into()
    });
    assert!(matches!(ok(&swapped), Err(VerifyError::BadSignature)));
    // The signature covers the payload type too (PAE), and only in-toto is accepted.
    let retyped = f.bundle(b"{}", &hint, |v| {
        v["dsseEnvelope"]["payloadType"] = "text/plain".into()
    });
    assert!(matches!(ok(&retyped), Err(VerifyError::Malformed(_))));
    let media = f.bundle(b"{}", &hint, |v| {
        v["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.2".into()
    });
    assert!(matches!(ok(&media), Err(VerifyError::Malformed(_))));
    let two = f.bundle(b"{}", &hint, |v| {
        let s = v["dsseEnvelope"]["signatures"][0].clone();
        v["dsseEnvelope"]["signatures"] = serde_json::json!([s.clone(), s]);
    });
    assert!(matches!(ok(&two), Err(VerifyError::Malformed(_))));
    let none = f.bundle(b"{}", &hint, |v| {
        v["dsseEnvelope"]["signatures"] = serde_json::json!([])
    });
    assert!(matches!(ok(&none), Err(VerifyError::Malformed(_))));
    let cert = f.bundle(b"{}", &hint, |v| {
        v["verificationMaterial"]["x509CertificateChain"] = serde_json::json!({"certificates": []})
    });
    assert!(matches!(ok(&cert), Err(VerifyError::Unsupported(_))));
    let nob64 = f.bundle(b"{}", &hint, |v| v["dsseEnvelope"]["payload"] = "!!".into());
    assert!(matches!(ok(&nob64), Err(VerifyError::Malformed(_))));
    // A key nobody trusts, named by its hint.
    assert!(matches!(
        ok(&f.bundle(b"{}", &"0".repeat(64), |_| {})),
        Err(VerifyError::UntrustedKey { .. })
    ));
}

#[test]
fn a_validly_signed_but_lying_manifest_is_refused() {
    // A trusted key signed a statement whose subject disagrees with its resources.
    let f = Forge::new();
    let hint = f.keys.keys[0].hint().to_owned();
    let statement = serde_json::json!({
        "_type": manifest::IN_TOTO_STATEMENT_TYPE,
        "subject": [{"name": "m", "digest": {"sha256": "00".repeat(32)}}],
        "predicateType": manifest::OMS_PREDICATE_TYPE,
        "predicate": {"serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": false},
                      "resources": []}
    });
    let s = Scratch::copy_of("p256");
    std::fs::write(
        s.sig(),
        f.bundle(&serde_json::to_vec(&statement).unwrap(), &hint, |_| {}),
    )
    .unwrap();
    let err = verify_model_dir(s.path(), &s.sig(), &f.keys).unwrap_err();
    assert!(matches!(err, VerifyError::Manifest(_)), "{err}");
}

#[test]
fn no_keys_verifies_nothing() {
    let dir = testdata("p256");
    let err = verify_model_dir(&dir, &dir.join("model.sig"), &TrustedKeys::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        VerifyError::Unsupported("no trusted key is configured".into()).to_string()
    );
}

#[test]
fn a_signature_file_is_read_up_to_its_size_limit() {
    let s = Scratch::copy_of("p256");
    let limit = MAX_SIGNATURE_BYTES as usize;
    std::fs::write(s.sig(), vec![b' '; limit]).unwrap();
    assert_eq!(read_signature(&s.sig()).unwrap().len(), limit);
    std::fs::write(s.sig(), vec![b' '; limit + 1]).unwrap();
    assert!(matches!(
        read_signature(&s.sig()),
        Err(VerifyError::TooLarge { .. })
    ));
    // Only a file that is not there is "missing"; any other failure to open is an
    // I/O error (here a path through a regular file).
    let through_a_file = s.path().join("model.bin/model.sig");
    assert!(matches!(
        read_signature(&through_a_file),
        Err(VerifyError::Io { .. })
    ));
    assert!(matches!(
        read_signature(&s.path().join("absent.sig")),
        Err(VerifyError::Missing { .. })
    ));
}

#[test]
fn the_signature_file_is_left_out_of_the_folder_it_signs_whatever_its_name() {
    let keys = key("p256.pub.pem");
    let s = Scratch::copy_of("p256");
    // model_signing ignores the signature under the name it wrote; under another
    // name only the verifier's own skip leaves it out.
    let renamed = s.path().join("signature.json");
    std::fs::rename(s.sig(), &renamed).unwrap();
    verify_model_dir(s.path(), &renamed, &keys).unwrap();
    // The folder named through a symlink, the signature by its real path: the same file.
    let link = s.path().with_extension("link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(s.path(), &link).unwrap();
    let v = verify_model_dir(&link, &renamed, &keys);
    std::fs::remove_file(&link).unwrap();
    v.unwrap();
    // Outside the folder it skips nothing: an extra file inside is still refused.
    let outside = s.path().with_extension("sig");
    std::fs::copy(&renamed, &outside).unwrap();
    let err = verify_model_dir(s.path(), &outside, &keys);
    std::fs::remove_file(&outside).unwrap();
    match err {
        Err(VerifyError::Mismatch(m)) => assert_eq!(m.extra, ["signature.json"]),
        other => panic!("want the renamed signature as an extra file, got {other:?}"),
    }
}

#[test]
fn mismatch_messages_are_bounded() {
    let m = Mismatch {
        extra: (0..20).map(|i| format!("f{i}")).collect(),
        missing: vec!["a".into()],
        changed: vec![],
    };
    let text = m.to_string();
    assert!(text.contains("and 12 more"), "{text}");
    assert!(text.contains("missing file(s): a"), "{text}");

    // Eight names are shown whole; each kind is separated from the next.
    let m = Mismatch {
        extra: (0..8).map(|i| format!("f{i}")).collect(),
        missing: vec!["a".into()],
        changed: vec!["b".into()],
    };
    assert_eq!(
        m.to_string(),
        "unsigned extra file(s): f0, f1, f2, f3, f4, f5, f6, f7; missing file(s): a; \
         digest mismatch(s): b"
    );
}
