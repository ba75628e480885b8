//! OpenSSF Model Signing: the Sigstore bundle / DSSE envelope against a fixed trusted
//! key (the signing crate's P-256 test key), and the in-toto manifest parser on its own
//! (a forged payload never gets past the signature, so it is fuzzed directly).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use warden_signing::bundle::verify_bundle;
use warden_signing::{Manifest, TrustedKey, TrustedKeys};

fn keys() -> &'static TrustedKeys {
    static K: OnceLock<TrustedKeys> = OnceLock::new();
    K.get_or_init(|| TrustedKeys {
        keys: vec![
            TrustedKey::from_pem(
                include_bytes!("../../signing/testdata/p256.pub.pem"),
                "p256",
            )
            .expect("test key"),
        ],
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if let Ok(v) = verify_bundle(rest, keys()) {
            // Only the real, signed test bundles get here.
            let _ = Manifest::from_payload(&v.payload);
        }
    } else if let Ok(m) = Manifest::from_payload(rest) {
        let _ = m.digest_string();
        let _ = m.is_ignored(&["model.xml".into()]);
        let _ = m.is_ignored(&["..".into(), "x".into()]);
    }
});
