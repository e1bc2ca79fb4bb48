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

/// argon2id at OWASP's first row: m = 19 MiB, t = 2, p = 1.
pub const M_COST_KIB: u32 = 19 * 1024;
pub const T_COST: u32 = 2;
pub const P_COST: u32 = 1;
/// Longest accepted password, in characters: enough for any passphrase, short enough that
/// hashing cannot be abused.
pub const MAX_LEN: usize = 256;
/// The software's own name, which makes a guessable password whatever the product is called
/// (`KEYWARD_PRODUCT_NAME`).
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
/// or case-folded before hashing. `product_name` is the name people know the service by
/// (`KEYWARD_PRODUCT_NAME`): like "keyward", a password may not be built from it.
pub fn check_policy(
    password: &str,
    email: &str,
    min_len: usize,
    product_name: &str,
) -> Result<(), PasswordRejection> {
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
    if service_names(product_name)
        .iter()
        .any(|name| lower.contains(name.as_str()) && leftover_without(&lower, name) < 4)
    {
        return Err(PasswordRejection::ContainsAppName);
    }
    Ok(())
}

/// The words a password may not be built from: "keyward", the product name lowercased
/// ("acme api"), run together ("acmeapi"), and its longer words ("acme").
fn service_names(product_name: &str) -> Vec<String> {
    let lower = product_name.trim().to_lowercase();
    let mut names = vec![APP_NAME.to_string(), lower.clone()];
    names.push(lower.chars().filter(|c| c.is_alphanumeric()).collect());
    names.extend(
        lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 4)
            .map(str::to_string),
    );
    names.retain(|n| n.chars().count() >= 3);
    names.sort();
    names.dedup();
    names
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

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum PasswordWorkError {
    /// Every worker is busy and the queue is full: answer quickly instead of waiting.
    #[error("password hashing is at capacity")]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// How many hashing jobs may wait for a worker. With two workers and ≈ 18 ms a job, a
/// full queue is ≈ 150 ms of work: a sign-in flood is answered "busy" instead of piling
/// up without end (SECURITY.md B.11, R5).
pub const QUEUE: usize = 16;
/// How long a request waits for its hashing job before it is answered "busy" (the job is
/// then skipped if it has not started).
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

type Job = Box<dyn FnOnce() + Send>;

/// Hashes and verifies passwords on a few dedicated low-priority threads fed by a bounded
/// queue (admission control): a full queue, or a job not done within a few seconds, is
/// answered "busy" at once. Tokio's blocking pool has neither a bound on its queue nor a
/// per-thread scheduling policy, hence these threads.
#[derive(Clone)]
pub struct Passwords {
    jobs: std::sync::mpsc::SyncSender<Job>,
    /// Jobs queued or running; at `capacity` new work is refused before it is queued.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    capacity: usize,
    /// Password checks run (real or dummy), for tests that every sign-in path does the
    /// same work.
    verifications: Arc<std::sync::atomic::AtomicU64>,
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

/// Gives the calling thread the lowest normal priority (nice 19): under contention it gets
/// a few per cent of a core against normal threads, and a waking normal thread (a key
/// verification) preempts it. A sign-in flood then slows sign-ins — whose jobs wait and
/// are answered "busy" when the queue is full — and not key verification. Not
/// `SCHED_IDLE`: that policy runs the thread only on CPU time nobody else wants, so a
/// machine kept busy by API traffic alone would starve every sign-in (measured: 503s
/// after 3 s under a verification load). Failure only means the thread competes at the
/// normal priority.
fn lower_this_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        if let Err(e) = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
        ) {
            tracing::debug!(error = ?e, "could not lower the password workers' priority");
        }
    }
}

impl Passwords {
    pub fn new() -> anyhow::Result<Self> {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..workers {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || {
                    lower_this_thread_priority();
                    loop {
                        // The lock is held only while waiting for the next job. The
                        // channel closes when the last `Passwords` is dropped.
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("OS random generator: {e}"))?;
        Ok(Self {
            jobs,
            in_flight: Arc::default(),
            capacity: workers + QUEUE,
            verifications: Arc::default(),
            dummy_hash: hash_now(&random)?.into(),
        })
    }

    /// Runs `work` on a hashing thread, or fails at once with [`PasswordWorkError::Busy`]
    /// when the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, PasswordWorkError> {
        use std::sync::atomic::Ordering;
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(PasswordWorkError::Busy);
        }
        let in_flight = self.in_flight.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // Nobody waits for it any more (answered "busy"): skip the work.
            if !tx.is_closed() {
                let _ = tx.send(work());
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
        self.jobs
            .try_send(job)
            .inspect_err(|_| {
                // The job was not queued: its slot is free again.
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
            })
            .map_err(|e| match e {
                std::sync::mpsc::TrySendError::Full(_) => PasswordWorkError::Busy,
                std::sync::mpsc::TrySendError::Disconnected(_) => {
                    PasswordWorkError::Failed(anyhow::anyhow!("password workers stopped"))
                }
            })?;
        match tokio::time::timeout(MAX_WAIT, rx).await {
            Err(_) => Err(PasswordWorkError::Busy),
            Ok(answer) => {
                Ok(answer.map_err(|_| anyhow::anyhow!("password worker dropped the job"))??)
            }
        }
    }

    pub async fn hash(&self, password: &SecretString) -> Result<String, PasswordWorkError> {
        let pw = password.clone();
        self.run(move || hash_now(pw.expose_secret().as_bytes()))
            .await
    }

    /// Whether new work would be refused right now (every worker busy, the queue full):
    /// sign-in answers "busy" before doing anything else.
    pub fn saturated(&self) -> bool {
        self.in_flight.load(std::sync::atomic::Ordering::Acquire) >= self.capacity
    }

    /// How many password checks have run (real or dummy).
    pub fn verifications(&self) -> u64 {
        self.verifications
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Verifies `password` against `stored` (a PHC string); with `None`, runs the same
    /// work against a dummy hash and reports failure.
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: Option<&str>,
    ) -> Result<Verified, PasswordWorkError> {
        let counter = self.verifications.clone();
        let pw = password.clone();
        let real = stored.is_some();
        let phc = stored.map_or_else(|| self.dummy_hash.to_string(), str::to_string);
        self.run(move || {
            let parsed =
                PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
            let ok = hasher()
                .verify_password(pw.expose_secret().as_bytes(), &parsed)
                .is_ok();
            let needs_rehash = ok && real && weaker_than_current(&parsed);
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(Verified {
                ok: ok && real,
                needs_rehash,
            })
        })
        .await
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
        check_policy(pw, "alice.smith@example.com", 15, "Keyward")
    }

    #[test]
    fn a_password_built_from_the_product_name_is_refused() {
        let check = |pw: &str| check_policy(pw, "alice.smith@example.com", 15, "Acme API");
        for pw in [
            "Acme API 2024!!!",
            "acmeapi12345678",
            "ACME!!ACME!!2024",
            "keywardkeyward1",
        ] {
            assert_eq!(check(pw), Err(PasswordRejection::ContainsAppName), "{pw}");
        }
        // A passphrase that merely mentions it is fine.
        assert_eq!(check("acme tangerine quiz horse"), Ok(()));
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_answers_busy_at_once() {
        let p = Passwords::new().unwrap();
        let pw = SecretString::from("tangerine quiz 7 sailboat");
        // Far more jobs than workers + queue, all at once: some are refused with Busy
        // (quickly), the others complete; none waits without end.
        let jobs: Vec<_> = (0..64)
            .map(|_| {
                let (p, pw) = (p.clone(), pw.clone());
                tokio::spawn(async move { p.verify(&pw, None).await })
            })
            .collect();
        let (mut busy, mut done) = (0, 0);
        for j in jobs {
            match j.await.unwrap() {
                Err(PasswordWorkError::Busy) => busy += 1,
                Ok(v) => {
                    assert!(!v.ok);
                    done += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(busy > 0, "a full queue refuses");
        assert!(done >= QUEUE, "queued jobs complete ({done})");
        // Once the queue drained, work is accepted again.
        assert!(p.verify(&pw, None).await.is_ok());
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
