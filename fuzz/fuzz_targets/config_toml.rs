//! The TOML configuration file: parse, then the checks every start runs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_shared::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_toml(text) {
        let _ = config.validate();
        let _ = config.models_source();
        let _ = config.signing.default_mode();
        let _ = config.signing.mode_for("m");
    }
});
