//! Passwords: the policy (NIST SP 800-63B-4 §3.1.1.2, SECURITY.md A.1–A.4) and argon2id
//! hashing (A.6), bounded by a semaphore so a sign-in flood cannot starve the rest of the
//! service (B.11).

use std::{
    collections::HashSet,
    sync::{Arc, LazyLock},
};

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

/// argon2id at OWASP's first row: m = 19 MiB, t = 2, p = 1.
pub const M_COST_KIB: u32 = 19 * 1024;
pub const T_COST: u32 = 2;
pub const P_COST: u32 = 1;
/// Longest accepted password, in characters: enough for any passphrase, short enough that
/// hashing cannot be abused.
pub const MAX_LEN: usize = 256;
/// The service's own name, which makes a guessable password.
const APP_NAME: &str = "keyward";

static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("common_passwords.txt").lines().collect());

/// Why a new password was refused; the message is shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejection {
    #[error(
        "Use at least {min} characters (this one has {got}). A few unrelated words make a good, memorable password."
    )]
    TooShort { min: usize, got: usize },
    #[error("Use at most {MAX_LEN} characters.")]
    TooLong,
    #[error(
        "This password is on a list of commonly used passwords. Choose something less predictable."
    )]
    Common,
    #[error(
        "This password is a common password with numbers or symbols added. Choose something less predictable."
    )]
    CommonWithPadding,
    #[error(
        "This password is just a repeated or sequential run of characters. Choose something less predictable."
    )]
    Repetitive,
    #[error("This password is based on your email address. Choose something unrelated to it.")]
    ContainsEmail,
    #[error(
        "This password is based on the name of this service. Choose something unrelated to it."
    )]
    ContainsAppName,
}

/// Checks a new password against the policy. No composition rules: any characters are
/// allowed, length is counted in Unicode characters, and the password is never trimmed
/// or case-folded before hashing.
pub fn check_policy(password: &str, email: &str, min_len: usize) -> Result<(), PasswordRejection> {
    let len = password.chars().count();
    if len < min_len {
        return Err(PasswordRejection::TooShort {
            min: min_len,
            got: len,
        });
    }
    if len > MAX_LEN {
        return Err(PasswordRejection::TooLong);
    }
    let lower = password.to_lowercase();
    if COMMON.contains(lower.as_str()) {
        return Err(PasswordRejection::Common);
    }
    let core = lower.trim_matches(is_padding);
    if core.len() < lower.len() && COMMON.contains(core) {
        return Err(PasswordRejection::CommonWithPadding);
    }
    if !is_varied(&lower) {
        return Err(PasswordRejection::Repetitive);
    }
    let email = email.trim().to_lowercase();
    let local = email.split('@').next().unwrap_or_default();
    for word in [email.as_str(), local] {
        if word.chars().count() >= 3 && lower.contains(word) && leftover_without(&lower, word) < 4 {
            return Err(PasswordRejection::ContainsEmail);
        }
    }
    if lower.contains(APP_NAME) && leftover_without(&lower, APP_NAME) < 4 {
        return Err(PasswordRejection::ContainsAppName);
    }
    Ok(())
}

/// How many characters remain once every occurrence of `word` and all padding are
/// removed: a password built from a context word plus padding leaves almost none.
fn leftover_without(password: &str, word: &str) -> usize {
    password
        .replace(word, "")
        .chars()
        .filter(|c| !is_padding(*c))
        .count()
}

/// Digits, spaces and ASCII symbols: what people add around a weak word.
fn is_padding(c: char) -> bool {
    c.is_ascii_digit() || c.is_ascii_punctuation() || c.is_whitespace()
}

/// False for runs like `aaaa…`, `abcd…`, `4321…` or a short unit repeated (`abcabc…`).
fn is_varied(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() < 2 {
        return true;
    }
    let step = chars[1] as i64 - chars[0] as i64;
    let arithmetic =
        (-1..=1).contains(&step) && chars.windows(2).all(|w| w[1] as i64 - w[0] as i64 == step);
    if arithmetic {
        return false;
    }
    // Digit runs that wrap around: 1234567890123…, 9876543210987…
    if chars.iter().all(char::is_ascii_digit) {
        let d: Vec<i64> = chars.iter().map(|c| *c as i64 - '0' as i64).collect();
        let step = (d[1] - d[0]).rem_euclid(10);
        if (step == 1 || step == 9) && d.windows(2).all(|w| (w[1] - w[0]).rem_euclid(10) == step) {
            return false;
        }
    }
    // A unit of at most 4 characters repeated for the whole length.
    !(1..=4).any(|p| chars.len() > p && chars.iter().enumerate().all(|(i, c)| *c == chars[i % p]))
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ok: bool,
    /// The stored hash uses weaker parameters than today's; store a new one.
    pub needs_rehash: bool,
}

/// Hashes and verifies passwords off the async runtime, a bounded number at a time.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// A real hash of a random password, verified against when an account does not exist
    /// (or has no password) so that response time does not reveal it.
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").finish_non_exhaustive()
    }
}

fn hasher() -> Argon2<'static> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None)
        .unwrap_or_else(|_| unreachable!("constant argon2 parameters are valid"));
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_now(password: &[u8]) -> anyhow::Result<String> {
    Ok(hasher()
        .hash_password(password)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
        .to_string())
}

impl Passwords {
    pub fn new() -> anyhow::Result<Self> {
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("OS random generator: {e}"))?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(parallel)),
            dummy_hash: hash_now(&random)?.into(),
        })
    }

    pub async fn hash(&self, password: &SecretString) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await?;
        let pw = password.clone();
        tokio::task::spawn_blocking(move || hash_now(pw.expose_secret().as_bytes())).await?
    }

    /// Verifies `password` against `stored` (a PHC string); with `None`, runs the same
    /// work against a dummy hash and reports failure.
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: Option<&str>,
    ) -> anyhow::Result<Verified> {
        let _permit = self.permits.acquire().await?;
        let pw = password.clone();
        let real = stored.is_some();
        let phc = stored.map_or_else(|| self.dummy_hash.to_string(), str::to_string);
        tokio::task::spawn_blocking(move || {
            let parsed =
                PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
            let ok = hasher()
                .verify_password(pw.expose_secret().as_bytes(), &parsed)
                .is_ok();
            let needs_rehash = ok && real && weaker_than_current(&parsed);
            Ok(Verified {
                ok: ok && real,
                needs_rehash,
            })
        })
        .await?
    }
}

fn weaker_than_current(hash: &PasswordHash) -> bool {
    if hash.algorithm.as_str() != "argon2id" {
        return true;
    }
    match Params::try_from(hash) {
        Ok(p) => p.m_cost() < M_COST_KIB || p.t_cost() < T_COST,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pw: &str) -> Result<(), PasswordRejection> {
        check_policy(pw, "alice.smith@example.com", 15)
    }

    #[test]
    fn length_limits_count_characters() {
        assert!(matches!(
            check("abcdefghijklmn".replace('d', "x").as_str()),
            Err(PasswordRejection::TooShort { got: 14, .. })
        ));
        assert_eq!(check("tangerine quiz 7"), Ok(()));
        assert_eq!(check(&"horse battery! ".repeat(5)[..64]), Ok(()));
        let long: String = "correct horse battery staple "
            .chars()
            .cycle()
            .take(256)
            .collect();
        assert_eq!(check(&long), Ok(()));
        let too_long: String = long.chars().chain("x".chars()).collect();
        assert_eq!(check(&too_long), Err(PasswordRejection::TooLong));
        // Fifteen emoji are fifteen characters.
        assert_eq!(check("🦀🐙🦊🐢🦉🐝🦋🐌🐞🦎🐍🦖🐳🦭🐧"), Ok(()));
    }

    #[test]
    fn no_composition_rules() {
        assert_eq!(check("aaaa bbbb cccc dd"), Ok(()));
        assert_eq!(check("only lowercase words here"), Ok(()));
    }

    #[test]
    fn blocklist_and_context_words() {
        assert_eq!(
            check("password1234567"),
            Err(PasswordRejection::CommonWithPadding)
        );
        assert_eq!(
            check("keywardkeyward"),
            Err(PasswordRejection::TooShort { min: 15, got: 14 })
        );
        assert_eq!(
            check("keywardkeyward1"),
            Err(PasswordRejection::ContainsAppName)
        );
        assert_eq!(
            check("KeywardKeyward!!"),
            Err(PasswordRejection::ContainsAppName)
        );
        assert_eq!(
            check("alice.smith@example.com"),
            Err(PasswordRejection::ContainsEmail)
        );
        assert_eq!(
            check("alice.smith2024!!"),
            Err(PasswordRejection::ContainsEmail)
        );
        assert_eq!(
            check("aaaaaaaaaaaaaaaa"),
            Err(PasswordRejection::Repetitive)
        );
        assert_eq!(check("123456789012345"), Err(PasswordRejection::Repetitive));
        assert_eq!(check("8271 9384 1029 3847"), Ok(()));
        assert_eq!(check("1234-5678-9012-abc"), Ok(()));
        assert_eq!(
            check("abcdefghijklmnop"),
            Err(PasswordRejection::Repetitive)
        );
        assert_eq!(
            check("abcabcabcabcabcabc"),
            Err(PasswordRejection::Repetitive)
        );
        assert!(COMMON.len() >= 3000);
        assert!(COMMON.contains("password"));
    }

    #[tokio::test]
    async fn argon2id_parameters_and_rehash() {
        let p = Passwords::new().unwrap();
        let pw = SecretString::from("tangerine quiz 7 sailboat");
        let h = p.hash(&pw).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        let v = p.verify(&pw, Some(&h)).await.unwrap();
        assert_eq!(
            v,
            Verified {
                ok: true,
                needs_rehash: false
            }
        );
        // Exactly what was sent: case and last character matter.
        for wrong in [
            "Tangerine quiz 7 sailboat",
            "tangerine quiz 7 sailboaT",
            "tangerine quiz 7 sailboa",
        ] {
            assert!(
                !p.verify(&SecretString::from(wrong), Some(&h))
                    .await
                    .unwrap()
                    .ok
            );
        }
        // Unknown account: same work, never ok.
        assert!(!p.verify(&pw, None).await.unwrap().ok);
        // A hash with weaker parameters verifies and asks to be upgraded.
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8192, 1, 1, None).unwrap(),
        )
        .hash_password(b"tangerine quiz 7 sailboat")
        .unwrap()
        .to_string();
        let v = p.verify(&pw, Some(&weak)).await.unwrap();
        assert_eq!(
            v,
            Verified {
                ok: true,
                needs_rehash: true
            }
        );
    }
}
