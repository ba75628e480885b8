//! The signature file: a Sigstore bundle (v0.3 JSON) whose `dsseEnvelope` signs an
//! in-toto statement. Only the key method is handled: no certificate, no transparency
//! log; the signature is checked against the operator's trusted keys.
//!
//! The payload is returned only once its signature has verified, so nothing the
//! signer did not sign is ever parsed beyond the envelope itself.

use crate::VerifyError;
use crate::key::{TrustedKey, TrustedKeys};
use base64::Engine as _;
use serde::Deserialize;

/// The one bundle media type `model_signing`'s key method writes (and accepts).
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    media_type: String,
    #[serde(default)]
    verification_material: Option<VerificationMaterial>,
    dsse_envelope: Option<Envelope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerificationMaterial {
    #[serde(default)]
    public_key: Option<PublicKeyIdentifier>,
    #[serde(default)]
    certificate: Option<serde_json::Value>,
    #[serde(default)]
    x509_certificate_chain: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct PublicKeyIdentifier {
    #[serde(default)]
    hint: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

/// DSSE v1 pre-authentication encoding: what is actually signed.
/// `"DSSEv1" SP len(type) SP type SP len(body) SP body`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

fn malformed(message: impl Into<String>) -> VerifyError {
    VerifyError::Malformed(message.into())
}

/// What a verified envelope yields: the signed payload and the key that signed it.
pub struct Verified<'k> {
    pub payload: Vec<u8>,
    pub key: &'k TrustedKey,
}

/// Parses a bundle and checks its one DSSE signature against `keys`.
pub fn verify_bundle<'k>(bytes: &[u8], keys: &'k TrustedKeys) -> Result<Verified<'k>, VerifyError> {
    let bundle: Bundle = serde_json::from_slice(bytes)
        .map_err(|e| malformed(format!("not a Sigstore bundle (JSON): {e}")))?;
    if bundle.media_type != BUNDLE_MEDIA_TYPE {
        return Err(malformed(format!(
            "bundle media type is {:?}, expected {BUNDLE_MEDIA_TYPE:?}",
            clip(&bundle.media_type)
        )));
    }
    let material = bundle.verification_material;
    if material
        .as_ref()
        .is_some_and(|m| m.certificate.is_some() || m.x509_certificate_chain.is_some())
    {
        return Err(VerifyError::Unsupported(
            "the signature was made with the certificate method; only the key method is verified"
                .into(),
        ));
    }
    let hint = material
        .and_then(|m| m.public_key)
        .and_then(|k| k.hint)
        .unwrap_or_default();
    let envelope = bundle.dsse_envelope.ok_or_else(|| {
        malformed("bundle has no dsseEnvelope (message signatures are not used by model signing)")
    })?;
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(malformed(format!(
            "DSSE payload type is {:?}, expected {IN_TOTO_PAYLOAD_TYPE:?}",
            clip(&envelope.payload_type)
        )));
    }
    // model_signing writes exactly one signature; more would be a bundle we don't know.
    let [signature] = envelope.signatures.as_slice() else {
        return Err(malformed(format!(
            "the envelope carries {} signatures; expected exactly one",
            envelope.signatures.len()
        )));
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64
        .decode(envelope.payload.as_bytes())
        .map_err(|e| malformed(format!("DSSE payload is not base64: {e}")))?;
    let sig = b64
        .decode(signature.sig.as_bytes())
        .map_err(|e| malformed(format!("DSSE signature is not base64: {e}")))?;

    // The hint is unsigned: it only narrows which key to try, and a hint that names
    // no trusted key is a clear "signed by someone else" (as model_signing says too).
    let candidates: Vec<&TrustedKey> = if hint.is_empty() {
        keys.keys.iter().collect()
    } else {
        keys.keys.iter().filter(|k| k.hint() == hint).collect()
    };
    if candidates.is_empty() {
        return Err(VerifyError::UntrustedKey { hint: clip(&hint) });
    }
    let message = pae(IN_TOTO_PAYLOAD_TYPE, &payload);
    let key = candidates
        .into_iter()
        .find(|k| k.verify(&message, &sig))
        .ok_or(VerifyError::BadSignature)?;
    Ok(Verified { payload, key })
}

/// Bounds attacker-chosen text before it goes into a message.
pub(crate) fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacker_text_is_clipped_to_80_characters_with_a_mark() {
        assert_eq!(clip("model.bin"), "model.bin");
        let at_limit = "é".repeat(80);
        assert_eq!(clip(&at_limit), at_limit);
        let long = "é".repeat(81);
        assert_eq!(clip(&long), format!("{at_limit}…"));
    }

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE v1 protocol description.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ");
    }
}
