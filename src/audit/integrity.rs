//! Checking the audit log against its chain and checkpoints (`keyward audit verify`), and
//! the job that signs checkpoints (hourly, and `keyward audit checkpoint`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use super::chain::{AuditPublicKey, AuditSigningKey, GENESIS, row_hash};
use crate::{
    clock::Clock,
    store::{ChainHead, Checkpoint, Store},
};

/// A chain that has advanced is signed again once its last checkpoint is this old.
pub const CHECKPOINT_INTERVAL: i64 = 3600;

/// Rows read per query while verifying.
const PAGE: i64 = 5000;

/// Signs chain heads. Holds only what it uses, not the HTTP state.
#[derive(Clone)]
pub struct Checkpoints {
    store: Store,
    clock: Arc<dyn Clock>,
    key: Arc<AuditSigningKey>,
}

impl crate::state::Inner {
    pub fn audit_checkpoints(&self) -> Checkpoints {
        Checkpoints::new(
            self.store.clone(),
            self.clock.clone(),
            self.config.audit_signing_key.clone(),
        )
    }
}

impl Checkpoints {
    pub fn new(store: Store, clock: Arc<dyn Clock>, key: AuditSigningKey) -> Self {
        Self {
            store,
            clock,
            key: Arc::new(key),
        }
    }

    /// Signs the head of every chain (or of `only`) that advanced since its last
    /// checkpoint; returns how many checkpoints were written.
    pub async fn checkpoint_now(&self, only: Option<&str>) -> anyhow::Result<usize> {
        self.sign(only, |_| true).await
    }

    /// One periodic pass: signs the heads that advanced and whose last checkpoint is at
    /// least [`CHECKPOINT_INTERVAL`] old (or that never had one).
    pub async fn run(&self) -> anyhow::Result<usize> {
        let now = self.clock.unix();
        self.sign(None, |last| {
            last.is_none_or(|t| t <= now - CHECKPOINT_INTERVAL)
        })
        .await
    }

    async fn sign(
        &self,
        only: Option<&str>,
        due: impl Fn(Option<i64>) -> bool,
    ) -> anyhow::Result<usize> {
        let now = self.clock.unix();
        let key_id = self.key.public().id();
        let mut written = 0;
        for (head, last) in self.store.audit_heads_to_checkpoint(only).await? {
            if !due(last) {
                continue;
            }
            let signature = self.key.sign(&head.chain, head.seq, &head.hash, now);
            if self
                .store
                .insert_audit_checkpoint(&head, now, &key_id, &signature)
                .await?
            {
                written += 1;
            }
        }
        Ok(written)
    }

    /// Runs [`Checkpoints::run`] every minute until the process ends.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.run().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(checkpoints = n, "signed audit checkpoints"),
                    Err(e) => tracing::warn!(error = %e, "audit checkpoints"),
                }
            }
        })
    }
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The organization id, `""` for account events.
    pub chain: String,
    /// The first row concerned (by id), when the finding is about rows.
    pub row_id: Option<i64>,
    pub message: String,
}

/// What `keyward audit verify` found.
#[derive(Debug, Default)]
pub struct Report {
    pub chains: usize,
    pub rows: u64,
    /// Checkpoints whose signature verified.
    pub checkpoints: usize,
    /// At most one row finding per chain (the first; later ones would follow from it),
    /// plus every checkpoint that fails.
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }

    /// The finding naming the smallest row id (the first bad row), else the first one.
    pub fn first(&self) -> Option<&Finding> {
        self.findings
            .iter()
            .filter(|f| f.row_id.is_some())
            .min_by_key(|f| f.row_id)
            .or(self.findings.first())
    }
}

fn chain_name(chain: &str) -> String {
    if chain.is_empty() {
        "account events (no organization)".into()
    } else {
        format!("organization {chain}")
    }
}

fn when(t: i64) -> String {
    crate::templates::exact_utc(crate::clock::from_unix(t))
}

/// Walks every chain (or `only`'s) and its checkpoints. `keys` are the public keys
/// checkpoints may be signed with.
pub async fn verify(
    store: &Store,
    keys: &[AuditPublicKey],
    only: Option<&str>,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    if let Some(id) = store.first_unchained_audit(only).await? {
        report.findings.push(Finding {
            chain: String::new(),
            row_id: Some(id),
            message: format!(
                "row {id} was inserted behind Keyward's back: it has no place in any chain"
            ),
        });
    }
    let keys: HashMap<String, &AuditPublicKey> = keys.iter().map(|k| (k.id(), k)).collect();
    let mut checkpoints: HashMap<String, Vec<Checkpoint>> = HashMap::new();
    for cp in store.audit_checkpoints(only).await? {
        checkpoints.entry(cp.chain.clone()).or_default().push(cp);
    }
    for head in store.audit_chain_heads(only).await? {
        report.chains += 1;
        let cps = checkpoints.remove(&head.chain).unwrap_or_default();
        verify_chain(store, &head, cps, &keys, &mut report).await?;
    }
    // Checkpoints of a chain whose head is gone: the whole chain was removed.
    for (chain, cps) in checkpoints {
        if let Some(cp) = cps.iter().max_by_key(|c| c.seq) {
            report.findings.push(Finding {
                message: format!(
                    "{}: the chain head was removed, but checkpoint #{} (signed {}) vouches for {} rows",
                    chain_name(&chain),
                    cp.id,
                    when(cp.signed_at),
                    cp.seq
                ),
                chain,
                row_id: None,
            });
        }
    }
    Ok(report)
}

async fn verify_chain(
    store: &Store,
    head: &ChainHead,
    cps: Vec<Checkpoint>,
    keys: &HashMap<String, &AuditPublicKey>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let name = chain_name(&head.chain);
    let finding = |row_id: Option<i64>, message: String| Finding {
        chain: head.chain.clone(),
        row_id,
        message: format!("{name}: {message}"),
    };
    // Only checkpoints whose signature holds vouch for anything.
    let mut vouched: BTreeMap<i64, Vec<Checkpoint>> = BTreeMap::new();
    for cp in cps {
        match keys.get(&cp.key_id) {
            None => report.findings.push(finding(
                None,
                format!(
                    "checkpoint #{} is signed by an unknown key {} (pass its public key with --public-key)",
                    cp.id, cp.key_id
                ),
            )),
            Some(key) if !key.verifies(&cp.chain, cp.seq, &cp.head_hash, cp.signed_at, &cp.signature) => {
                report.findings.push(finding(
                    None,
                    format!(
                        "checkpoint #{} (position {}) has a signature that does not verify: it was forged or changed",
                        cp.id, cp.seq
                    ),
                ));
            }
            Some(_) => {
                report.checkpoints += 1;
                vouched.entry(cp.seq).or_default().push(cp);
            }
        }
    }

    let mut expected = 1i64;
    let mut prev = GENESIS.to_string();
    let mut last_id: Option<i64> = None;
    // The first row after the last position a checkpoint confirmed (where a rewrite that
    // recomputed every hash may have started).
    let mut unvouched_from: Option<i64> = None;
    let mut after = (0i64, 0i64);
    loop {
        let rows = store.audit_chain_rows(&head.chain, after, PAGE).await?;
        for row in &rows {
            let seq = row.chain_seq.unwrap_or_default();
            after = (seq, row.id);
            if seq < expected {
                report.findings.push(finding(
                    Some(row.id),
                    format!(
                        "row {} was inserted: position {seq} already belongs to an earlier row",
                        row.id
                    ),
                ));
                return Ok(());
            }
            if seq > expected {
                let between = match last_id {
                    Some(l) => format!("between row {l} and row {}", row.id),
                    None => format!("before row {}", row.id),
                };
                let positions = if seq - 1 == expected {
                    format!("the row at position {expected} was")
                } else {
                    format!("rows at positions {expected}–{} were", seq - 1)
                };
                report.findings.push(finding(
                    Some(row.id),
                    format!("{positions} removed ({between})"),
                ));
                return Ok(());
            }
            if seq > head.seq {
                report.findings.push(finding(
                    Some(row.id),
                    format!(
                        "row {} was inserted: its position {seq} is past the chain head ({})",
                        row.id, head.seq
                    ),
                ));
                return Ok(());
            }
            let hash = row_hash(row.into(), seq, &prev);
            if row.chain_hash.as_deref() != Some(hash.as_str()) {
                report.findings.push(finding(
                    Some(row.id),
                    format!(
                        "row {} (position {seq}) was changed: it no longer matches its hash",
                        row.id
                    ),
                ));
                return Ok(());
            }
            if unvouched_from.is_none() {
                unvouched_from = Some(row.id);
            }
            for cp in vouched.get(&seq).into_iter().flatten() {
                if cp.head_hash != hash {
                    let since = unvouched_from.unwrap_or(row.id);
                    report.findings.push(finding(
                        Some(since),
                        format!(
                            "checkpoint #{} (signed {}) vouches for another row at position {seq}: \
                             the log was rewritten between row {since} and row {} (hashes recomputed)",
                            cp.id,
                            when(cp.signed_at),
                            row.id
                        ),
                    ));
                    return Ok(());
                }
                unvouched_from = None;
            }
            prev = hash;
            expected += 1;
            last_id = Some(row.id);
            report.rows += 1;
        }
        if (rows.len() as i64) < PAGE {
            break;
        }
    }
    let last = expected - 1;
    let after_last = match last_id {
        Some(id) => format!("after row {id} (position {last})"),
        None => "(all of them)".into(),
    };
    if let Some((seq, cp)) = vouched
        .range(last + 1..)
        .next_back()
        .and_then(|(s, c)| c.first().map(|c| (*s, c)))
    {
        report.findings.push(finding(
            last_id,
            format!(
                "rows {after_last} were removed: checkpoint #{} (signed {}) vouches for {seq} rows",
                cp.id,
                when(cp.signed_at)
            ),
        ));
    } else if head.seq > last {
        report.findings.push(finding(
            last_id,
            format!(
                "rows {after_last} were removed: the chain head is at position {}",
                head.seq
            ),
        ));
    } else if head.hash != prev {
        report.findings.push(finding(
            last_id,
            format!(
                "the chain head does not match its last row {after_last}: the head or the row was rewritten"
            ),
        ));
    }
    Ok(())
}
