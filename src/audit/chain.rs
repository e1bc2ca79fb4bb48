//! The audit log's hash chain and its signed checkpoints.
//!
//! Each organization's events form one chain (account events without an organization form
//! the chain `""`). Row `n` of a chain stores `hash_n = SHA-256(encoding(row_n, hash_{n-1}))`
//! with `hash_0` = 64 zeros. The encoding is canonical: a domain tag, then every field as a
//! big-endian u64 length and its bytes (an absent optional field is one `0` byte, a present
//! one `1` and the field), so no two different rows encode alike and nothing depends on a
//! serializer's field order. NEVER change the encoding of `v1`: every stored hash would stop
//! matching. A new encoding needs a new tag and a way to tell rows of each version apart.
//!
//! The chain alone proves only consistency: anyone who can write the database can also
//! recompute every hash after an edit. Checkpoints close that gap: an Ed25519 signature,
//! with a key kept in the secrets file (not in the database), over (chain, position, hash)
//! of the chain head at the time. An edit at or before a signed position no longer matches
//! the checkpoint, whatever the attacker recomputes, unless they also hold the key.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::store::{AuditEvent, NewAudit};

/// The hash before a chain's first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const ROW_TAG: &[u8] = b"keyward/audit-row/v1";
const CHECKPOINT_TAG: &[u8] = b"keyward/audit-checkpoint/v1";

/// The fields of an audit row that its hash covers (everything but the database id, which
/// the database assigns after the hash is computed; the position stands in for it).
#[derive(Debug, Clone, Copy)]
pub struct RowFields<'a> {
    pub occurred_at: i64,
    pub org_id: Option<&'a str>,
    pub actor_id: Option<&'a str>,
    pub actor_email: &'a str,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: &'a str,
    pub target_name: &'a str,
    pub ip: &'a str,
    pub user_agent: &'a str,
    pub details: &'a str,
}

impl<'a> From<&'a NewAudit> for RowFields<'a> {
    fn from(e: &'a NewAudit) -> Self {
        Self {
            occurred_at: e.occurred_at,
            org_id: e.org_id.as_deref(),
            actor_id: e.actor_id.as_deref(),
            actor_email: &e.actor_email,
            action: &e.action,
            target_type: &e.target_type,
            target_id: &e.target_id,
            target_name: &e.target_name,
            ip: &e.ip,
            user_agent: &e.user_agent,
            details: &e.details,
        }
    }
}

impl<'a> From<&'a AuditEvent> for RowFields<'a> {
    fn from(e: &'a AuditEvent) -> Self {
        Self {
            occurred_at: e.occurred_at,
            org_id: e.org_id.as_deref(),
            actor_id: e.actor_id.as_deref(),
            actor_email: &e.actor_email,
            action: &e.action,
            target_type: &e.target_type,
            target_id: &e.target_id,
            target_name: &e.target_name,
            ip: &e.ip,
            user_agent: &e.user_agent,
            details: &e.details,
        }
    }
}

/// The chain a row belongs to: its organization, or `""`.
pub fn chain_of(org_id: Option<&str>) -> &str {
    org_id.unwrap_or("")
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn optional(h: &mut Sha256, value: Option<&str>) {
    match value {
        None => h.update([0u8]),
        Some(v) => {
            h.update([1u8]);
            field(h, v.as_bytes());
        }
    }
}

/// The hash of the row at position `seq` whose predecessor's hash is `prev` (hex).
pub fn row_hash(row: RowFields<'_>, seq: i64, prev: &str) -> String {
    let mut h = Sha256::new();
    field(&mut h, ROW_TAG);
    field(&mut h, prev.as_bytes());
    h.update(seq.to_be_bytes());
    h.update(row.occurred_at.to_be_bytes());
    optional(&mut h, row.org_id);
    optional(&mut h, row.actor_id);
    for text in [
        row.actor_email,
        row.action,
        row.target_type,
        row.target_id,
        row.target_name,
        row.ip,
        row.user_agent,
        row.details,
    ] {
        field(&mut h, text.as_bytes());
    }
    hex::encode(h.finalize())
}

/// What a checkpoint signs.
fn checkpoint_message(chain: &str, seq: i64, head_hash: &str, signed_at: i64) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_TAG.len() + chain.len() + head_hash.len() + 48);
    for part in [CHECKPOINT_TAG, chain.as_bytes(), head_hash.as_bytes()] {
        m.extend_from_slice(&(part.len() as u64).to_be_bytes());
        m.extend_from_slice(part);
    }
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&signed_at.to_be_bytes());
    m
}

/// The key that signs checkpoints. Never printed.
#[derive(Clone)]
pub struct AuditSigningKey(SigningKey);

impl AuditSigningKey {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    pub fn public(&self) -> AuditPublicKey {
        AuditPublicKey(self.0.verifying_key())
    }

    /// The base64 signature of a checkpoint.
    pub fn sign(&self, chain: &str, seq: i64, head_hash: &str, signed_at: i64) -> String {
        B64.encode(
            self.0
                .sign(&checkpoint_message(chain, seq, head_hash, signed_at))
                .to_bytes(),
        )
    }
}

impl std::fmt::Debug for AuditSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditSigningKey({}, [redacted])", self.public().id())
    }
}

/// The public half, which is all verification needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPublicKey(VerifyingKey);

impl AuditPublicKey {
    /// Parses a base64 public key (as `keyward audit public-key` prints it).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let bytes: [u8; 32] = B64
            .decode(text.trim())
            .map_err(|_| anyhow::anyhow!("the public key must be base64"))?
            .try_into()
            .map_err(|_| anyhow::anyhow!("an Ed25519 public key is 32 bytes"))?;
        Ok(Self(VerifyingKey::from_bytes(&bytes).map_err(|_| {
            anyhow::anyhow!("not an Ed25519 public key")
        })?))
    }

    pub fn to_base64(&self) -> String {
        B64.encode(self.0.to_bytes())
    }

    /// A short name for the key, stored with each checkpoint it signs.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.0.to_bytes())[..8])
    }

    /// Whether `signature` (base64) signs this checkpoint.
    pub fn verifies(
        &self,
        chain: &str,
        seq: i64,
        head_hash: &str,
        signed_at: i64,
        signature: &str,
    ) -> bool {
        let Ok(bytes) = B64.decode(signature) else {
            return false;
        };
        let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return false;
        };
        self.0
            .verify_strict(
                &checkpoint_message(chain, seq, head_hash, signed_at),
                &Signature::from_bytes(&bytes),
            )
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> NewAudit {
        NewAudit::new("key.created", 1_700_000_000)
            .org("org-1")
            .actor(Some("user-1"), "ana@example.com")
            .target("api_key", "key-1", "ci")
    }

    #[test]
    fn the_row_encoding_is_pinned() {
        // A change here breaks every stored chain: see "NEVER change" above. The value was
        // computed independently from the description (Python's hashlib, struct.pack('>Q')).
        assert_eq!(
            row_hash(RowFields::from(&row()), 1, GENESIS),
            "e51a50061720761fe6baca1b35d7357846fdfe35375d74015214bdae61bf5fc7"
        );
    }

    #[test]
    fn every_field_and_the_position_and_predecessor_change_the_hash() {
        let base = row();
        let h = row_hash(RowFields::from(&base), 1, GENESIS);
        assert_ne!(h, row_hash(RowFields::from(&base), 2, GENESIS));
        assert_ne!(h, row_hash(RowFields::from(&base), 1, &h));
        let mut edits: Vec<NewAudit> = Vec::new();
        let mut e = base.clone();
        e.occurred_at += 1;
        edits.push(e);
        let mut e = base.clone();
        e.org_id = None;
        edits.push(e);
        let mut e = base.clone();
        e.actor_id = None;
        edits.push(e);
        let mut e = base.clone();
        e.details = "{\"a\":1}".into();
        edits.push(e);
        let mut e = base.clone();
        e.ip = "10.0.0.1".into();
        edits.push(e);
        for e in &edits {
            assert_ne!(h, row_hash(RowFields::from(e), 1, GENESIS), "{e:?}");
        }
    }

    #[test]
    fn moving_text_between_fields_changes_the_hash() {
        // Length prefixes: "ab" + "" is not "a" + "b".
        let mut a = row();
        a.target_id = "ab".into();
        a.target_name = String::new();
        let mut b = row();
        b.target_id = "a".into();
        b.target_name = "b".into();
        assert_ne!(
            row_hash(RowFields::from(&a), 1, GENESIS),
            row_hash(RowFields::from(&b), 1, GENESIS)
        );
        // An absent actor is not an empty one.
        let mut c = row();
        c.actor_id = Some(String::new());
        let mut d = row();
        d.actor_id = None;
        assert_ne!(
            row_hash(RowFields::from(&c), 1, GENESIS),
            row_hash(RowFields::from(&d), 1, GENESIS)
        );
    }

    #[test]
    fn a_checkpoint_verifies_only_as_signed_and_only_with_its_key() {
        let key = AuditSigningKey::from_seed([7; 32]);
        let sig = key.sign("org-1", 5, GENESIS, 100);
        let public = key.public();
        assert!(public.verifies("org-1", 5, GENESIS, 100, &sig));
        assert!(!public.verifies("org-1", 6, GENESIS, 100, &sig));
        assert!(!public.verifies("org-2", 5, GENESIS, 100, &sig));
        assert!(!public.verifies("org-1", 5, GENESIS, 101, &sig));
        assert!(!public.verifies("org-1", 5, &"1".repeat(64), 100, &sig));
        assert!(!public.verifies("org-1", 5, GENESIS, 100, "not base64!"));
        let other = AuditSigningKey::from_seed([8; 32]).public();
        assert!(!other.verifies("org-1", 5, GENESIS, 100, &sig));
        assert_ne!(public.id(), other.id());
        assert_eq!(AuditPublicKey::parse(&public.to_base64()).unwrap(), public);
    }

    #[test]
    fn the_signing_key_is_never_printed() {
        let key = AuditSigningKey::from_seed([7; 32]);
        let shown = format!("{key:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&B64.encode([7u8; 32])));
    }
}
