//! Backups (issue 15 §5): `keyward backup PATH` copies a live SQLite store while the server
//! keeps writing; the copy, restored into a fresh server, holds the keys, the sessions and
//! the audit log exactly as they were at one moment.

use std::{
    collections::BTreeSet,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use keyward::store::StoreOptions;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::{Row, SqlitePool};

use crate::{
    api::{allow_key_minting, dashboard_key},
    helpers::{Backend, EmptyDb, TestApp},
};

/// Runs `keyward backup` as the operator would: (success, stdout + stderr).
async fn keyward_backup(database_url: &str, path: &Path) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("backup")
        .arg(path)
        .env("DATABASE_URL", database_url)
        .env("KEYWARD_SECRETS_FILE", path.with_extension("secrets"))
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every audit row, every column, as text, in id order.
async fn audit_rows(pool: &SqlitePool) -> Vec<String> {
    sqlx::query(
        "SELECT id, occurred_at, org_id, actor_id, actor_email, action, target_type, target_id, \
         target_name, ip, user_agent, details FROM audit_events ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (0..r.len())
            .map(|i| {
                r.try_get::<Option<String>, _>(i)
                    .ok()
                    .flatten()
                    .or_else(|| {
                        r.try_get::<Option<i64>, _>(i)
                            .ok()
                            .flatten()
                            .map(|n| n.to_string())
                    })
                    .unwrap_or_else(|| "NULL".into())
            })
            .collect::<Vec<_>>()
            .join("|")
    })
    .collect()
}

async fn ids(pool: &SqlitePool, sql: &str) -> BTreeSet<String> {
    sqlx::query_scalar(sql)
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_restores_keys_sessions_and_audit_log() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let mut b = app.signed_up("backup@example.com").await;
    allow_key_minting(&mut b, true).await;
    let (_, mgmt) = dashboard_key(&mut b, "automation", &["read", "keys:write"], &[]).await;
    let (_, before) = b.new_key("made before the backup").await;

    // Write load: keys created through the management API (a key row and its audit row
    // per request, in one transaction) until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, made, base, mgmt) = (stop.clone(), made.clone(), app.base.clone(), mgmt.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let n = made.load(Ordering::Relaxed);
                let res = client
                    .post(format!("{base}/api/v1/keys"))
                    .bearer_auth(&mgmt)
                    .json(&json!({ "name": format!("load {n}"), "environment": "live", "scopes": ["read"] }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    res.status(),
                    StatusCode::CREATED,
                    "{}",
                    res.text().await.unwrap()
                );
                made.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while made.load(Ordering::Relaxed) < 5 {
        assert!(Instant::now() < deadline, "the write load did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let dir = std::env::temp_dir().join(format!("kw-backup-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let backup = dir.join("keyward-backup.db");
    let made_before = made.load(Ordering::Relaxed);
    let (ok, out) = keyward_backup(&app.db_url, &backup).await;
    assert!(ok, "{out}");
    assert!(out.contains("backed up sqlite"), "{out}");
    assert!(out.contains("keep the secrets file"), "{out}");
    // The load kept going during the backup, and goes on after it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while made.load(Ordering::Relaxed) < made_before + 5 {
        assert!(
            Instant::now() < deadline,
            "writes stalled during the backup"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    // A second backup to the same name is refused, not overwritten.
    let (ok, out) = keyward_backup(&app.db_url, &backup).await;
    assert!(!ok && out.contains("already exists"), "{out}");

    let live = SqlitePool::connect(&app.db_url).await.unwrap();
    let copy = SqlitePool::connect(&format!("sqlite://{}?mode=ro", backup.display()))
        .await
        .unwrap();

    // Consistent: the copy is one moment of the live database. Every key in it has its
    // audit row and every "key created" row its key; it holds the keys made before the
    // backup started, and not the ones made after it ended.
    let keys_in_copy = ids(&copy, "SELECT id FROM api_keys").await;
    let created_in_copy = ids(
        &copy,
        "SELECT target_id FROM audit_events WHERE action = 'key.created'",
    )
    .await;
    assert_eq!(keys_in_copy, created_in_copy);
    let keys_live = ids(&live, "SELECT id FROM api_keys").await;
    assert!(keys_in_copy.is_subset(&keys_live));
    // Two dashboard keys, then the load's.
    assert!(
        keys_in_copy.len() >= 2 + made_before,
        "{}",
        keys_in_copy.len()
    );
    assert!(keys_in_copy.len() < keys_live.len());

    // The audit log survives identically: the copy's rows are the live log's first rows,
    // column for column; and the restored copy's hash chain verifies (below).
    let audit_copy = audit_rows(&copy).await;
    let audit_live = audit_rows(&live).await;
    assert!(!audit_copy.is_empty());
    assert_eq!(audit_copy[..], audit_live[..audit_copy.len()]);
    copy.close().await;

    // Restore into a fresh server: the backup file becomes its database.
    let fresh = EmptyDb::create(Backend::Sqlite).await.unwrap();
    std::fs::copy(&backup, fresh.sqlite_path()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let restored = TestApp::spawn_on_db(fresh, listener, StoreOptions::default(), |_| {}).await;

    // The restored log's hash chain is intact.
    let report = keyward::audit::integrity::verify(
        &restored.store,
        &[restored.state.config.audit_signing_key.public()],
        None,
    )
    .await
    .unwrap();
    assert!(report.first().is_none(), "{:?}", report.findings);
    assert!(report.rows >= audit_copy.len() as u64);

    // Keys verify (same pepper), the API sees the same keys.
    let (s, body) = restored.verify_api(json!({ "key": before })).await;
    assert_eq!(
        (s, body["valid"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{body}"
    );
    let res = reqwest::Client::new()
        .request(
            Method::GET,
            format!("{}/api/v1/keys?limit=100", restored.base),
        )
        .bearer_auth(&mgmt)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // The browser's session, signed in before the backup, is still signed in.
    b.base = restored.base.clone();
    // (Searched for: the write load may have made more keys than one page holds.)
    let page = b.get("/settings/api-keys?q=made+before+the+backup").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.shows("made before the backup"), "{}", page.body);

    // And the restored audit log is the backup's.
    let restored_pool = SqlitePool::connect(&restored.db_url).await.unwrap();
    let audit_restored = audit_rows(&restored_pool).await;
    assert_eq!(audit_restored[..audit_copy.len()], audit_copy[..]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_explains_itself_for_postgres_and_for_a_missing_database() {
    let dir = std::env::temp_dir().join(format!("kw-backup-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = format!("sqlite://{}/nothing-here.db", dir.display());
    let (ok, out) = keyward_backup(&missing, &dir.join("b.db")).await;
    assert!(!ok && out.contains("no database at"), "{out}");
    assert!(
        !dir.join("nothing-here.db").exists(),
        "no empty database was created"
    );

    if let Some(db) = EmptyDb::create(Backend::Postgres).await {
        let (ok, out) = keyward_backup(&db.url, &dir.join("b.db")).await;
        assert!(!ok && out.contains("pg_dump"), "{out}");
        assert!(!dir.join("b.db").exists());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
