//! The framed `ModelInfer` on the gateway <-> backend socket (`warden_shared::frames`),
//! raw bytes: a call's payload as the backend reads it, an answer's as the gateway reads
//! it. Whatever is accepted is written back by the encoder into the same value.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use warden_shared::frames::{decode_answer, decode_call, encode_answer, encode_call};

/// The payload of the one frame in `out`, its length prefix checked.
fn payload(out: &[u8]) -> Bytes {
    let len = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
    assert_eq!(len, out.len() - 4);
    Bytes::copy_from_slice(&out[4..])
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let mut out = Vec::new();
    if which & 1 == 0 {
        let Ok(call) = decode_call(Bytes::copy_from_slice(bytes)) else {
            return;
        };
        encode_call(&mut out, &call.principal, &call.request_id, &call.request)
            .expect("a call read from a frame fits one");
        assert_eq!(decode_call(payload(&out)).expect("re-read"), call);
    } else {
        let Ok(answer) = decode_answer(Bytes::copy_from_slice(bytes)) else {
            return;
        };
        encode_answer(&mut out, &answer);
        let again = decode_answer(payload(&out)).expect("re-read");
        match (&answer, &again) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => {
                assert_eq!(a.code(), b.code());
                assert!(a.message().starts_with(b.message()), "a message is only ever cut");
            }
            _ => panic!("an answer changed kind: {answer:?} -> {again:?}"),
        }
    }
});
