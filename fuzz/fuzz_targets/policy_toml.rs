//! The authorization policy file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_gateway::authz::{Policy, glob};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = Policy::from_toml(text) {
        let _ = policy.describe();
        for r in &policy.rules {
            for m in &r.models {
                let _ = glob(m, "resnet-50.v2");
            }
        }
    }
    // The glob matcher on its own: pattern and text split at the first newline.
    if let Some((p, t)) = text.split_once('\n') {
        let _ = glob(p, t);
    }
});
