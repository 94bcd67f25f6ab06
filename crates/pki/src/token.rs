//! Join tokens: `HOIST-1-<sha256 of the CA certificate, hex>-<secret>`.

use crate::PkiError;

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_digest: String,
    pub secret: String,
}

const PREFIX: &str = "HOIST-1-";

impl JoinToken {
    /// A fresh secret: 32 characters of [a-z0-9], about 165 bits.
    pub fn new_secret() -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..32)
            .map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char)
            .collect()
    }

    pub fn parse(text: &str) -> Result<Self, PkiError> {
        let text = text.trim();
        let rest = text.strip_prefix(PREFIX).ok_or_else(|| {
            PkiError::Token(
                "a join token starts with HOIST-1- (copy it from `hoist join-token`)".into(),
            )
        })?;
        let (digest, secret) = rest
            .split_once('-')
            .ok_or_else(|| PkiError::Token("expected HOIST-1-<CA digest>-<secret>".into()))?;
        if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(PkiError::Token(
                "the CA digest part must be 64 hex digits".into(),
            ));
        }
        if secret.len() < 16 || !secret.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(PkiError::Token(
                "the secret part must be at least 16 letters or digits".into(),
            ));
        }
        Ok(JoinToken {
            ca_digest: digest.to_ascii_lowercase(),
            secret: secret.to_string(),
        })
    }

    pub fn format(ca_digest: &str, secret: &str) -> String {
        format!("{PREFIX}{ca_digest}-{secret}")
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&JoinToken::format(&self.ca_digest, &self.secret))
    }
}
