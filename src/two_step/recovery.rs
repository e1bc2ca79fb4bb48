//! Recovery codes: ten single-use codes shown once, stored as SHA-256 hashes (each has 50
//! random bits, and guesses are limited per sign-in, so a slow hash adds nothing).

use sha2::{Digest, Sha256};

/// Codes issued at a time.
pub const COUNT: usize = 10;
const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// Ten fresh codes (`xxxxx-xxxxx`) and their hashes.
pub fn generate() -> anyhow::Result<(Vec<String>, Vec<String>)> {
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
    let hashes = codes.iter().map(|c| hash(c)).collect();
    Ok((codes, hashes))
}

/// The hash of a code as typed: case, spaces and dashes do not matter.
pub fn hash(code: &str) -> String {
    let normalized: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    hex::encode(Sha256::digest(format!("keyward-recovery:{normalized}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_hash_as_typed() {
        let (codes, hashes) = generate().unwrap();
        assert_eq!(codes.len(), COUNT);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), COUNT);
        assert_eq!(hashes[0], hash(&codes[0].to_uppercase().replace('-', " ")));
        assert_ne!(hashes[0], hashes[1]);
    }
}
