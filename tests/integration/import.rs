//! Importing keys the team issued before Keyward (`POST /api/v1/keys/import`, `keyward
//! keys import`): they verify through every door with their existing strings, are
//! re-hashed on first use, import idempotently and all or nothing.

use std::process::Command;

use base64::Engine;
use keyward::{
    clock::Clock,
    config::{KeyPepper, TEST_OPERATOR_TOKEN},
    keys::token::KeyHash,
    verify::VerifyCode,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{both, helpers::TestApp};

/// A key in another system's format, given to the import as plaintext.
const STRIPE_LIKE: &str = "sk_live_51HxQmT2eZvKYlo2CabcdefGHIJ";
/// A UUID-shaped key, given to the import only as its SHA-256.
const UUID_KEY: &str = "0b7c3f2e-9a41-4c55-8d0e-6f1a2b3c4d5e";

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn pepper() -> KeyPepper {
    KeyPepper::new(vec![42u8; 32])
}

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

/// A signed-up account's organization, with the external id `cus_acme`: its id.
async fn customer_org(app: &TestApp, email: &str) -> String {
    app.signed_up(email).await;
    let user = app.store.user_by_email(email).await.unwrap().unwrap();
    let org_id = app.store.memberships(&user.id).await.unwrap()[0]
        .org_id
        .clone();
    let res = reqwest::Client::new()
        .put(format!("{}/api/v1/orgs/{org_id}/external-id", app.base))
        .bearer_auth(TEST_OPERATOR_TOKEN)
        .json(&json!({ "external_id": "cus_acme" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    org_id
}

/// `POST /api/v1/keys/import` with JSON Lines and the operator credential.
async fn import(app: &TestApp, lines: &[Value]) -> (StatusCode, Value) {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/keys/import", app.base))
        .bearer_auth(TEST_OPERATOR_TOKEN)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn plaintext_record() -> Value {
    json!({
        "org_external_id": "cus_acme",
        "name": "Legacy production key",
        "key": STRIPE_LIKE,
        "prefix": "sk_live_51Hx",
        "scopes": ["read"],
        "metadata": { "plan": "pro" },
    })
}

fn hash_record(org_id: &str) -> Value {
    json!({
        "org_id": org_id,
        "name": "Legacy UUID key",
        "hash": sha256_hex(UUID_KEY),
        "scopes": ["read", "write"],
        "expires_at": "2099-01-01T00:00:00Z",
    })
}

async fn forward_auth(app: &TestApp, key: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{}/v1/auth", app.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
}

async fn imported_keys_verify_through_every_door(app: TestApp) {
    let org_id = customer_org(&app, "import@example.com").await;
    let (s, v) = import(&app, &[plaintext_record(), hash_record(&org_id)]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["data"]["imported"].as_u64(),
            v["data"]["skipped"].as_u64()
        ),
        (Some(2), Some(0))
    );

    for (key, name) in [
        (STRIPE_LIKE, "Legacy production key"),
        (UUID_KEY, "Legacy UUID key"),
    ] {
        let (_, v) = app
            .verify_api(json!({ "key": key, "scopes": ["read"] }))
            .await;
        assert_eq!(code(&v), "VALID", "{key}: {v}");
        assert_eq!(v["name"], name);
        assert_eq!(v["org_id"], org_id.as_str());
        assert_eq!(v["external_org_id"], "cus_acme");
        assert_eq!(forward_auth(&app, key).await, StatusCode::OK, "{key}");
        let inproc = app.state.verifier.verify(Some(key), &[]).await.unwrap();
        assert_eq!(inproc.code, VerifyCode::Valid, "{key}");
    }
    let (_, v) = app.verify_api(json!({ "key": STRIPE_LIKE })).await;
    assert_eq!(v["metadata"], json!({ "plan": "pro" }));
    // A near miss of an imported key is just unknown.
    let (_, v) = app
        .verify_api(json!({ "key": "sk_live_51HxQmT2eZvKYlo2CabcdefGHIX" }))
        .await;
    assert_eq!(code(&v), "NOT_FOUND");
    assert_eq!(
        forward_auth(&app, "sk_live_nope").await,
        StatusCode::UNAUTHORIZED
    );

    // Audited in the organization, acted by the operator.
    let events = app.audit_events().await;
    let imported: Vec<_> = events.iter().filter(|(a, _)| a == "key.imported").collect();
    assert_eq!(imported.len(), 2, "{events:?}");
    let page = app
        .store
        .list_audit(&org_id, &Default::default(), 100, 0)
        .await
        .unwrap();
    assert!(
        page.0
            .iter()
            .any(|e| e.action == "key.imported" && e.actor_email == "operator:default"),
        "{:?}",
        page.0
    );
}
both!(imported_keys_verify_through_every_door);

async fn a_hash_import_is_rehashed_on_first_success(app: TestApp) {
    let org_id = customer_org(&app, "rehash@example.com").await;
    let (s, v) = import(&app, &[hash_record(&org_id)]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let imported = KeyHash::imported_of(UUID_KEY, &pepper());
    let row = app.store.key_by_hash(&imported.0).await.unwrap().unwrap();
    assert_eq!(row.hash_scheme, "imported_sha256");
    assert!(row.imported_at.is_some());

    // A refused verification (a scope it lacks) re-hashes nothing.
    let v = &app.state.verifier;
    let admin = vec!["admin".to_string()];
    assert_eq!(
        v.verify(Some(UUID_KEY), &admin).await.unwrap().code,
        VerifyCode::InsufficientScope
    );
    assert!(app.store.key_by_hash(&imported.0).await.unwrap().is_some());

    assert_eq!(
        v.verify(Some(UUID_KEY), &[]).await.unwrap().code,
        VerifyCode::Valid
    );
    assert!(app.store.key_by_hash(&imported.0).await.unwrap().is_none());
    let keyward = KeyHash::of(UUID_KEY, &pepper());
    let row = app.store.key_by_hash(&keyward.0).await.unwrap().unwrap();
    assert_eq!(
        (row.id.as_str(), row.hash_scheme.as_str()),
        (v_id(&app, &org_id).await.as_str(), "keyward")
    );
    // Later verifications find it by Keyward's hash, through every door.
    assert_eq!(
        v.verify(Some(UUID_KEY), &[]).await.unwrap().code,
        VerifyCode::Valid
    );
    assert_eq!(
        code(&app.verify_api(json!({ "key": UUID_KEY })).await.1),
        "VALID"
    );
    assert_eq!(forward_auth(&app, UUID_KEY).await, StatusCode::OK);

    // Importing the same record again after the re-hash is still "already imported".
    let (s, v) = import(&app, &[hash_record(&org_id)]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["data"]["imported"].as_u64(),
            v["data"]["skipped"].as_u64()
        ),
        (Some(0), Some(1))
    );
}
both!(a_hash_import_is_rehashed_on_first_success);

/// The id of the organization's only key.
async fn v_id(app: &TestApp, org_id: &str) -> String {
    let (keys, total) = app
        .store
        .list_keys(org_id, &Default::default(), app.clock.unix(), 10, 0)
        .await
        .unwrap();
    assert_eq!(total, 1);
    keys[0].id.clone()
}

async fn importing_twice_skips_what_is_already_there(app: TestApp) {
    let org_id = customer_org(&app, "twice@example.com").await;
    let records = [plaintext_record(), hash_record(&org_id)];
    let (_, first) = import(&app, &records).await;
    let (s, second) = import(&app, &records).await;
    assert_eq!(s, StatusCode::OK, "{second}");
    assert_eq!(
        (
            second["data"]["imported"].as_u64(),
            second["data"]["skipped"].as_u64()
        ),
        (Some(0), Some(2))
    );
    for i in 0..2 {
        assert_eq!(second["data"]["records"][i]["status"], "skipped");
        assert_eq!(
            second["data"]["records"][i]["key_id"],
            first["data"]["records"][i]["key_id"]
        );
    }
    // The same key given as its hash, and twice in one file: skipped as well.
    let same_as_hash = json!({
        "org_id": org_id, "name": "again", "hash": sha256_hex(STRIPE_LIKE), "scopes": ["read"],
    });
    let (_, third) = import(&app, &[same_as_hash.clone(), same_as_hash]).await;
    assert_eq!(
        (
            third["data"]["imported"].as_u64(),
            third["data"]["skipped"].as_u64()
        ),
        (Some(0), Some(2)),
        "{third}"
    );
    let (_, total) = app
        .store
        .list_keys(&org_id, &Default::default(), app.clock.unix(), 10, 0)
        .await
        .unwrap();
    assert_eq!(total, 2);
}
both!(importing_twice_skips_what_is_already_there);

async fn a_bad_line_writes_nothing(app: TestApp) {
    let org_id = customer_org(&app, "bad@example.com").await;
    let mut both_secrets = hash_record(&org_id);
    both_secrets["key"] = json!("sk_live_also_given_in_plain");
    let (s, v) = import(
        &app,
        &[
            plaintext_record(),
            json!({ "org_external_id": "cus_acme", "name": "x", "hash": sha256_hex("k"), "scopes": ["nope"] }),
            both_secrets,
            json!({ "org_external_id": "cus_nobody", "name": "y", "hash": "abc", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z" }),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "invalid_records");
    let lines: Vec<(u64, String)> = v["error"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["line"].as_u64().unwrap(),
                l["field"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let fields_of = |n: u64| -> Vec<&str> {
        lines
            .iter()
            .filter(|(l, _)| *l == n)
            .map(|(_, f)| f.as_str())
            .collect()
    };
    assert!(fields_of(1).is_empty(), "{v}");
    assert_eq!(fields_of(2), ["scopes"], "{v}");
    assert_eq!(fields_of(3), ["key"], "{v}");
    let mut four = fields_of(4);
    four.sort();
    assert_eq!(four, ["expires_at", "hash", "org_external_id"], "{v}");
    // Nothing of the file was written, not even its good first line.
    let (_, total) = app
        .store
        .list_keys(&org_id, &Default::default(), app.clock.unix(), 10, 0)
        .await
        .unwrap();
    assert_eq!(total, 0);
    assert!(
        !app.audit_events()
            .await
            .iter()
            .any(|(a, _)| a == "key.imported")
    );
    assert_eq!(
        code(&app.verify_api(json!({ "key": STRIPE_LIKE })).await.1),
        "NOT_FOUND"
    );

    // A line that is not a record at all, and a record with an unknown field.
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/keys/import", app.base))
        .bearer_auth(TEST_OPERATOR_TOKEN)
        .header("content-type", "application/x-ndjson")
        .body(format!(
            "{}\n\n{{oops\n{{\"name\":\"z\",\"org\":\"x\"}}\n",
            plaintext_record()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = res.json().await.unwrap();
    let lines = v["error"]["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{v}");
    assert_eq!(lines[0]["line"], 3);
    assert_eq!(lines[1]["line"], 4);
    assert!(
        lines[1]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `org`"),
        "{v}"
    );
}
both!(a_bad_line_writes_nothing);

async fn the_import_needs_an_operator_credential(app: TestApp) {
    let mut b = app.signed_up("cred@example.com").await;
    let (_, api_key) = b.new_key("mine").await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/keys/import", app.base);
    let body = format!("{}\n", plaintext_record());
    for auth in [
        None,
        Some(keyward::config::TEST_VERIFIER_TOKEN.to_string()),
        Some(api_key),
        Some("wrong".into()),
    ] {
        let mut req = client
            .post(&url)
            .header("content-type", "application/x-ndjson")
            .body(body.clone());
        if let Some(a) = &auth {
            req = req.bearer_auth(a);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["error"]["code"],
            "unauthorized"
        );
    }
    // A JSON array is accepted too; other content types are not.
    customer_org(&app, "cred2@example.com").await;
    let res = client
        .post(&url)
        .bearer_auth(TEST_OPERATOR_TOKEN)
        .json(&json!([plaintext_record()]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = client
        .post(&url)
        .bearer_auth(TEST_OPERATOR_TOKEN)
        .header("content-type", "text/csv")
        .body("a,b")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}
both!(the_import_needs_an_operator_credential);

async fn imported_keys_show_as_imported_in_the_dashboard(app: TestApp) {
    let email = "dash@example.com";
    let mut b = app.signed_up(email).await;
    let user = app.store.user_by_email(email).await.unwrap().unwrap();
    let org_id = app.store.memberships(&user.id).await.unwrap()[0]
        .org_id
        .clone();
    let (s, v) = import(
        &app,
        &[
            json!({ "org_id": org_id, "name": "Legacy production key", "key": STRIPE_LIKE, "prefix": "sk_live_51Hx", "scopes": ["read"] }),
            hash_record(&org_id),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let page = b.get("/settings/api-keys").await;
    assert!(page.shows("Legacy production key"), "{}", page.body);
    assert!(page.body.contains("badge-imported"), "{}", page.body);
    // The plaintext record's start and end; the hash record's end is unknown.
    assert!(page.shows("sk_live_51Hx…GHIJ"), "{}", page.body);
    assert!(page.shows("…····"), "{}", page.body);
    let id = v["data"]["records"][0]["key_id"].as_str().unwrap();
    let page = b.get(&format!("/settings/api-keys/{id}")).await;
    assert!(page.shows("imported"), "{}", page.body);
    // The management API says so too.
    let api = reqwest::Client::new()
        .get(format!("{}/api/v1/keys/{id}", app.base))
        .header(
            "cookie",
            format!("keyward_session={}", b.cookie_value(&app.base)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::OK);
    assert_eq!(api.json::<Value>().await.unwrap()["data"]["imported"], true);
}
both!(imported_keys_show_as_imported_in_the_dashboard);

async fn the_plaintext_is_stored_nowhere(app: TestApp) {
    customer_org(&app, "plain@example.com").await;
    let (s, _) = import(&app, &[plaintext_record()]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        code(&app.verify_api(json!({ "key": STRIPE_LIKE })).await.1),
        "VALID"
    );
    let dump = app.dump_database().await;
    for secret in [
        STRIPE_LIKE.to_string(),
        sha256_hex(STRIPE_LIKE),
        "QmT2eZvKYlo2".into(),
    ] {
        assert!(!dump.contains(&secret), "{secret} is in the database");
        assert!(
            !crate::helpers::log_text().contains(&secret),
            "{secret} was logged"
        );
    }
    // Stored as Keyward's own hash: nothing to re-hash later.
    let row = app
        .store
        .key_by_hash(&KeyHash::of(STRIPE_LIKE, &pepper()).0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.hash_scheme, "keyward");
    assert_eq!(
        (row.display_prefix.as_str(), row.last4.as_str()),
        ("sk_live_51Hx", "GHIJ")
    );
}
both!(the_plaintext_is_stored_nowhere);

async fn unknown_foreign_strings_count_against_the_source(app: TestApp) {
    let ip = "203.0.113.77";
    for i in 0..60 {
        let (_, v) = app
            .verify_api(json!({ "key": format!("sk_live_guess{i}"), "ip": ip }))
            .await;
        assert_eq!(code(&v), "NOT_FOUND", "guess {i}");
    }
    let (_, v) = app
        .verify_api(json!({ "key": "sk_live_guess", "ip": ip }))
        .await;
    assert_eq!(code(&v), "RATE_LIMITED");
    // Implausible strings are malformed without a lookup, and counted all the same.
    let ip = "203.0.113.78";
    for _ in 0..60 {
        let (_, v) = app.verify_api(json!({ "key": "a\u{1}b", "ip": ip })).await;
        assert_eq!(code(&v), "INVALID_FORMAT");
    }
    let (_, v) = app
        .verify_api(json!({ "key": "x".repeat(513), "ip": ip }))
        .await;
    assert_eq!(code(&v), "RATE_LIMITED");
}
both!(unknown_foreign_strings_count_against_the_source);

fn keyward_cli(args: &[&str], db_url: &str) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("kw-import-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .env("DATABASE_URL", db_url)
        .env("KEYWARD_SECRETS_FILE", dir.join("secrets"))
        .env(
            "KEYWARD_KEY_PEPPER",
            base64::engine::general_purpose::STANDARD.encode([42u8; 32]),
        )
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
    out
}

async fn the_cli_imports_a_json_lines_file(app: TestApp) {
    let org_id = customer_org(&app, "cli@example.com").await;
    let dir = std::env::temp_dir().join(format!("kw-import-file-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        format!("{}\n{}\n", plaintext_record(), json!({ "org_id": org_id, "name": "", "hash": sha256_hex(UUID_KEY), "scopes": ["read"] })),
    )
    .unwrap();
    let out = keyward_cli(&["keys", "import", bad.to_str().unwrap()], &app.db_url);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("line 2: name:"), "{stderr}");
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    assert_eq!(
        code(&app.verify_api(json!({ "key": STRIPE_LIKE })).await.1),
        "NOT_FOUND"
    );

    let good = dir.join("keys.jsonl");
    std::fs::write(
        &good,
        format!("{}\n{}\n", plaintext_record(), hash_record(&org_id)),
    )
    .unwrap();
    let out = keyward_cli(&["keys", "import", good.to_str().unwrap()], &app.db_url);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("imported 2 key(s), skipped 0"), "{stdout}");
    // The server answered "unknown" for this key above and remembers it for up to 5 s
    // (the negative cache); on SQLite no notification reaches it from another process.
    app.clock.advance(time::Duration::seconds(6));
    for key in [STRIPE_LIKE, UUID_KEY] {
        assert_eq!(
            code(&app.verify_api(json!({ "key": key })).await.1),
            "VALID",
            "{key}"
        );
    }
    let out = keyward_cli(&["keys", "import", good.to_str().unwrap()], &app.db_url);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("imported 0 key(s), skipped 2"), "{stdout}");
    assert!(
        app.store
            .list_audit(&org_id, &Default::default(), 100, 0)
            .await
            .unwrap()
            .0
            .iter()
            .any(|e| e.action == "key.imported" && e.actor_email == "operator:cli")
    );
    let _ = std::fs::remove_dir_all(dir);
}
both!(the_cli_imports_a_json_lines_file);
