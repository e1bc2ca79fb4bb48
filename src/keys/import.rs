//! Importing the keys a team issued before Keyward (`keyward keys import FILE` and
//! `POST /api/v1/keys/import`), so its customers keep the strings they already use.
//!
//! A record is one JSON object (a line of a JSON Lines file):
//! `{"org_external_id" | "org_id", "name", "key" | "hash", "prefix", "last4", "scopes",
//! "expires_at", "metadata", "description", "environment"}` ([`ImportRecord`]).
//!
//! How an imported key is stored (never the key, never its unkeyed SHA-256):
//! - `key` (plaintext): Keyward's own keyed hash of it ([`KeyHash::of`]), as for a key
//!   Keyward made: we hold the key now, so there is nothing to re-hash later.
//! - `hash` (the team's hex SHA-256 of the key): the imported scheme's keyed hash of it
//!   ([`KeyHash::imported`]). The verifier finds such a key by its slower path for strings
//!   not in this deployment's format, and re-hashes it into [`KeyHash::of`] on its first
//!   successful verification.
//!
//! Either way the row keeps [`KeyHash::imported`] as its import fingerprint
//! (`import_hash`, unique): importing the same key again — as the same record, the other
//! kind of record, or after the key was used and re-hashed — is reported as already
//! imported and skipped.
//!
//! All or nothing: every record is checked first; if any is wrong, every wrong record is
//! reported with its line number and nothing is written. Otherwise the new keys and their
//! `key.imported` events are written in one transaction.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    model::{Description, KeyName, Metadata, Scopes},
    service::Keys,
    token::{Environment, KeyHash, PlainKey, plausible_foreign_key},
};
use crate::{
    audit::AuditAction,
    clock::Clock,
    config::Config,
    store::{
        HASH_SCHEME_IMPORTED, HASH_SCHEME_KEYWARD, ImportedKey, KeyLimits, NewAudit, NewKey, Org,
        Store, StoreError,
    },
};

/// The longest `prefix` shown in lists.
pub const MAX_PREFIX: usize = 20;
/// Keys shorter than this get no `last4` (it would show too much of them).
const MIN_LEN_FOR_LAST4: usize = 16;

/// One key to import. Exactly one of `org_external_id`/`org_id`, and of `key`/`hash`.
/// Its `Debug` never prints `key`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRecord {
    /// The organization, by the team's id for its customer (set with `keyward org
    /// external-id` or `PUT /api/v1/orgs/{id}/external-id`).
    #[serde(default)]
    pub org_external_id: Option<String>,
    /// The organization, by Keyward's id.
    #[serde(default)]
    pub org_id: Option<String>,
    /// 1–100 characters, as for any key.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The key itself: hashed on the way in, never stored.
    #[serde(default)]
    pub key: Option<String>,
    /// The SHA-256 of the full key, as 64 hex digits (when the team kept only hashes).
    #[serde(default)]
    pub hash: Option<String>,
    /// The start of the key shown in lists (at most 20 printable characters; for a `key`
    /// record it must be the key's start and leave most of it hidden).
    #[serde(default)]
    pub prefix: Option<String>,
    /// For a `hash` record: the key's last four characters, if the team knows them (a `key`
    /// record's are taken from the key).
    #[serde(default)]
    pub last4: Option<String>,
    /// Scopes from the deployment's catalog (at least one).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// RFC 3339, in the future; absent: never expires.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// A JSON object the verifier returns with the key.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// `live` (default) or `test`.
    #[serde(default)]
    pub environment: Option<String>,
}

impl std::fmt::Debug for ImportRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportRecord")
            .field("org_external_id", &self.org_external_id)
            .field("org_id", &self.org_id)
            .field("name", &self.name)
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("hash", &self.hash)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A record as read, with its line number (1-based; for a JSON array, its position).
pub struct ReadRecord {
    pub line: usize,
    pub record: Result<ImportRecord, String>,
}

/// Reads JSON Lines: one object per line; blank lines are skipped (but counted).
pub fn read_json_lines(text: &str) -> Vec<ReadRecord> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| ReadRecord {
            line: i + 1,
            record: serde_json::from_str(l).map_err(|e| json_message(&e)),
        })
        .collect()
}

/// Reads the records of a JSON array, numbered by position.
pub fn read_array(values: Vec<serde_json::Value>) -> Vec<ReadRecord> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| ReadRecord {
            line: i + 1,
            record: serde_json::from_value(v).map_err(|e| json_message(&e)),
        })
        .collect()
}

fn json_message(e: &serde_json::Error) -> String {
    // serde's message names the field ("unknown field `org`, expected one of …"); the
    // column of a one-line record adds nothing, and it never quotes the input.
    let msg = e.to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg);
    format!("Not a valid record: {msg}.")
}

/// What is wrong with one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LineError {
    /// The line (for a JSON array: the record's position), from 1.
    pub line: usize,
    /// The record's field, or `record` for the record as a whole.
    pub field: String,
    pub message: String,
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LineOutcome {
    pub line: usize,
    /// `imported` or `skipped` (already imported: the same key is already here).
    pub status: &'static str,
    /// The key's id in Keyward (the new key, or the one already there).
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer of an import.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    pub imported: usize,
    /// Records of keys already imported (not errors).
    pub skipped: usize,
    pub records: Vec<LineOutcome>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Records that cannot be imported; nothing was written.
    #[error("{} record(s) cannot be imported; nothing was imported", .0.len())]
    Invalid(Vec<LineError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A record that passed every check, ready to write.
struct Planned {
    line: usize,
    key: ImportedKey,
    org_id: String,
}

impl<'a> Keys<'a> {
    /// The keys service outside a running server (the CLI).
    pub fn new(store: &'a Store, clock: &'a dyn Clock, config: &'a Config) -> Self {
        Self {
            store,
            clock,
            config,
        }
    }

    /// Imports `records`; `audit` starts each key's `key.imported` event (it names the
    /// actor: the operator credential, or the CLI). See the module documentation.
    pub async fn import(
        &self,
        records: Vec<ReadRecord>,
        audit: impl Fn() -> NewAudit,
    ) -> Result<ImportReport, ImportError> {
        let now = self.now();
        let mut errors = Vec::new();
        let mut planned = Vec::new();
        let mut orgs = OrgCache::default();
        for r in records {
            let record = match r.record {
                Ok(record) => record,
                Err(message) => {
                    errors.push(LineError {
                        line: r.line,
                        field: "record".into(),
                        message,
                    });
                    continue;
                }
            };
            match self.check_record(record, r.line, now, &mut orgs).await? {
                Ok(p) => planned.push(p),
                Err(mut e) => errors.append(&mut e),
            }
        }
        if !errors.is_empty() {
            return Err(ImportError::Invalid(errors));
        }

        // Already imported (by an earlier import, or earlier in this one): skipped.
        let mut report = ImportReport::default();
        let mut seen: HashMap<Vec<u8>, (usize, String)> = HashMap::new();
        let mut to_write = Vec::new();
        for p in planned {
            if let Some((line, id)) = seen.get(&p.key.import_hash) {
                report
                    .records
                    .push(skipped(p.line, id, format!("The same key as line {line}.")));
                continue;
            }
            let existing = match self.store.imported_key_id(&p.key.import_hash).await? {
                Some(id) => Some(id),
                // A plaintext record of a key Keyward already holds (its own, say).
                None if p.key.hash_scheme == HASH_SCHEME_KEYWARD => self
                    .store
                    .key_by_hash(&p.key.key.key_hash)
                    .await?
                    .map(|k| k.id),
                None => None,
            };
            if let Some(id) = existing {
                report
                    .records
                    .push(skipped(p.line, &id, "Already imported.".into()));
                continue;
            }
            seen.insert(p.key.import_hash.clone(), (p.line, p.key.key.id.clone()));
            let org_name = orgs.name(&p.org_id);
            let event = audit()
                .org(&p.org_id)
                .target("api_key", &p.key.key.id, &p.key.key.name)
                .details(json!({
                    "line": p.line,
                    "organization": org_name,
                    "environment": p.key.key.environment,
                    "scopes": super::scopes::split(&p.key.key.scopes),
                    "expires_at": p.key.key.expires_at,
                    "given_as": if p.key.hash_scheme == HASH_SCHEME_IMPORTED { "hash" } else { "key" },
                }));
            to_write.push((p.line, p.key, event));
        }
        let rows: Vec<(ImportedKey, NewAudit)> = to_write
            .iter()
            .map(|(_, k, a)| (k.clone(), a.clone()))
            .collect();
        let written = self.store.insert_imported_keys(&rows).await?;
        for ((line, key, _), done) in to_write.into_iter().zip(written) {
            if done {
                tracing::info!(event = %AuditAction::KeyImported, key_id = %key.key.id, org_id = %key.key.org_id, line, "API key imported");
                report.records.push(LineOutcome {
                    line,
                    status: "imported",
                    key_id: key.key.id,
                    reason: None,
                });
            } else {
                // Another import wrote the same key between our check and our write.
                let id = self
                    .store
                    .imported_key_id(&key.import_hash)
                    .await?
                    .unwrap_or_default();
                report.records.push(skipped(
                    line,
                    &id,
                    "Already imported (by an import running at the same time).".into(),
                ));
            }
        }
        report.records.sort_by_key(|o| o.line);
        report.imported = report
            .records
            .iter()
            .filter(|o| o.status == "imported")
            .count();
        report.skipped = report.records.len() - report.imported;
        Ok(report)
    }

    /// Checks one record with the same rules as a key created in the dashboard (name,
    /// description, scopes in the catalog, metadata, the organization's maximum lifetime),
    /// plus the import's own (the organization exists, exactly one of key/hash, …).
    async fn check_record(
        &self,
        r: ImportRecord,
        line: usize,
        now: i64,
        orgs: &mut OrgCache,
    ) -> Result<Result<Planned, Vec<LineError>>, StoreError> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: String| {
            errors.push(LineError {
                line,
                field: field.into(),
                message,
            })
        };
        let org = match (&r.org_external_id, &r.org_id) {
            (Some(ext), None) => {
                let org = orgs.by_external_id(self.store, ext).await?;
                if org.is_none() {
                    bad(
                        "org_external_id",
                        format!("No organization has the external id {ext:?}."),
                    );
                }
                org
            }
            (None, Some(id)) => {
                let org = orgs.by_id(self.store, id).await?;
                if org.is_none() {
                    bad("org_id", format!("No organization has the id {id:?}."));
                }
                org
            }
            _ => {
                bad(
                    "org_external_id",
                    "Give the organization as exactly one of org_external_id or org_id.".into(),
                );
                None
            }
        };
        let name = KeyName::parse(&r.name).map_err(|m| bad("name", m)).ok();
        let description = Description::parse(&r.description)
            .map_err(|m| bad("description", m))
            .ok();
        let environment = Environment::parse(r.environment.as_deref().unwrap_or("live"));
        if environment.is_none() {
            bad("environment", "Choose live or test.".into());
        }
        let scopes = Scopes::parse(&r.scopes, &self.config.scopes)
            .map_err(|m| bad("scopes", m))
            .ok();
        let expires_at = match r.expires_at.as_deref() {
            None => Some(None),
            Some(text) => match time::OffsetDateTime::parse(
                text,
                &time::format_description::well_known::Rfc3339,
            ) {
                Err(_) => {
                    bad(
                        "expires_at",
                        "Give the expiry as an RFC 3339 time, like 2027-01-31T00:00:00Z.".into(),
                    );
                    None
                }
                Ok(t) if t.unix_timestamp() <= now => {
                    bad(
                        "expires_at",
                        "This key has already expired; leave it out of the import.".into(),
                    );
                    None
                }
                Ok(t) => Some(Some(t.unix_timestamp())),
            },
        };
        if let (Some(org), Some(e)) = (&org, expires_at)
            && !org.lifetime.allows(e, now)
        {
            bad("expires_at", org.lifetime.message(now));
        }
        let metadata = match &r.metadata {
            None => Some(Metadata::default()),
            Some(v) => Metadata::parse(&v.to_string())
                .map_err(|m| bad("metadata", m))
                .ok(),
        };
        let prefix = r.prefix.clone().unwrap_or_default();
        if prefix.chars().count() > MAX_PREFIX || prefix.chars().any(|c| !c.is_ascii_graphic()) {
            bad(
                "prefix",
                format!("Use at most {MAX_PREFIX} printable ASCII characters, without spaces."),
            );
        }
        let own_format = |s: &str| PlainKey::claims(&self.config.key_prefix, s);
        // The secret: Keyward's hash of the key, or the imported scheme's hash of the
        // team's SHA-256; and the import fingerprint.
        let hashed = match (&r.key, &r.hash) {
            (Some(key), None) => {
                if r.last4.is_some() {
                    bad(
                        "last4",
                        "Leave last4 out of a key record: it is taken from the key.".into(),
                    );
                }
                match PlainKey::check(&self.config.key_prefix, key) {
                    _ if !plausible_foreign_key(key) => {
                        bad(
                            "key",
                            format!(
                                "A key must be 1–{} characters without spaces or control characters; this one could never be presented.",
                                super::token::MAX_FOREIGN_KEY_LEN
                            ),
                        );
                        None
                    }
                    Err(_) if own_format(key) => {
                        bad(
                            "key",
                            format!(
                                "This key starts like this deployment's own keys ({}_live_…) but is not one (its length or checksum does not match), so it could never verify: choose another KEYWARD_KEY_PREFIX.",
                                self.config.key_prefix
                            ),
                        );
                        None
                    }
                    _ => {
                        let last4 = last4_of(key);
                        if !key.starts_with(&prefix) {
                            bad("prefix", "The prefix must be the start of the key.".into());
                        } else if 2 * (prefix.chars().count() + last4.chars().count())
                            > key.chars().count()
                        {
                            bad(
                                "prefix",
                                "The prefix would show too much of the key: together with its last four characters, at most half of it may be shown.".into(),
                            );
                        }
                        let sha: [u8; 32] = Sha256::digest(key.as_bytes()).into();
                        Some((
                            KeyHash::of(key, &self.config.key_pepper),
                            HASH_SCHEME_KEYWARD,
                            KeyHash::imported(&sha, &self.config.key_pepper),
                            last4,
                        ))
                    }
                }
            }
            (None, Some(hash)) => {
                let last4 = r.last4.clone().unwrap_or_default();
                if r.last4.is_some()
                    && (last4.chars().count() != 4 || !last4.chars().all(|c| c.is_ascii_graphic()))
                {
                    bad(
                        "last4",
                        "Give exactly the key's last four characters (printable ASCII).".into(),
                    );
                }
                if own_format(&prefix) {
                    bad(
                        "prefix",
                        format!(
                            "Keys in this deployment's own format ({}_live_…) are verified by Keyward's hash only: import them with \"key\", or choose another KEYWARD_KEY_PREFIX.",
                            self.config.key_prefix
                        ),
                    );
                }
                match decode_sha256(hash) {
                    Some(sha) => {
                        let imported = KeyHash::imported(&sha, &self.config.key_pepper);
                        Some((imported.clone(), HASH_SCHEME_IMPORTED, imported, last4))
                    }
                    None => {
                        bad(
                            "hash",
                            "Give the SHA-256 of the full key as 64 hexadecimal digits.".into(),
                        );
                        None
                    }
                }
            }
            _ => {
                bad(
                    "key",
                    "Give exactly one of key (the key itself) or hash (its SHA-256 in hex).".into(),
                );
                None
            }
        };
        let (
            Some(org),
            Some(name),
            Some(description),
            Some(environment),
            Some(scopes),
            Some(expires_at),
            Some(metadata),
            Some((key_hash, scheme, import_hash, last4)),
        ) = (
            org,
            name,
            description,
            environment,
            scopes,
            expires_at,
            metadata,
            hashed,
        )
        else {
            return Ok(Err(errors));
        };
        if !errors.is_empty() {
            return Ok(Err(errors));
        }
        let key = NewKey {
            id: crate::store::new_id(),
            org_id: org.id.clone(),
            // Nobody in the organization made it: the dashboard shows it as imported.
            created_by: None,
            name: name.as_str().to_string(),
            description: description.as_str().to_string(),
            environment: environment.as_str().into(),
            key_hash: key_hash.0.to_vec(),
            display_prefix: prefix,
            last4,
            scopes: scopes.to_stored(),
            limits: KeyLimits {
                metadata: metadata.as_str().to_string(),
                ..KeyLimits::default()
            },
            created_at: now,
            expires_at,
            rolled_from: None,
            credits: None,
        };
        Ok(Ok(Planned {
            line,
            key: ImportedKey {
                key,
                hash_scheme: scheme,
                import_hash: import_hash.0.to_vec(),
            },
            org_id: org.id,
        }))
    }
}

fn skipped(line: usize, key_id: &str, reason: String) -> LineOutcome {
    LineOutcome {
        line,
        status: "skipped",
        key_id: key_id.to_string(),
        reason: Some(reason),
    }
}

/// A plaintext key's last four characters (not bytes: a key may hold any non-space
/// character), or nothing for a key too short to show them.
fn last4_of(key: &str) -> String {
    let n = key.chars().count();
    if n < MIN_LEN_FOR_LAST4 {
        return String::new();
    }
    key.chars().skip(n - 4).collect()
}

/// 64 hex digits (either case) as 32 bytes.
fn decode_sha256(hex_text: &str) -> Option<[u8; 32]> {
    if hex_text.len() != 64 {
        return None;
    }
    hex::decode(hex_text).ok()?.try_into().ok()
}

/// Organizations looked up once per import.
#[derive(Default)]
struct OrgCache {
    by_external: HashMap<String, Option<Org>>,
    by_id: HashMap<String, Option<Org>>,
}

impl OrgCache {
    async fn by_external_id(
        &mut self,
        store: &Store,
        ext: &str,
    ) -> Result<Option<Org>, StoreError> {
        if let Some(o) = self.by_external.get(ext) {
            return Ok(o.clone());
        }
        // Nor do external ids (and Postgres refuses NUL in text).
        let o = if ext.chars().any(char::is_control) {
            None
        } else {
            store.org_by_external_id(ext).await?
        };
        if let Some(org) = &o {
            self.by_id.insert(org.id.clone(), o.clone());
        }
        self.by_external.insert(ext.to_string(), o.clone());
        Ok(o)
    }

    async fn by_id(&mut self, store: &Store, id: &str) -> Result<Option<Org>, StoreError> {
        if let Some(o) = self.by_id.get(id) {
            return Ok(o.clone());
        }
        // Ids never hold control characters; don't send such input to the database.
        let o = if id.chars().any(char::is_control) {
            None
        } else {
            store.org(id).await?
        };
        self.by_id.insert(id.to_string(), o.clone());
        Ok(o)
    }

    fn name(&self, org_id: &str) -> String {
        self.by_id
            .get(org_id)
            .and_then(|o| o.as_ref())
            .map(|o| o.name.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_numbered_and_blank_lines_skipped() {
        let text = "{\"name\": \"a\"}\n\n{not json}\n";
        let read = read_json_lines(text);
        assert_eq!(read.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 3]);
        assert!(read[0].record.is_ok());
        assert!(read[1].record.is_err());
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let read = read_json_lines("{\"name\": \"a\", \"org\": \"x\"}");
        let msg = read[0].record.as_ref().unwrap_err();
        assert!(msg.contains("unknown field `org`"), "{msg}");
    }

    #[test]
    fn a_record_never_prints_its_key() {
        let read = read_json_lines("{\"name\": \"a\", \"key\": \"sk_live_secret123\"}");
        let debug = format!("{:?}", read[0].record.as_ref().unwrap());
        assert!(!debug.contains("secret123"), "{debug}");
    }

    #[test]
    fn last4_counts_characters_not_bytes() {
        assert_eq!(last4_of("sk_live_abcdefghijkl"), "ijkl");
        assert_eq!(last4_of("ключ-ключ-ключ-ключ"), "ключ");
        assert_eq!(last4_of("short"), "");
    }

    #[test]
    fn sha256_must_be_64_hex_digits() {
        assert!(decode_sha256(&"ab".repeat(32)).is_some());
        assert!(decode_sha256(&"AB".repeat(32)).is_some());
        assert!(decode_sha256(&"ab".repeat(31)).is_none());
        assert!(decode_sha256(&"zz".repeat(32)).is_none());
    }
}
