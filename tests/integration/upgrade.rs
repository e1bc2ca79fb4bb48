//! Upgrades (issue 15 §5, SECURITY.md R6): a database made by the previous release's
//! migrations, holding that release's kind of data, is migrated forward by the current
//! binary on both backends, and its users, keys and audit log work as before.
//!
//! "Previous release": there are no release tags yet, so it is the migration set of commit
//! 251dd69 (2026-11-23, migrations 0001–0008), the last state before the December changes
//! (own session table, email ownership, two-step verification, key policy, credits). Its
//! migration files are kept verbatim in `tests/fixtures/release-251dd69/` (from
//! `git show 251dd69:migrations/…`): had a released migration been edited since, sqlx would
//! refuse to upgrade (checksum mismatch) and this test would fail. For the next release,
//! add its set beside this one and run the same checks on it.

use std::path::Path;

use keyward::{
    config::KeyPepper,
    keys::token::{Environment, PlainKey},
    store::StoreOptions,
};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::json;
use sqlx::migrate::Migrator;

use crate::helpers::{Backend, EmptyDb, PASSWORD, TestApp};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/release-251dd69"
);

/// What the old release's database holds, as the old release wrote it.
struct OldData {
    user_id: String,
    org_id: String,
    key_id: String,
    key: String,
    audit: Vec<(String, String, String)>,
}

/// Inserts a user with a password, their personal organization, a key with a rate limit
/// and its usage, and audit rows — in the old schema's columns only. One text for both
/// backends (the schema's conventions make `$N` statements portable).
macro_rules! seed {
    ($pool:expr, $d:expr, $hash:expr, $key_hash:expr, $now:expr) => {{
        let (pool, d, now) = ($pool, $d, $now);
        sqlx::query(
            "INSERT INTO users (id, email, name, password_hash, created_at, session_epoch) \
             VALUES ($1, 'veteran@example.com', 'Vera', $2, $3, 0)",
        )
        .bind(&d.user_id)
        .bind($hash)
        .bind(now - 86_400)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO organizations (id, name, personal, created_by, created_at) \
             VALUES ($1, 'Vera''s organization', $2, $3, $4)",
        )
        .bind(&d.org_id)
        // BOOLEAN on Postgres, INTEGER 0/1 on SQLite: a bound bool is either.
        .bind(true)
        .bind(&d.user_id)
        .bind(now - 86_400)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, 'owner', $3)",
        )
        .bind(&d.org_id)
        .bind(&d.user_id)
        .bind(now - 86_400)
        .execute(pool)
        .await
        .unwrap();
        let plain = PlainKey::parse("kw", &d.key).unwrap().0;
        sqlx::query(
            "INSERT INTO api_keys (id, org_id, created_by, name, name_lower, environment, key_hash, \
             display_prefix, last4, scopes, metadata, created_at, updated_at, expires_at, \
             rate_limit, rate_window_secs) \
             VALUES ($1, $2, $3, 'Billing Service', 'billing service', 'live', $4, $5, $6, 'read', \
             '{\"team\":\"billing\"}', $7, $7, $8, 100, 60)",
        )
        .bind(&d.key_id)
        .bind(&d.org_id)
        .bind(&d.user_id)
        .bind($key_hash)
        .bind(plain.display_prefix())
        .bind(plain.last4())
        .bind(now - 3_600)
        .bind(now + 30 * 86_400)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO key_usage_daily (key_id, day, count) VALUES ($1, $2, 42)")
            .bind(&d.key_id)
            .bind(now / 86_400)
            .execute(pool)
            .await
            .unwrap();
        for (action, target, details) in &d.audit {
            sqlx::query(
                "INSERT INTO audit_events (occurred_at, org_id, actor_id, actor_email, action, \
                 target_type, target_id, target_name, ip, user_agent, details) \
                 VALUES ($1, $2, $3, 'veteran@example.com', $4, 'api_key', $5, 'Billing Service', \
                 '203.0.113.7', 'old-browser/1.0', $6)",
            )
            .bind(now - 3_600)
            .bind(&d.org_id)
            .bind(&d.user_id)
            .bind(action)
            .bind(target)
            .bind(details)
            .execute(pool)
            .await
            .unwrap();
        }
    }};
}

/// Applies the previous release's migrations to a fresh database and fills it.
async fn old_release_database(
    backend: Backend,
    pepper: &KeyPepper,
    now: i64,
) -> Option<(EmptyDb, OldData)> {
    let db = EmptyDb::create(backend).await?;
    let key = PlainKey::generate("kw", Environment::Live).unwrap();
    let key_id = uuid::Uuid::new_v4().to_string();
    let d = OldData {
        user_id: uuid::Uuid::new_v4().to_string(),
        org_id: uuid::Uuid::new_v4().to_string(),
        audit: vec![
            (
                "key.created".into(),
                key_id.clone(),
                r#"{"scopes":["read"]}"#.into(),
            ),
            (
                "key.updated".into(),
                key_id.clone(),
                r#"{"name":["Billing","Billing Service"]}"#.into(),
            ),
        ],
        key_id,
        key: key.expose().to_string(),
    };
    let hash = keyward::auth::password::Passwords::new()
        .unwrap()
        .hash(&SecretString::from(PASSWORD))
        .await
        .unwrap();
    let key_hash = key.hash(pepper).0.to_vec();
    let dir = Path::new(FIXTURE).join(match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    });
    let old = Migrator::new(dir).await.unwrap();
    assert_eq!(
        old.iter().count(),
        8,
        "the fixture holds the previous release's set"
    );
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&format!("{}?mode=rwc", db.url))
                .await
                .unwrap();
            old.run(&pool).await.unwrap();
            seed!(&pool, &d, &hash, &key_hash, now);
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            old.run(&pool).await.unwrap();
            seed!(&pool, &d, &hash, &key_hash, now);
            pool.close().await;
        }
    }
    Some((db, d))
}

/// The audit rows' contents, oldest first (the columns both releases have).
async fn audit_rows(app: &TestApp) -> Vec<String> {
    let sql = "SELECT CAST(id AS TEXT) || '|' || CAST(occurred_at AS TEXT) || '|' || action || '|' \
               || target_id || '|' || actor_email || '|' || ip || '|' || user_agent || '|' || details \
               FROM audit_events ORDER BY id";
    match app.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.db_url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&app.db_url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
        }
    }
}

async fn previous_release_upgrades(backend: Backend) {
    let pepper = keyward::config::Config::for_tests("http://unused", [42u8; 32]).key_pepper;
    let now = keyward::clock::Clock::unix(&keyward::clock::SystemClock);
    let Some((db, old)) = old_release_database(backend, &pepper, now).await else {
        return;
    };
    // The current server starts on it: it migrates forward (0009 onwards) as `serve` does.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = TestApp::spawn_on_db(db, listener, StoreOptions::default(), |_| {}).await;

    // The key verifies, with its scopes, metadata and limit.
    let (s, body) = app.verify_api(json!({ "key": old.key })).await;
    assert_eq!(
        (s, body["valid"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{body}"
    );
    assert_eq!(body["key_id"], old.key_id.as_str(), "{body}");
    assert_eq!(body["scopes"], json!(["read"]), "{body}");
    assert_eq!(body["metadata"]["team"], "billing", "{body}");

    // The user signs in with the old password and sees the key.
    let mut b = app.browser();
    let res = b.sign_in("veteran@example.com", PASSWORD).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let page = b.get("/settings/api-keys").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.shows("Billing Service"), "{}", page.body);
    let page = b.get(&format!("/settings/api-keys/{}", old.key_id)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.shows("Billing Service"));

    // The old audit rows are unchanged and first; new events follow them.
    let rows = audit_rows(&app).await;
    assert!(rows.len() >= old.audit.len());
    for (row, (action, target, details)) in rows.iter().zip(&old.audit) {
        let want =
            format!("{action}|{target}|veteran@example.com|203.0.113.7|old-browser/1.0|{details}");
        assert!(row.ends_with(&want), "{row} vs {want}");
        assert!(row.contains(&format!("|{}|", now - 3_600)), "{row}");
    }
    // The org is still the user's, as owner.
    let memberships = app.store.memberships(&old.user_id).await.unwrap();
    assert_eq!(memberships.len(), 1);
    assert_eq!(memberships[0].org_id, old.org_id);
}

/// `previous_release_schema_migrates_forward::{sqlite,postgres}`.
mod previous_release_schema_migrates_forward {
    use super::{Backend, previous_release_upgrades};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        previous_release_upgrades(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        previous_release_upgrades(Backend::Postgres).await;
    }
}
