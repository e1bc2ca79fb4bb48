//! Leaked-key reporting, compatible with GitHub's secret-scanning partner program.
//!
//! GitHub POSTs `[{"token", "type", "url", "source"}]` to `/v1/leaks/github`, signed with
//! ECDSA P-256 / SHA-256: `Github-Public-Key-Identifier` names the key,
//! `Github-Public-Key-Signature` holds the base64 DER signature of the raw body. The
//! operator configures GitHub's public keys (`KEYWARD_LEAK_REPORT_KEYS_FILE`, the JSON
//! GitHub publishes at `https://api.github.com/meta/public_keys/secret_scanning`). Each
//! reported token that is one of our keys is revoked (or, with `KEYWARD_LEAK_ACTION=notify`,
//! only reported), recorded as `key.leaked` (which webhooks subscribe to), and the
//! organization's admins are emailed. The answer is GitHub's format:
//! `[{"token_raw", "token_type", "label": "true_positive" | "false_positive"}]`.

use crate::audit::AuditAction;
use std::path::Path;

use anyhow::{Context, bail};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use p256::{
    ecdsa::{Signature, VerifyingKey, signature::Verifier},
    pkcs8::DecodePublicKey,
};
use serde::{Deserialize, Serialize};

use crate::{
    error::Result,
    keys::token::PlainKey,
    state::AppState,
    store::{ApiKey, NewAudit},
};

/// Largest report accepted.
const MAX_BODY: usize = 1024 * 1024;
/// Tokens per report.
const MAX_TOKENS: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/leaks/github", post(github))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// What to do with a key reported as leaked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LeakAction {
    /// Revoke it at once (recommended: a leaked key is public).
    Revoke,
    /// Only record and announce it; a person decides.
    Notify,
}

/// A public key GitHub signs reports with.
#[derive(Clone)]
pub struct ReportKey {
    pub id: String,
    pub key: VerifyingKey,
}

impl std::fmt::Debug for ReportKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportKey").field("id", &self.id).finish()
    }
}

#[derive(Deserialize)]
struct KeysFile {
    public_keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
struct KeyEntry {
    key_identifier: String,
    key: String,
}

/// Reads GitHub's `public_keys` JSON.
pub fn load_keys(path: &Path) -> anyhow::Result<Vec<ReportKey>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading leak report keys {}", path.display()))?;
    parse_keys(&text).with_context(|| format!("leak report keys {}", path.display()))
}

pub fn parse_keys(json: &str) -> anyhow::Result<Vec<ReportKey>> {
    let file: KeysFile = serde_json::from_str(json)?;
    if file.public_keys.is_empty() {
        bail!("no public_keys");
    }
    file.public_keys
        .into_iter()
        .map(|e| {
            Ok(ReportKey {
                key: VerifyingKey::from_public_key_pem(&e.key).with_context(|| {
                    format!("key {} is not a P-256 public key", e.key_identifier)
                })?,
                id: e.key_identifier,
            })
        })
        .collect()
}

#[derive(Deserialize)]
struct Reported {
    token: String,
    #[serde(default, rename = "type")]
    token_type: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    source: String,
}

#[derive(Serialize)]
struct Answer {
    token_raw: String,
    token_type: String,
    label: &'static str,
}

fn refuse(status: StatusCode, code: &'static str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

/// Checks the report's signature against the configured keys.
fn signed(state: &AppState, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(sig)) = (
        header("github-public-key-identifier"),
        header("github-public-key-signature"),
    ) else {
        return false;
    };
    let Some(key) = state.config.leak_report_keys.iter().find(|k| k.id == id) else {
        return false;
    };
    let Ok(der) = B64.decode(sig.trim()) else {
        return false;
    };
    let Ok(sig) = Signature::from_der(&der) else {
        return false;
    };
    key.key.verify(body, &sig).is_ok()
}

async fn github(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    if state.config.leak_report_keys.is_empty() {
        return Ok(refuse(
            StatusCode::NOT_FOUND,
            "not_configured",
            "Leak reporting is not configured on this Keyward (KEYWARD_LEAK_REPORT_KEYS_FILE).",
        ));
    }
    if !signed(&state, &headers, &body) {
        tracing::warn!(
            event = "leak_report.bad_signature",
            "leak report with a missing or bad signature"
        );
        return Ok(refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "The report's signature does not verify against the configured public keys.",
        ));
    }
    let reports: Vec<Reported> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return Ok(refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                &format!(
                    "Expected a JSON array of {{\"token\", \"type\", \"url\", \"source\"}}: {e}"
                ),
            ));
        }
    };
    if reports.len() > MAX_TOKENS {
        return Ok(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_tokens",
            &format!("At most {MAX_TOKENS} tokens per report."),
        ));
    }
    let mut answers = Vec::with_capacity(reports.len());
    for r in reports {
        let key = match PlainKey::parse(&state.config.key_prefix, r.token.trim()) {
            Ok((plain, _)) => {
                let hash = plain.hash(&state.config.key_pepper);
                state.store.key_by_hash(&hash.0).await?
            }
            Err(_) => None,
        };
        let label = match key {
            Some(k) => {
                handle_leak(&state, &k, &r).await?;
                "true_positive"
            }
            None => "false_positive",
        };
        answers.push(Answer {
            token_raw: r.token,
            token_type: r.token_type,
            label,
        });
    }
    Ok(Json(answers).into_response())
}

/// Records, revokes (unless configured to only notify), and tells the organization.
async fn handle_leak(state: &AppState, key: &ApiKey, r: &Reported) -> Result<()> {
    let now = state.clock.unix();
    let revoke = state.config.leak_action == LeakAction::Revoke;
    let active = key.revoked_at.is_none_or(|t| t > now);
    let leaked = NewAudit::new(AuditAction::KeyLeaked, now)
        .org(&key.org_id)
        .actor(None, "GitHub secret scanning")
        .target("api_key", &key.id, &key.name)
        .details(serde_json::json!({
            "url": r.url,
            "source": r.source,
            "type": r.token_type,
            "action": if revoke && active { "revoked" } else { "notified" },
        }));
    let revoked_audit = NewAudit::new(AuditAction::KeyRevoked, now)
        .org(&key.org_id)
        .actor(None, "GitHub secret scanning")
        .target("api_key", &key.id, &key.name)
        .details(serde_json::json!({ "reason": "leaked", "url": r.url }));
    // The report and the revocation are one transaction: GitHub retries a failed report,
    // and a retry must not find half of it done.
    state
        .store
        .report_leaked_key(
            key,
            now,
            &leaked,
            (revoke && active).then_some(&revoked_audit),
        )
        .await?;
    tracing::warn!(event = %AuditAction::KeyLeaked, key_id = %key.id, org_id = %key.org_id, revoked = revoke && active, "API key reported as leaked");
    let subject = format!("API key “{}” was found in public", key.name);
    let what = if revoke && active {
        format!(
            "{} revoked it: requests using it are refused from now on. Create or roll a key to replace it.",
            state.config.branding.product_name
        )
    } else if active {
        "It still works. Revoke or roll it now unless you are sure the exposure is harmless.".into()
    } else {
        "It was already revoked.".into()
    };
    let body = format!(
        "GitHub secret scanning reported the API key “{}” ({}…{}) at:\n{}\n\n{what}\n\n{}/settings/api-keys/{}\n",
        key.name, key.display_prefix, key.last4, r.url, state.config.base_url, key.id
    );
    let members = state.store.members(&key.org_id).await?;
    for m in members
        .iter()
        .filter(|m| m.role == "owner" || m.role == "admin")
    {
        state.mailer.send(&m.email, &subject, &body).await;
    }
    Ok(())
}
