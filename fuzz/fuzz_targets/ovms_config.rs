//! OVMS `config.json` (`model_config_list`), as an operator writes it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use warden_shared::repository::{parse_ovms_config, parse_plugin_config};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(specs) = parse_ovms_config(Path::new("/models/config.json"), text) {
        for s in specs {
            assert!(warden_shared::repository::check_model_name(&s.name).is_ok());
        }
    }
    let _ = parse_plugin_config(text);
});
