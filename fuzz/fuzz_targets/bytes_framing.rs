//! BYTES tensor framing: a 4-byte little-endian length before each element.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_gateway::front::tensor::{check_raw, split_bytes_elements};
use warden_shared::datatype::DataType;

fuzz_target!(|data: &[u8]| {
    match split_bytes_elements(data) {
        Ok(items) => {
            // Re-framing the elements gives back the input exactly.
            let mut again = Vec::with_capacity(data.len());
            for it in &items {
                again.extend_from_slice(&(it.len() as u32).to_le_bytes());
                again.extend_from_slice(it);
            }
            assert_eq!(again, data);
            assert!(check_raw(DataType::Bytes, items.len(), data).is_ok());
            assert!(check_raw(DataType::Bytes, items.len() + 1, data).is_err());
        }
        Err(_) => assert!(check_raw(DataType::Bytes, 0, data).is_err() || data.is_empty()),
    }
});
