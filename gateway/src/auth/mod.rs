//! Authentication: who is calling. Today: bearer JWTs verified against the configured
//! key. The result is a [`Principal`]; nothing downstream ever sees the token itself.

pub mod jwt;

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub subject: String,
    /// The token's `iss`.
    pub issuer: String,
    /// The `kid` of the key that verified the token, if it had one.
    pub key_id: Option<String>,
}

impl Principal {
    /// The form passed to the backend and written to logs: `sub@issuer`... as a URI-ish
    /// pair that cannot be confused across issuers.
    pub fn display_name(&self) -> String {
        format!("{} ({})", self.subject, self.issuer)
    }
}

/// Extracts the token from an `Authorization: Bearer` header value. The scheme is
/// case-insensitive (RFC 7235); anything else is no credential at all.
pub fn bearer_token(header: Option<&http::HeaderValue>) -> Option<&str> {
    bearer_from_str(header?.to_str().ok()?)
}

/// The token in an `authorization` value (`Bearer <token>`), if it is one.
pub fn bearer_from_str(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;
    use http::HeaderValue;

    #[test]
    fn bearer_parsing() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(bearer_token(Some(&h("Bearer abc"))), Some("abc"));
        assert_eq!(bearer_token(Some(&h("bearer abc"))), Some("abc"));
        assert_eq!(bearer_token(Some(&h("Basic abc"))), None);
        assert_eq!(bearer_token(Some(&h("Bearer "))), None);
        assert_eq!(bearer_token(Some(&h("Bearerabc"))), None);
        assert_eq!(bearer_token(None), None);
    }
}
