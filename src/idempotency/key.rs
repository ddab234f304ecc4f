//! The `Idempotency-Key` header value.

/// An `Idempotency-Key`: 1 to 255 printable ASCII characters (contract,
/// section 1; after the IETF httpapi idempotency-key draft).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses the header's bytes. Errors: [`InvalidKey`] when empty, longer
    /// than 255 bytes or not printable ASCII (0x20–0x7E).
    pub fn parse(bytes: &[u8]) -> Result<Self, InvalidKey> {
        if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| (0x20..=0x7e).contains(b))
        {
            return Err(InvalidKey);
        }
        Ok(IdempotencyKey(String::from_utf8_lossy(bytes).into_owned()))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An `Idempotency-Key` that is not 1 to 255 printable ASCII characters;
/// `crate::error` answers it as 400 code 1001 with this text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1 to 255 printable ASCII characters")]
pub struct InvalidKey;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_of_1_to_255_bytes_is_a_key() {
        assert_eq!(IdempotencyKey::parse(b"a").unwrap().as_str(), "a");
        assert_eq!(IdempotencyKey::parse(b" ~!").unwrap().as_str(), " ~!");
        assert!(IdempotencyKey::parse(&[b'k'; 255]).is_ok());
    }

    #[test]
    fn empty_long_or_non_printable_keys_are_invalid() {
        for bad in [
            &b""[..],
            &[b'k'; 256],
            b"tab\there",
            b"caf\xc3\xa9",
            b"nul\0",
        ] {
            assert_eq!(IdempotencyKey::parse(bad), Err(InvalidKey), "{bad:?}");
        }
    }
}
