//! A small axum API protected in-process by Keyward keys: the service opens a `Verifier`
//! on the same database as the Keyward server and guards routes with `RequireKey`.
//!
//! ```sh
//! # with a Keyward server's database and secrets file in the current directory:
//! cargo run --example protected_api
//! curl -H "Authorization: Bearer kw_live_…" http://127.0.0.1:3000/reports
//! ```
//!
//! Environment: `DATABASE_URL` (default `sqlite://keyward.db`), `KEYWARD_KEY_PEPPER` or
//! `KEYWARD_SECRETS_FILE` (default `keyward.secrets`), `KEYWARD_KEY_PREFIX` (default `kw`),
//! `EXAMPLE_BIND` (default `127.0.0.1:3000`).

use axum::{
    Json, Router,
    routing::{get, post},
};
use keyward::{
    Verifier,
    verify::layer::{RequireKey, VerifiedKey},
};
use serde_json::{Value, json};

/// The example API: reading needs `read`, writing needs `write`, health needs nothing.
pub fn app(verifier: Verifier) -> Router {
    Router::new()
        .route(
            "/reports",
            get(list_reports).layer(RequireKey::new(verifier.clone()).scopes(["read"])),
        )
        .route(
            "/reports",
            post(upload_report).layer(RequireKey::new(verifier).scopes(["write"])),
        )
        .route("/health", get(|| async { "ok" }))
}

async fn list_reports(key: VerifiedKey) -> Json<Value> {
    Json(json!({ "org": key.org_id, "key": key.name, "reports": ["2026-10", "2026-11"] }))
}

async fn upload_report(key: VerifiedKey) -> Json<Value> {
    Json(json!({ "stored_for": key.org_id }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use clap::Parser;
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        store: keyward::config::StoreArgs,
        #[arg(long, env = "KEYWARD_KEY_PREFIX", default_value = "kw")]
        key_prefix: String,
        #[arg(long, env = "EXAMPLE_BIND", default_value = "127.0.0.1:3000")]
        bind: std::net::SocketAddr,
    }
    tracing_subscriber::fmt().init();
    let args = Args::parse();
    let pepper = keyward::config::load_pepper(&args.store)?;
    let verifier = Verifier::open(&args.store.database_url, &args.key_prefix, pepper).await?;
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    println!("example API on http://{}", listener.local_addr()?);
    axum::serve(listener, app(verifier)).await?;
    Ok(())
}
