//! The tamper-evident audit log: every row chained to its predecessor, chain heads signed by
//! checkpoints, and `keyward audit verify` naming the first row that was changed, removed
//! or inserted — by an attacker with database access, who first drops the append-only
//! triggers.

use std::process::Command;

use keyward::{
    audit::{
        chain::{AuditPublicKey, AuditSigningKey, RowFields, row_hash},
        integrity::{self, Report},
    },
    clock::Clock,
    config::TEST_AUDIT_SIGNING_SEED,
    store::{NewAudit, Store},
};

use crate::{
    both,
    helpers::{Backend, TestApp},
};

fn test_key() -> AuditPublicKey {
    AuditSigningKey::from_seed(TEST_AUDIT_SIGNING_SEED).public()
}

async fn verify(app: &TestApp) -> Report {
    integrity::verify(&app.store, &[test_key()], None)
        .await
        .unwrap()
}

/// Events in two organizations and account events; returns the ids of `org-a`'s rows in
/// chain order.
async fn some_events(app: &TestApp, n: usize) -> Vec<i64> {
    let now = app.clock.unix();
    for i in 0..n {
        for org in ["org-a", "org-b"] {
            let ev = NewAudit::new("test.event", now + i as i64)
                .org(org)
                .actor(Some("u1"), "ana@example.com")
                .details(serde_json::json!({ "i": i }));
            app.store.record(&ev).await.unwrap();
        }
        let ev = NewAudit::new("test.sign_in", now).actor(Some("u1"), "ana@example.com");
        app.store.record(&ev).await.unwrap();
    }
    ids(app, "org-a").await
}

async fn ids(app: &TestApp, chain: &str) -> Vec<i64> {
    app.store
        .audit_chain_rows(chain, (0, 0), 10_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect()
}

async fn drop_append_only_triggers(app: &TestApp) {
    let sql: &[&str] = match app.backend {
        Backend::Sqlite => &[
            "DROP TRIGGER audit_events_no_update",
            "DROP TRIGGER audit_events_no_delete",
            "DROP TRIGGER audit_checkpoints_no_update",
        ],
        Backend::Postgres => &[
            "DROP TRIGGER audit_events_no_update ON audit_events",
            "DROP TRIGGER audit_checkpoints_no_update ON audit_checkpoints",
        ],
    };
    for s in sql {
        app.raw_execute(s).await.unwrap();
    }
}

fn only_finding(report: &Report) -> &integrity::Finding {
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    &report.findings[0]
}

async fn an_intact_log_verifies(app: TestApp) {
    app.signed_up("ana@example.com").await;
    some_events(&app, 5).await;
    let report = verify(&app).await;
    assert!(report.intact(), "{:#?}", report.findings);
    assert_eq!(
        report.chains, 4,
        "org-a, org-b, the personal organization, account events"
    );
    assert!(report.rows >= 15);

    let signed = app
        .state
        .audit_checkpoints()
        .checkpoint_now(None)
        .await
        .unwrap();
    assert_eq!(signed, report.chains);
    some_events(&app, 2).await;
    let report = verify(&app).await;
    assert!(report.intact(), "{:#?}", report.findings);
    assert_eq!(report.checkpoints, signed);
}
both!(an_intact_log_verifies);

async fn every_row_of_a_chain_gets_the_next_position(app: TestApp) {
    some_events(&app, 3).await;
    let rows = app
        .store
        .audit_chain_rows("org-b", (0, 0), 100)
        .await
        .unwrap();
    let seqs: Vec<i64> = rows.iter().map(|e| e.chain_seq.unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let heads = app.store.audit_chain_heads(Some("org-b")).await.unwrap();
    assert_eq!(heads[0].seq, 3);
    assert_eq!(Some(&heads[0].hash), rows[2].chain_hash.as_ref());
}
both!(every_row_of_a_chain_gets_the_next_position);

async fn concurrent_writers_to_one_chain_stay_in_line(app: TestApp) {
    let now = app.clock.unix();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store: Store = app.store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let ev = NewAudit::new("test.event", now)
                    .org("busy")
                    .details(serde_json::json!({ "t": t, "i": i }));
                store.record(&ev).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rows = app
        .store
        .audit_chain_rows("busy", (0, 0), 1000)
        .await
        .unwrap();
    let seqs: Vec<i64> = rows.iter().map(|e| e.chain_seq.unwrap()).collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    let report = verify(&app).await;
    assert!(report.intact(), "{:#?}", report.findings);
}
both!(concurrent_writers_to_one_chain_stay_in_line);

async fn an_edited_row_is_named(app: TestApp) {
    let ids = some_events(&app, 5).await;
    drop_append_only_triggers(&app).await;
    app.raw_execute(&format!(
        "UPDATE audit_events SET details = '{{\"i\":99}}' WHERE id = {}",
        ids[2]
    ))
    .await
    .unwrap();
    let report = verify(&app).await;
    let f = only_finding(&report);
    assert_eq!(f.row_id, Some(ids[2]));
    assert!(f.message.contains("was changed"), "{}", f.message);
    assert_eq!(f.chain, "org-a");
}
both!(an_edited_row_is_named);

async fn a_removed_row_is_named(app: TestApp) {
    let ids = some_events(&app, 5).await;
    drop_append_only_triggers(&app).await;
    app.raw_execute(&format!("DELETE FROM audit_events WHERE id = {}", ids[1]))
        .await
        .unwrap();
    let report = verify(&app).await;
    let f = only_finding(&report);
    assert_eq!(f.row_id, Some(ids[2]), "the row after the gap");
    assert!(
        f.message.contains(&format!(
            "position 2 was removed (between row {} and row {})",
            ids[0], ids[2]
        )),
        "{}",
        f.message
    );
}
both!(a_removed_row_is_named);

async fn a_removed_last_row_is_caught_by_the_chain_head(app: TestApp) {
    let ids = some_events(&app, 5).await;
    drop_append_only_triggers(&app).await;
    app.raw_execute(&format!("DELETE FROM audit_events WHERE id = {}", ids[4]))
        .await
        .unwrap();
    let report = verify(&app).await;
    let f = only_finding(&report);
    assert_eq!(f.row_id, Some(ids[3]));
    assert!(
        f.message
            .contains("removed: the chain head is at position 5"),
        "{}",
        f.message
    );
}
both!(a_removed_last_row_is_caught_by_the_chain_head);

async fn an_inserted_row_is_named(app: TestApp) {
    some_events(&app, 3).await;
    app.raw_execute(
        "INSERT INTO audit_events (occurred_at, org_id, actor_email, action) \
         VALUES (1, 'org-a', 'mallory@example.com', 'key.created')",
    )
    .await
    .unwrap();
    let forged = ids_by_sql(&app, "SELECT MAX(id) FROM audit_events").await;
    let report = verify(&app).await;
    let f = only_finding(&report);
    assert_eq!(f.row_id, Some(forged));
    assert!(f.message.contains("inserted"), "{}", f.message);
}
both!(an_inserted_row_is_named);

async fn an_inserted_row_with_a_copied_position_is_named(app: TestApp) {
    let ids = some_events(&app, 3).await;
    let rows = app
        .store
        .audit_chain_rows("org-a", (0, 0), 100)
        .await
        .unwrap();
    // A forger who knows the encoding gives the row a valid hash after row 1.
    let mut ev = NewAudit::new("key.created", 1).org("org-a");
    ev.actor_email = "mallory@example.com".into();
    let hash = row_hash(
        RowFields::from(&ev),
        2,
        rows[0].chain_hash.as_deref().unwrap(),
    );
    app.raw_execute(&format!(
        "INSERT INTO audit_events (occurred_at, org_id, actor_email, action, chain_seq, chain_hash) \
         VALUES (1, 'org-a', 'mallory@example.com', 'key.created', 2, '{hash}')"
    ))
    .await
    .unwrap();
    let forged = ids_by_sql(&app, "SELECT MAX(id) FROM audit_events").await;
    assert!(forged > ids[1]);
    let report = verify(&app).await;
    let f = only_finding(&report);
    assert_eq!(f.row_id, Some(forged));
    assert!(
        f.message.contains("inserted: position 2 already belongs"),
        "{}",
        f.message
    );
}
both!(an_inserted_row_with_a_copied_position_is_named);

/// Rewrites `chain` from position `from` on as a forger who knows the encoding would:
/// changes the row there and recomputes every later hash and the head.
async fn rewrite_from(app: &TestApp, chain: &str, from: i64) {
    let rows = app
        .store
        .audit_chain_rows(chain, (0, 0), 10_000)
        .await
        .unwrap();
    let mut prev = String::new();
    for mut row in rows {
        let seq = row.chain_seq.unwrap();
        if seq < from {
            prev = row.chain_hash.unwrap();
            continue;
        }
        if seq == from {
            row.details = "{\"forged\":true}".into();
        }
        let hash = row_hash(RowFields::from(&row), seq, &prev);
        app.raw_execute(&format!(
            "UPDATE audit_events SET details = '{}', chain_hash = '{hash}' WHERE id = {}",
            row.details, row.id
        ))
        .await
        .unwrap();
        prev = hash;
    }
    app.raw_execute(&format!(
        "UPDATE audit_chain_heads SET hash = '{prev}' WHERE chain = '{chain}'"
    ))
    .await
    .unwrap();
}

async fn a_rewritten_chain_is_caught_by_its_checkpoint(app: TestApp) {
    let ids = some_events(&app, 3).await;
    let checkpoints = app.state.audit_checkpoints();
    checkpoints.checkpoint_now(Some("org-a")).await.unwrap();
    let more = some_events(&app, 3).await;
    assert_eq!(more[..3], ids[..]);
    checkpoints.checkpoint_now(Some("org-a")).await.unwrap();
    drop_append_only_triggers(&app).await;
    rewrite_from(&app, "org-a", 5).await;
    let report = verify(&app).await;
    let f = only_finding(&report);
    // Position 3 is the last one the first checkpoint vouches for; the second one (at 6)
    // no longer matches.
    assert_eq!(f.row_id, Some(more[3]));
    assert!(
        f.message.contains(&format!(
            "rewritten between row {} and row {}",
            more[3], more[5]
        )),
        "{}",
        f.message
    );
}
both!(a_rewritten_chain_is_caught_by_its_checkpoint);

async fn a_rewrite_after_the_last_checkpoint_goes_unseen(app: TestApp) {
    // What README says the chain cannot prove: rows after the last checkpoint, rewritten
    // with the hashes recomputed, verify. The next checkpoint then signs the forgery.
    some_events(&app, 3).await;
    app.state
        .audit_checkpoints()
        .checkpoint_now(None)
        .await
        .unwrap();
    some_events(&app, 2).await;
    drop_append_only_triggers(&app).await;
    rewrite_from(&app, "org-a", 4).await;
    let report = verify(&app).await;
    assert!(report.intact(), "{:#?}", report.findings);
    // …while one position earlier it is caught.
    rewrite_from(&app, "org-a", 3).await;
    assert!(!verify(&app).await.intact());
}
both!(a_rewrite_after_the_last_checkpoint_goes_unseen);

async fn a_truncated_tail_is_caught_up_to_the_last_checkpoint(app: TestApp) {
    let ids = some_events(&app, 4).await;
    app.state
        .audit_checkpoints()
        .checkpoint_now(None)
        .await
        .unwrap();
    drop_append_only_triggers(&app).await;
    // The forger removes the last two rows and winds the head back to match.
    let rows = app
        .store
        .audit_chain_rows("org-a", (0, 0), 100)
        .await
        .unwrap();
    app.raw_execute(&format!(
        "DELETE FROM audit_events WHERE id IN ({}, {})",
        ids[2], ids[3]
    ))
    .await
    .unwrap();
    app.raw_execute(&format!(
        "UPDATE audit_chain_heads SET seq = 2, hash = '{}' WHERE chain = 'org-a'",
        rows[1].chain_hash.as_deref().unwrap()
    ))
    .await
    .unwrap();
    let report = verify(&app).await;
    let f = only_finding(&report);
    assert_eq!(f.row_id, Some(ids[1]));
    assert!(
        f.message.contains("were removed: checkpoint #")
            && f.message.contains("vouches for 4 rows"),
        "{}",
        f.message
    );
}
both!(a_truncated_tail_is_caught_up_to_the_last_checkpoint);

async fn a_forged_checkpoint_is_named(app: TestApp) {
    some_events(&app, 2).await;
    app.state
        .audit_checkpoints()
        .checkpoint_now(Some("org-a"))
        .await
        .unwrap();
    drop_append_only_triggers(&app).await;
    app.raw_execute("UPDATE audit_checkpoints SET signed_at = signed_at + 1")
        .await
        .unwrap();
    let report = verify(&app).await;
    let f = only_finding(&report);
    assert!(f.message.contains("does not verify"), "{}", f.message);

    // Signed with another key: named as unknown unless that key is given.
    let other = AuditSigningKey::from_seed([1; 32]);
    let head = &app.store.audit_chain_heads(Some("org-b")).await.unwrap()[0];
    let sig = other.sign(&head.chain, head.seq, &head.hash, 5);
    app.store
        .insert_audit_checkpoint(head, 5, &other.public().id(), &sig)
        .await
        .unwrap();
    let report = verify(&app).await;
    assert_eq!(report.findings.len(), 2);
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.message.contains("unknown key"))
    );
    let both_keys = integrity::verify(&app.store, &[test_key(), other.public()], Some("org-b"))
        .await
        .unwrap();
    assert!(both_keys.intact(), "{:#?}", both_keys.findings);
    assert_eq!(both_keys.checkpoints, 1);
}
both!(a_forged_checkpoint_is_named);

async fn checkpoints_are_signed_hourly_by_the_clock(app: TestApp) {
    some_events(&app, 1).await;
    let job = app.state.audit_checkpoints();
    assert_eq!(job.run().await.unwrap(), 3, "org-a, org-b, account events");
    some_events(&app, 1).await;
    assert_eq!(job.run().await.unwrap(), 0, "the last ones are recent");
    app.clock.advance(time::Duration::minutes(59));
    assert_eq!(job.run().await.unwrap(), 0);
    app.clock.advance(time::Duration::minutes(1));
    assert_eq!(job.run().await.unwrap(), 3);
    assert_eq!(job.run().await.unwrap(), 0, "nothing new to sign");
    app.clock.advance(time::Duration::hours(2));
    assert_eq!(job.run().await.unwrap(), 0, "no chain advanced");
}
both!(checkpoints_are_signed_hourly_by_the_clock);

async fn checkpoints_export_with_the_audit_log(app: TestApp) {
    let mut b = app.signed_up("exp@example.com").await;
    b.new_key("ci").await;
    app.state
        .audit_checkpoints()
        .checkpoint_now(None)
        .await
        .unwrap();
    let res = b.get("/settings/audit-log/export?format=checkpoints").await;
    assert_eq!(res.status, reqwest::StatusCode::OK);
    let body: serde_json::Value = serde_json::from_str(&res.body).unwrap();
    assert_eq!(body["public_key"], test_key().to_base64());
    let cps = body["checkpoints"].as_array().unwrap();
    assert_eq!(cps.len(), 1, "this organization's chain only");
    let cp = &cps[0];
    // The newest exported event is the checkpointed head.
    let res = b.get("/settings/audit-log/export?format=json").await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&res.body).unwrap();
    assert!(
        rows.iter()
            .any(|r| r["chain_seq"] == cp["seq"] && r["chain_hash"] == cp["head_hash"]),
        "the checkpointed head row is exported"
    );
    // CSV keeps its columns and adds the chain's at the end.
    let res = b.get("/settings/audit-log/export?format=csv").await;
    assert!(res.body.starts_with(
        "id,occurred_at,actor_email,actor_id,action,target_type,target_id,target_name,ip,user_agent,details,chain_seq,chain_hash\n"
    ));
}
both!(checkpoints_export_with_the_audit_log);

// ------------------------------------------------------------------------ CLI

/// Runs `keyward` with a secrets file holding the test app's audit key.
fn keyward(args: &[&str], db_url: &str) -> std::process::Output {
    use base64::Engine;
    let dir = std::env::temp_dir().join(format!("kw-audit-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let secrets = dir.join("secrets");
    std::fs::write(
        &secrets,
        format!(
            "audit_signing_key = \"{}\"\n",
            base64::engine::general_purpose::STANDARD.encode(TEST_AUDIT_SIGNING_SEED)
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .env("DATABASE_URL", db_url)
        .env("KEYWARD_SECRETS_FILE", &secrets)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
    out
}

async fn audit_verify_exits_non_zero_naming_the_first_bad_row(app: TestApp) {
    let ids = some_events(&app, 4).await;
    let out = keyward(&["audit", "checkpoint"], &app.db_url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("signed 3 checkpoints"));
    let out = keyward(&["audit", "verify"], &app.db_url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("audit log intact: 12 rows in 3 chains, 3 signed checkpoints"),
        "{stdout}"
    );

    drop_append_only_triggers(&app).await;
    app.raw_execute(&format!(
        "UPDATE audit_events SET actor_email = 'someone@else.com' WHERE id = {}",
        ids[1]
    ))
    .await
    .unwrap();
    let out = keyward(&["audit", "verify"], &app.db_url);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("first bad row {}", ids[1])),
        "{stderr}"
    );
    // Another organization's chain is still intact.
    let out = keyward(&["audit", "verify", "--org", "org-b"], &app.db_url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
both!(audit_verify_exits_non_zero_naming_the_first_bad_row);

// ------------------------------------------------------------------------ existing rows

async fn ids_by_sql(app: &TestApp, sql: &str) -> i64 {
    match app.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.db_url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap()
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&app.db_url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap()
        }
    }
}

const OLD_ROWS: &str = "INSERT INTO audit_events (occurred_at, org_id, actor_email, action, details) VALUES \
    (1, 'org-x', 'a@example.com', 'key.created', '{}'), \
    (2, NULL, 'a@example.com', 'user.signed_in', '{}'), \
    (3, 'org-y', 'b@example.com', 'key.created', '{\"k\":1}'), \
    (4, 'org-x', 'a@example.com', 'key.revoked', '{}'), \
    (5, 'org-x', '', 'key.expired', '{}')";

/// A database at the schema before the chain (migrations up to 0016), with rows.
async fn database_before_the_chain(backend: Backend) -> Option<(String, Box<dyn std::any::Any>)> {
    // A throwaway app provides the database (dropped with it); it is reset to 0016.
    let app = TestApp::spawn(backend).await?;
    let url = app.db_url.clone();
    let dir = match backend {
        Backend::Sqlite => "migrations/sqlite",
        Backend::Postgres => "migrations/postgres",
    };
    // The migrations of the release before the chain: 0001–0016.
    let old = std::env::temp_dir().join(format!("kw-old-migrations-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&old).unwrap();
    for entry in std::fs::read_dir(format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"))).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let version: u32 = name[..4].parse().unwrap();
        if version <= 16 {
            std::fs::copy(&path, old.join(&name)).unwrap();
        }
    }
    let migrator = sqlx::migrate::Migrator::new(old.as_path()).await.unwrap();
    std::fs::remove_dir_all(&old).unwrap();
    // Start from an empty database of the same backend.
    let fresh = match backend {
        Backend::Sqlite => format!("{url}-old.db"),
        Backend::Postgres => {
            let name = format!("kw_old_{}", uuid::Uuid::new_v4().simple());
            let admin = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .unwrap();
            let (prefix, _) = url.rsplit_once('/').unwrap();
            format!("{prefix}/{name}")
        }
    };
    match backend {
        Backend::Sqlite => {
            let opts: sqlx::sqlite::SqliteConnectOptions = fresh.parse().unwrap();
            let pool = sqlx::SqlitePool::connect_with(opts.create_if_missing(true))
                .await
                .unwrap();
            migrator.run(&pool).await.unwrap();
            sqlx::query(OLD_ROWS).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&fresh).await.unwrap();
            migrator.run(&pool).await.unwrap();
            sqlx::query(OLD_ROWS).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
    Some((fresh, Box::new(app)))
}

async fn existing_rows_are_chained_on_upgrade(backend: Backend) {
    let Some((url, _keep)) = database_before_the_chain(backend).await else {
        return;
    };
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let x: Vec<(i64, Option<i64>)> = store
        .audit_chain_rows("org-x", (0, 0), 100)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.occurred_at, e.chain_seq))
        .collect();
    assert_eq!(x, [(1, Some(1)), (4, Some(2)), (5, Some(3))]);
    let report = integrity::verify(&store, &[test_key()], None)
        .await
        .unwrap();
    assert!(report.intact(), "{:#?}", report.findings);
    assert_eq!((report.chains, report.rows), (3, 5));
    // Start-up again changes nothing, and new rows continue the chain.
    store.migrate().await.unwrap();
    store
        .record(&NewAudit::new("test.event", 6).org("org-x"))
        .await
        .unwrap();
    let report = integrity::verify(&store, &[test_key()], None)
        .await
        .unwrap();
    assert!(report.intact(), "{:#?}", report.findings);
    assert_eq!(report.rows, 6);
    // The relaxed trigger still refuses every other change.
    let err = store_execute(&store, &url, "UPDATE audit_events SET action = 'x'").await;
    assert!(err.contains("append-only"), "{err}");
    store.close().await;
    if backend == Backend::Postgres {
        let (_, name) = url.rsplit_once('/').unwrap();
        let admin = sqlx::PgPool::connect(&crate::helpers::postgres_url())
            .await
            .unwrap();
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await;
    }
}

async fn store_execute(store: &Store, url: &str, sql: &str) -> String {
    let res = match store.backend() {
        "sqlite" => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.map(|_| ())
        }
        _ => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.map(|_| ())
        }
    };
    match res {
        Ok(()) => "no error".into(),
        Err(e) => e.to_string(),
    }
}

mod existing_rows_are_chained_on_upgrade {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::existing_rows_are_chained_on_upgrade(super::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::existing_rows_are_chained_on_upgrade(super::Backend::Postgres).await;
    }
}

// ------------------------------------------------------------------------ timing

/// `keyward audit verify` over 100,000 rows (10 organizations' chains and the account
/// events' chain, written by 8 concurrent writers, checkpointed once). Prints the figures
/// the README quotes:
/// `cargo test --test integration audit_verify_100k -- --ignored --nocapture`.
async fn audit_verify_100k(backend: Backend) {
    const ROWS: usize = 100_000;
    const WRITERS: usize = 8;
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let now = app.clock.unix();
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = app.store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..ROWS).step_by(WRITERS) {
                let mut ev = NewAudit::new("key.verified", now + i as i64)
                    .actor(Some("user-1"), "ana@example.com")
                    .target("api_key", &format!("key-{}", i % 97), "ci")
                    .details(serde_json::json!({ "i": i, "note": "a typical event body" }));
                if i % 11 != 0 {
                    ev = ev.org(&format!("org-{}", i % 10));
                }
                ev.ip = "203.0.113.7".into();
                ev.user_agent = "curl/8.5.0".into();
                store.record(&ev).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let written = started.elapsed();
    let out = keyward(&["audit", "checkpoint"], &app.db_url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut runs = Vec::new();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let out = keyward(&["audit", "verify"], &app.db_url);
        runs.push(started.elapsed().as_secs_f64());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("audit log intact: {ROWS} rows in 11 chains")),
            "{stdout}"
        );
        println!("{backend:?}: {}", stdout.trim());
    }
    println!(
        "{backend:?}: wrote {ROWS} chained rows in {:.1} s ({:.0} rows/s, {WRITERS} writers); \
         `keyward audit verify` (whole process) {:.2} / {:.2} / {:.2} s",
        written.as_secs_f64(),
        ROWS as f64 / written.as_secs_f64(),
        runs[0],
        runs[1],
        runs[2]
    );
}

mod audit_verify_100k {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "timing: 100,000 rows"]
    async fn sqlite() {
        super::audit_verify_100k(super::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "timing: 100,000 rows"]
    async fn postgres() {
        super::audit_verify_100k(super::Backend::Postgres).await;
    }
}
