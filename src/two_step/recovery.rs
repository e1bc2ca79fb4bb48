//! Recovery codes: ten single-use codes shown once, stored as HMAC-SHA-256 under a key
//! derived from the pepper (kept outside the database). Each code has 50 random bits:
//! online guesses are limited like passwords, and the key keeps a database dump from
//! being searched offline for them.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Codes issued at a time.
pub const COUNT: usize = 10;
const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// Ten fresh codes (`xxxxx-xxxxx`) and their hashes under `key` (see [`key`]).
pub fn generate(key: &[u8]) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut codes = Vec::with_capacity(COUNT);
    for _ in 0..COUNT {
        let mut raw = [0u8; 10];
        getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let chars: String = raw
            .iter()
            .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
            .collect();
        codes.push(format!("{}-{}", &chars[..5], &chars[5..]));
    }
    let hashes = codes.iter().map(|c| hash(key, c)).collect();
    Ok((codes, hashes))
}

/// The recovery-code key: derived from the pepper, for this use only.
pub fn key(pepper: &crate::config::KeyPepper) -> Vec<u8> {
    mac(pepper.expose(), b"keyward recovery codes v1")
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The hash of a code as typed: case, spaces and dashes do not matter.
pub fn hash(key: &[u8], code: &str) -> String {
    let normalized: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    hex::encode(mac(key, normalized.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_hash_as_typed() {
        let key = b"test key".to_vec();
        let (codes, hashes) = generate(&key).unwrap();
        assert_eq!(codes.len(), COUNT);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), COUNT);
        assert_eq!(
            hashes[0],
            hash(&key, &codes[0].to_uppercase().replace('-', " "))
        );
        assert_ne!(hashes[0], hashes[1]);
        // Without the key (from the pepper), a stored hash cannot be matched.
        assert_ne!(hashes[0], hash(b"another key", &codes[0]));
    }
}
