//! `POST /api/v1/keys/import`: the operator door onto key import (`crate::keys::import`,
//! shared with `keyward keys import`).
//!
//! The body is JSON Lines (`Content-Type: application/x-ndjson`, also `application/jsonl`):
//! one record per line, errors numbered by line; or a JSON array of records
//! (`application/json`), numbered by position. All or nothing: 200 with what was imported
//! and skipped, or 422 `invalid_records` with every bad record's line, and nothing written.

use axum::{
    Json,
    body::Bytes,
    extract::{DefaultBodyLimit, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, ApiResult, Data, ErrorBody, data, operator::Operator};
use crate::{
    audit::AuditAction,
    keys::import::{
        ImportError, ImportRecord, ImportReport, LineError, read_array, read_json_lines,
    },
    state::AppState,
};

/// The largest body accepted (larger imports: split the file, or use the CLI).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// The most records accepted in one request.
pub const MAX_RECORDS: usize = 10_000;

/// `{"error": {"code": "invalid_records", "message", "lines": [{line, field, message}]}}`
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportErrorBody {
    pub error: ImportErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportErrorDetail {
    /// `invalid_records`
    pub code: String,
    pub message: String,
    /// Every problem of every bad record.
    pub lines: Vec<LineError>,
}

/// The body limit of this route (the default is smaller than a real import).
pub fn body_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(MAX_BODY)
}

/// Import keys the team issued before Keyward, so its customers keep using them.
///
/// Records: `{"org_external_id" | "org_id", "name", "key" | "hash", "prefix", "last4",
/// "scopes", "expires_at", "metadata", "description", "environment"}`. `key` is the key
/// itself (hashed on the way in, never stored); `hash` its SHA-256 in hex. Send JSON Lines
/// as `application/x-ndjson`, or a JSON array as `application/json`. A key already imported
/// is skipped, not an error. If any record is wrong, nothing is imported and the answer
/// (422) lists each wrong record by line.
#[utoipa::path(post, path = "/api/v1/keys/import", tag = "operator",
    request_body(content = Vec<ImportRecord>, content_type = "application/json",
        description = "A JSON array of records; JSON Lines (`application/x-ndjson`) is accepted too"),
    responses(
        (status = 200, body = Data<ImportReport>, description = "Imported (and skipped) records"),
        (status = 400, body = ErrorBody, description = "The body is not JSON Lines or a JSON array, or holds no records"),
        (status = 401, body = ErrorBody, description = "No operator credential"),
        (status = 413, body = ErrorBody, description = "More than 10,000 records or 16 MiB"),
        (status = 415, body = ErrorBody, description = "Neither application/json nor application/x-ndjson"),
        (status = 422, body = ImportErrorBody, description = "`invalid_records`: nothing was imported; `lines` says what is wrong where"),
    ),
    security(("operator" = [])))]
pub async fn import(
    State(state): State<AppState>,
    operator: Operator,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body.map_err(|e| {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "bad_request"
        };
        ApiError::Status(status, code, e.body_text())
    })?;
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let records = match content_type.as_str() {
        "application/json" => {
            let values: Vec<serde_json::Value> = serde_json::from_slice(&body).map_err(|e| {
                ApiError::bad_request(format!(
                    "The body must be a JSON array of records ({e}); for JSON Lines send Content-Type: application/x-ndjson."
                ))
            })?;
            read_array(values)
        }
        "application/x-ndjson" | "application/jsonl" | "application/json-lines" => {
            let text = std::str::from_utf8(&body)
                .map_err(|_| ApiError::bad_request("The body is not UTF-8 text."))?;
            read_json_lines(text)
        }
        _ => {
            return Err(ApiError::Status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send JSON Lines (Content-Type: application/x-ndjson) or a JSON array (application/json).".into(),
            ));
        }
    };
    if records.is_empty() {
        return Err(ApiError::bad_request("The body holds no records."));
    }
    if records.len() > MAX_RECORDS {
        return Err(ApiError::Status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "At most {MAX_RECORDS} records per request ({} sent): split the file, or use `keyward keys import`.",
                records.len()
            ),
        ));
    }
    let now = state.clock.unix();
    let keys = state.keys();
    match keys
        .import(records, || operator.audit(AuditAction::KeyImported, now))
        .await
    {
        Ok(report) => Ok(data(StatusCode::OK, report)),
        Err(ImportError::Invalid(lines)) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(ImportErrorBody {
                error: ImportErrorDetail {
                    code: "invalid_records".into(),
                    message: format!(
                        "{} problem(s) in the records; nothing was imported. Fix them and send the whole file again (keys already imported are skipped).",
                        lines.len()
                    ),
                    lines,
                },
            }),
        )
            .into_response()),
        Err(ImportError::Store(e)) => Err(e.into()),
    }
}
