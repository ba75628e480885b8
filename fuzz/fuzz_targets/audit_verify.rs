//! Audit-chain verification of arbitrary files (`warden audit verify`): one file, or
//! the input split into two files as after a rotation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;
use warden_gateway::audit::verify;

fn paths() -> &'static [PathBuf; 2] {
    static P: OnceLock<[PathBuf; 2]> = OnceLock::new();
    P.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("warden-fuzz-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        [dir.join("audit.log.000000000000"), dir.join("audit.log")]
    })
}

fuzz_target!(|data: &[u8]| {
    let [a, b] = paths();
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    if split == 0 {
        std::fs::write(a, rest).expect("write");
        if let Ok(Err(brk)) = verify(std::slice::from_ref(a)) {
            assert!(brk.line >= 1);
        }
    } else {
        let at = (usize::from(split) * rest.len() / 255).min(rest.len());
        std::fs::write(a, &rest[..at]).expect("write");
        std::fs::write(b, &rest[at..]).expect("write");
        let _ = verify(&[a.clone(), b.clone()]);
    }
});
