//! Secrets Keyward must use again later — SSO connections' client secrets, webhook signing
//! secrets — are stored sealed: XChaCha20-Poly1305 with a key derived from the deployment's
//! pepper (one key per purpose), so a database dump alone does not reveal them.

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD as B64};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use sha2::Sha256;

use crate::config::KeyPepper;

const VERSION: &str = "v1";

/// Seals and opens connection secrets.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl SecretBox {
    /// `purpose` separates the keys of different kinds of secret.
    pub fn new(pepper: &KeyPepper, purpose: &str) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(pepper.expose())
            .expect("HMAC accepts any key length");
        mac.update(b"keyward/");
        mac.update(purpose.as_bytes());
        mac.update(b"/v1");
        let key = mac.finalize().into_bytes();
        Self {
            cipher: XChaCha20Poly1305::new(&key),
        }
    }

    /// `v1:<base64(nonce || ciphertext)>`; `aad` binds the value to its row (the connection
    /// id), so a sealed secret copied to another connection does not open.
    pub fn seal(&self, secret: &str, aad: &str) -> anyhow::Result<String> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(format!("{VERSION}:{}", B64.encode(out)))
    }

    pub fn open(&self, sealed: &str, aad: &str) -> anyhow::Result<SecretString> {
        let raw = sealed
            .strip_prefix("v1:")
            .and_then(|b| B64.decode(b).ok())
            .filter(|b| b.len() > 24)
            .ok_or_else(|| anyhow::anyhow!("not a sealed secret"))?;
        let (nonce, ct) = raw.split_at(24);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "the stored client secret does not open with this deployment's pepper"
                )
            })?;
        Ok(SecretString::from(String::from_utf8(plain)?))
    }
}

/// For templates and logs: never the secret itself.
impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let b = SecretBox::new(&KeyPepper::new(vec![7; 32]), "sso-client-secret");
        let sealed = b.seal("s3cret", "conn-1").unwrap();
        assert!(!sealed.contains("s3cret"));
        assert_eq!(b.open(&sealed, "conn-1").unwrap().expose_secret(), "s3cret");
        assert!(
            b.open(&sealed, "conn-2").is_err(),
            "bound to its connection"
        );
        let purpose = SecretBox::new(&KeyPepper::new(vec![7; 32]), "webhook-secret");
        assert!(
            purpose.open(&sealed, "conn-1").is_err(),
            "bound to its purpose"
        );
        let other = SecretBox::new(&KeyPepper::new(vec![8; 32]), "sso-client-secret");
        assert!(
            other.open(&sealed, "conn-1").is_err(),
            "bound to the pepper"
        );
        assert_ne!(
            sealed,
            b.seal("s3cret", "conn-1").unwrap(),
            "fresh nonce each time"
        );
    }
}
