//! The API-key token: generation, parsing, checksum and hashing.
//!
//! Format: `{prefix}_{env}_{secret}{checksum}`
//! - `prefix`: the deployment's prefix (default `kw`), lowercase letters and digits.
//!   **NEVER change the prefix of existing keys**: parsing depends on it, so changing it
//!   would revoke every key at once.
//! - `env`: `live` or `test`.
//! - `secret`: 43 base62 characters from the OS CSPRNG (43 × log2(62) ≈ 256 bits).
//! - `checksum`: CRC32 of everything before it, as 6 base62 characters. Like GitHub's
//!   token format, it lets scanners recognise keys and lets the verifier reject typos and
//!   garbage without touching the database.
//!
//! Keys are stored only as HMAC-SHA-256(pepper, key); see [`KeyHash`].

use hmac::Mac;
use sha2::Sha256;

use crate::config::KeyPepper;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub const SECRET_LEN: usize = 43;
pub const CHECKSUM_LEN: usize = 6;
/// Characters of the secret shown in the display prefix (`kw_live_AbCd…`).
pub const DISPLAY_SECRET_CHARS: usize = 4;
/// Longest key we try to parse; anything longer is malformed.
pub const MAX_KEY_LEN: usize = 16 + 1 + 4 + 1 + SECRET_LEN + CHECKSUM_LEN;

/// The key environment: `live` for production traffic, `test` for development.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(Environment::Live),
            "test" => Some(Environment::Test),
            _ => None,
        }
    }
}

/// A plaintext key. Its `Debug` never prints the secret.
#[derive(Clone)]
pub struct PlainKey(String);

impl std::fmt::Debug for PlainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlainKey({}…)", self.display_prefix())
    }
}

/// Why a presented string is not a key of this deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the key does not have the expected format")]
    Format,
    #[error("the key's checksum does not match (a typo or a truncated key)")]
    Checksum,
}

impl PlainKey {
    /// Generates a new key from the OS CSPRNG.
    pub fn generate(prefix: &str, env: Environment) -> Result<Self, getrandom::Error> {
        let mut secret = String::with_capacity(SECRET_LEN);
        let mut buf = [0u8; 64];
        while secret.len() < SECRET_LEN {
            getrandom::fill(&mut buf)?;
            // Rejection sampling: 248 = 4 × 62, so `b % 62` is uniform for b < 248.
            for b in buf {
                if b < 248 && secret.len() < SECRET_LEN {
                    secret.push(BASE62[usize::from(b % 62)] as char);
                }
            }
        }
        let mut key = format!("{prefix}_{}_{secret}", env.as_str());
        let sum = checksum(key.as_bytes());
        key.extend(sum.map(char::from));
        Ok(Self(key))
    }

    /// Parses and checks a presented key. Cheap and allocation-free on failure; never
    /// touches the store.
    pub fn parse(prefix: &str, input: &str) -> Result<(Self, Environment), ParseError> {
        let env = Self::check(prefix, input)?;
        Ok((Self(input.to_string()), env))
    }

    /// [`parse`](Self::parse) without keeping the key: checks its format and checksum,
    /// allocation-free (the verifier then hashes the input as it is).
    pub fn check(prefix: &str, input: &str) -> Result<Environment, ParseError> {
        if input.len() > MAX_KEY_LEN || !input.is_ascii() {
            return Err(ParseError::Format);
        }
        let rest = input
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('_'))
            .ok_or(ParseError::Format)?;
        let (env, tail) = rest.split_once('_').ok_or(ParseError::Format)?;
        let env = Environment::parse(env).ok_or(ParseError::Format)?;
        // Every byte is looked at (a fold, not `all`): without an early exit the compiler
        // checks the characters many at a time, and this runs on every verification.
        if tail.len() != SECRET_LEN + CHECKSUM_LEN
            || !tail
                .bytes()
                .fold(true, |ok, b| ok & b.is_ascii_alphanumeric())
        {
            return Err(ParseError::Format);
        }
        let (body, sum) = input.split_at(input.len() - CHECKSUM_LEN);
        if checksum(body.as_bytes()) != sum.as_bytes() {
            return Err(ParseError::Checksum);
        }
        Ok(env)
    }

    /// Whether `input` starts like one of this deployment's keys (`{prefix}_live_` or
    /// `{prefix}_test_`). Such strings are this deployment's namespace: they verify only
    /// by parsing as its keys (format and checksum), never as imported keys, so a typo of
    /// one of our keys stays malformed without a lookup.
    pub fn claims(prefix: &str, input: &str) -> bool {
        input
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('_'))
            .is_some_and(|r| r.starts_with("live_") || r.starts_with("test_"))
    }

    /// The full key. Show it once, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `kw_live_AbCd`: the prefix, environment and first secret characters, safe to show.
    pub fn display_prefix(&self) -> &str {
        // prefix_env_ is followed by at least SECRET_LEN characters.
        let env_end = self
            .0
            .match_indices('_')
            .nth(1)
            .map(|(i, _)| i + 1)
            .unwrap_or(0);
        &self.0[..(env_end + DISPLAY_SECRET_CHARS).min(self.0.len())]
    }

    /// The last four characters, safe to show.
    pub fn last4(&self) -> &str {
        &self.0[self.0.len().saturating_sub(4)..]
    }

    /// The lookup hash stored in place of the key.
    pub fn hash(&self, pepper: &KeyPepper) -> KeyHash {
        KeyHash::of(self.expose(), pepper)
    }
}

/// HMAC-SHA-256(pepper, key): what the store keeps (as a unique index) instead of the key.
/// A fast keyed hash is right for 256-bit random secrets (a slow KDF would only hand
/// attackers a CPU denial of service); the pepper means a database dump alone cannot
/// confirm a leaked key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn of(key: &str, pepper: &KeyPepper) -> Self {
        let mut mac = pepper.mac();
        mac.update(key.as_bytes());
        Self(mac.finalize().into_bytes().into())
    }
}

/// Longest string the verifier looks up when it is not in this deployment's format (an
/// imported key); longer strings are malformed without a lookup.
pub const MAX_FOREIGN_KEY_LEN: usize = 512;

/// Whether `s` could be a key some other system issued: not empty, at most
/// [`MAX_FOREIGN_KEY_LEN`] bytes, no whitespace or control characters. Only such strings
/// take the verifier's slower path for imported keys (two lookups); anything else is
/// malformed at once.
pub fn plausible_foreign_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_FOREIGN_KEY_LEN
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Domain separation of [`KeyHash::imported`] from [`KeyHash::of`]: the HMAC input of an
/// imported hash starts with these bytes, and no key string can (it contains a NUL, which
/// no plausible key holds), so the two schemes can never produce the same input.
const IMPORTED_DOMAIN: &[u8] = b"keyward/imported-sha256/v1\0";

impl KeyHash {
    /// The stored hash of a key imported as the team's hex SHA-256 of it (the team never
    /// had the key to give us): HMAC-SHA-256(pepper, domain || SHA-256(key)).
    ///
    /// The unkeyed SHA-256 is never stored: a database dump of unkeyed hashes would let
    /// anyone confirm a guessed or leaked key offline, which the pepper exists to prevent.
    /// Keyed like this, the row is as safe as any other. On the key's first successful
    /// verification the verifier (which then holds the key) replaces it with
    /// [`KeyHash::of`] the key, so later verifications take one lookup
    /// (`Store::rehash_imported_key`).
    pub fn imported(sha256: &[u8; 32], pepper: &KeyPepper) -> Self {
        let mut mac = pepper.mac();
        mac.update(IMPORTED_DOMAIN);
        mac.update(sha256);
        Self(mac.finalize().into_bytes().into())
    }

    /// [`KeyHash::imported`] of a presented key (SHA-256 first, as the team did).
    pub fn imported_of(key: &str, pepper: &KeyPepper) -> Self {
        use sha2::Digest;
        Self::imported(&Sha256::digest(key.as_bytes()).into(), pepper)
    }
}

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyHash({}…)", hex::encode(&self.0[..4]))
    }
}

/// CRC32 of `body` as exactly 6 base62 characters (62^6 > 2^32), without an allocation
/// (it runs on every verification).
fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(body);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pepper() -> KeyPepper {
        KeyPepper::new(vec![7u8; 32])
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let k = PlainKey::generate("kw", Environment::Live).unwrap();
        let s = k.expose();
        assert!(s.starts_with("kw_live_"));
        assert_eq!(s.len(), "kw_live_".len() + SECRET_LEN + CHECKSUM_LEN);
        assert!(
            s["kw_live_".len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );
        assert_eq!(k.display_prefix(), &s[..12]);
        assert_eq!(k.last4(), &s[s.len() - 4..]);
        let t = PlainKey::generate("acme", Environment::Test).unwrap();
        assert!(t.expose().starts_with("acme_test_"));
        assert_eq!(t.display_prefix().len(), "acme_test_".len() + 4);
    }

    #[test]
    fn keys_are_unique() {
        let a = PlainKey::generate("kw", Environment::Live).unwrap();
        let b = PlainKey::generate("kw", Environment::Live).unwrap();
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn parse_round_trips_and_checks() {
        let k = PlainKey::generate("kw", Environment::Test).unwrap();
        let (parsed, env) = PlainKey::parse("kw", k.expose()).unwrap();
        assert_eq!(parsed.expose(), k.expose());
        assert_eq!(env, Environment::Test);

        // One changed character in the secret breaks the checksum.
        let mut typo = k.expose().to_string().into_bytes();
        let i = 12;
        typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        assert_eq!(
            PlainKey::parse("kw", &typo).unwrap_err(),
            ParseError::Checksum
        );
    }

    #[test]
    fn parse_rejects_malformed_input() {
        let k = PlainKey::generate("kw", Environment::Live).unwrap();
        let s = k.expose();
        for bad in [
            "",
            "kw",
            "kw_live_",
            "kw_prod_abc",
            &s[..s.len() - 1],
            &format!("{s}x"),
            &s.replace("kw_", "xx_"),
            &s.replace("kw_live_", "kw_live_-"),
            "kw_live_ääääääääääääääääääääääääääääääääääääääääääää",
            &"a".repeat(10_000),
        ] {
            assert!(PlainKey::parse("kw", bad).is_err(), "{bad:?} parsed");
        }
        // Another deployment's prefix is not ours.
        assert!(PlainKey::parse("acme", s).is_err());
    }

    #[test]
    fn hash_is_keyed_and_stable() {
        let k = PlainKey::generate("kw", Environment::Live).unwrap();
        assert_eq!(k.hash(&pepper()), k.hash(&pepper()));
        assert_ne!(k.hash(&pepper()), k.hash(&KeyPepper::new(vec![8u8; 32])));
        assert!(!format!("{:?}", k).contains(k.expose()));
    }

    #[test]
    fn imported_hashes_are_keyed_and_apart_from_keyward_hashes() {
        use sha2::Digest;
        let key = "sk_live_51HxQabcdefghijklmnop";
        let sha: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let h = KeyHash::imported(&sha, &pepper());
        assert_eq!(h, KeyHash::imported_of(key, &pepper()));
        assert_ne!(h, KeyHash::imported(&sha, &KeyPepper::new(vec![8u8; 32])));
        assert_ne!(h, KeyHash::of(key, &pepper()));
        assert_ne!(h.0, sha, "never the unkeyed SHA-256");
    }

    #[test]
    fn our_namespace_is_claimed_by_prefix_and_environment() {
        assert!(PlainKey::claims("kw", "kw_live_abc"));
        assert!(PlainKey::claims("kw", "kw_test_"));
        assert!(!PlainKey::claims("kw", "kw_prod_abc"));
        assert!(!PlainKey::claims("kw", "kwx_live_abc"));
        assert!(!PlainKey::claims("acme", "kw_live_abc"));
        assert!(!PlainKey::claims("kw", "sk_live_abc"));
    }

    #[test]
    fn foreign_keys_must_be_plausible() {
        assert!(plausible_foreign_key("sk_live_abc123"));
        assert!(plausible_foreign_key(
            "0b7c3f2e-9a41-4c55-8d0e-6f1a2b3c4d5e"
        ));
        assert!(plausible_foreign_key(&"a".repeat(MAX_FOREIGN_KEY_LEN)));
        for bad in [
            "",
            "a b",
            "a\tb",
            "a\u{0}b",
            "a\u{85}b",
            &"a".repeat(MAX_FOREIGN_KEY_LEN + 1),
        ] {
            assert!(!plausible_foreign_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn key_hashes_are_hmac_sha256_under_the_pepper() {
        // The pepper's pre-keyed HMAC gives what keying a new one with the pepper gives
        // (RFC 2104), for every key and call, one after another.
        use hmac::Hmac;
        let p = pepper();
        for key in [
            "kw_live_abc",
            "",
            "another key, longer than one SHA-256 block of 64 bytes!!",
        ] {
            for _ in 0..2 {
                let mut fresh = <Hmac<Sha256> as Mac>::new_from_slice(&[7u8; 32]).unwrap();
                fresh.update(key.as_bytes());
                let want: [u8; 32] = fresh.finalize().into_bytes().into();
                assert_eq!(KeyHash::of(key, &p).0, want, "{key:?}");
            }
        }
        assert_ne!(
            KeyHash::of("k", &p),
            KeyHash::of("k", &KeyPepper::new(vec![8u8; 32]))
        );
    }

    #[test]
    fn checksum_is_six_base62_chars() {
        for body in ["", "kw_live_x", "a fairly long body of text"] {
            let c = checksum(body.as_bytes());
            assert_eq!(c.len(), 6);
            assert!(c.iter().all(u8::is_ascii_alphanumeric));
        }
    }
}
