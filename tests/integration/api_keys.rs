//! Settings → API Keys: the whole lifecycle, validation, listing and verification.

use keyward::VerifyCode;
use reqwest::StatusCode;
use time::Duration;

use crate::{both, helpers::TestApp};

async fn verify(app: &TestApp, key: &str, scopes: &[&str]) -> keyward::Verification {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    app.state.verifier.verify(Some(key), &scopes).await.unwrap()
}

async fn key_lifecycle(app: TestApp) {
    let mut b = app.signed_up("owner@example.com").await;

    // Create: name, two scopes, 30 days.
    let form = b.get("/settings/api-keys/new").await;
    let token = form.form_token();
    let created = b
        .post(
            "/settings/api-keys",
            &[
                ("form_token", &token),
                ("name", "Billing worker"),
                ("description", "Runs nightly"),
                ("environment", "live"),
                ("preset", "custom"),
                ("scopes", "read"),
                ("scopes", "write"),
                ("expiry", "30d"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(created.header("cache-control"), "no-store");
    let key = created.new_key().expect("the key is shown once");
    assert!(key.starts_with("kw_live_"));
    assert!(created.body.contains("You will not see it again"));
    assert!(
        created
            .body
            .contains(&format!("Authorization: Bearer {key}"))
    );
    let key_id = created.key_id();

    // Submitting the same form again (reload, back button) mints nothing and shows nothing.
    let again = b
        .post(
            "/settings/api-keys",
            &[
                ("form_token", &token),
                ("name", "Billing worker"),
                ("environment", "live"),
                ("preset", "Read-only"),
                ("expiry", "30d"),
            ],
        )
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    let list = b.get("/settings/api-keys").await;
    assert!(list.body.contains("shown only once"));
    assert!(!list.body.contains(&key));
    assert_eq!(
        list.body.matches("href=\"/settings/api-keys/").count()
            - list.body.matches("href=\"/settings/api-keys/new").count()
            - list
                .body
                .matches("href=\"/settings/api-keys/hygiene")
                .count(),
        1
    );

    // The list shows display fields only.
    let prefix = &key[..12];
    let last4 = &key[key.len() - 4..];
    assert!(
        list.body.contains(&format!("{prefix}…{last4}")),
        "{}",
        list.body
    );
    assert!(list.body.contains("Billing worker"));
    assert!(list.body.contains("owner@example.com"));
    assert!(list.body.contains("Never")); // last used

    // Verify in-process: valid, with its scopes; a missing scope is refused.
    let v = verify(&app, &key, &["read"]).await;
    assert_eq!(v.code, VerifyCode::Valid);
    assert_eq!(v.scope_list(), ["read", "write"]);
    assert_eq!(
        verify(&app, &key, &["admin"]).await.code,
        VerifyCode::InsufficientScope
    );
    // Usage is batched; the flusher runs every second in the server, here on demand.
    app.state.verifier.flush().await.unwrap();
    let detail = b.get(&format!("/settings/api-keys/{key_id}")).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(!detail.body.contains(&key));
    assert!(detail.body.contains("Key used for the first time"));

    // Edit: rename, drop a scope, change expiry.
    let res = b
        .post(
            &format!("/settings/api-keys/{key_id}"),
            &[
                ("name", "Billing worker v2"),
                ("description", "Nightly"),
                ("scopes", "read"),
                ("expiry", "90d"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let detail = b.get(&format!("/settings/api-keys/{key_id}")).await;
    assert!(detail.body.contains("Saved changes"));
    assert!(detail.body.contains("Billing worker v2"));
    assert_eq!(
        verify(&app, &key, &["write"]).await.code,
        VerifyCode::InsufficientScope
    );

    // Roll with a one-hour grace: both keys work, then only the new one.
    let token = detail.form_token();
    let rolled = b
        .post(
            &format!("/settings/api-keys/{key_id}/roll"),
            &[("form_token", &token), ("grace", "1h")],
        )
        .await;
    assert_eq!(rolled.status, StatusCode::OK, "{}", rolled.body);
    let new_key = rolled.new_key().unwrap();
    let new_id = rolled.key_id();
    assert_ne!(new_key, key);
    assert!(rolled.body.contains("keeps working until"));
    assert_eq!(verify(&app, &key, &[]).await.code, VerifyCode::Valid);
    let v = verify(&app, &new_key, &["read"]).await;
    assert_eq!(v.code, VerifyCode::Valid);
    assert_eq!(v.name(), Some("Billing worker v2"));
    // The roll form cannot be replayed.
    let replay = b
        .post(
            &format!("/settings/api-keys/{key_id}/roll"),
            &[("form_token", &token), ("grace", "now")],
        )
        .await;
    assert_eq!(replay.status, StatusCode::SEE_OTHER);
    app.clock.advance(Duration::minutes(59));
    assert_eq!(verify(&app, &key, &[]).await.code, VerifyCode::Valid);
    app.clock.advance(Duration::minutes(2));
    assert_eq!(verify(&app, &key, &[]).await.code, VerifyCode::Revoked);
    assert_eq!(verify(&app, &new_key, &[]).await.code, VerifyCode::Valid);

    // Revoke the new key: immediate. (The session idled out during the grace hour.)
    assert!(
        b.get("/settings/api-keys")
            .await
            .location()
            .contains("reason=expired")
    );
    b.sign_in("owner@example.com", crate::helpers::PASSWORD)
        .await;
    let res = b
        .post(&format!("/settings/api-keys/{new_id}/revoke"), &[])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(verify(&app, &new_key, &[]).await.code, VerifyCode::Revoked);
    let detail = b.get(&format!("/settings/api-keys/{new_id}")).await;
    assert!(detail.body.contains("badge-revoked"));
    assert!(
        !detail.body.contains("Roll key"),
        "revoked keys cannot be rolled"
    );
    let res = b
        .post(
            &format!("/settings/api-keys/{new_id}"),
            &[("name", "x"), ("scopes", "read")],
        )
        .await;
    // 409, as in the management API: the same refusal has the same status in both doors.
    assert_eq!(res.status, StatusCode::CONFLICT);

    // Every step is in the audit log.
    let (events, _) = app
        .store
        .list_audit(v.org_id().unwrap(), &Default::default(), 100, 0)
        .await
        .unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    for a in [
        "user.signed_up",
        "key.created",
        "key.first_used",
        "key.updated",
        "key.rolled",
        "key.created_by_roll",
        "key.revoked",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let updated = events.iter().find(|e| e.action == "key.updated").unwrap();
    assert!(updated.details.contains("Billing worker v2"));
    assert_eq!(updated.actor_email, "owner@example.com");
    assert_eq!(updated.ip, "127.0.0.1");
    assert_eq!(updated.user_agent, "keyward-tests/1.0");
}
both!(key_lifecycle);

async fn create_validation(app: TestApp) {
    let mut b = app.signed_up("val@example.com").await;
    let long = "n".repeat(101);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![
                ("name", ""),
                ("environment", "live"),
                ("preset", "Read-only"),
                ("expiry", "30d"),
            ],
            "Give the key a name",
        ),
        (
            vec![
                ("name", &long),
                ("environment", "live"),
                ("preset", "Read-only"),
                ("expiry", "30d"),
            ],
            "at most 100 characters",
        ),
        (
            vec![
                ("name", "k"),
                ("environment", "prod"),
                ("preset", "Read-only"),
                ("expiry", "30d"),
            ],
            "Choose live or test",
        ),
        (
            vec![
                ("name", "k"),
                ("environment", "live"),
                ("preset", "custom"),
                ("scopes", "superuser"),
                ("expiry", "30d"),
            ],
            "Unknown scope",
        ),
        (
            vec![
                ("name", "k"),
                ("environment", "live"),
                ("preset", "custom"),
                ("expiry", "30d"),
            ],
            "Choose at least one scope",
        ),
        (
            vec![
                ("name", "k"),
                ("environment", "live"),
                ("preset", "Read-only"),
                ("expiry", "custom"),
                ("custom_date", "2001-01-01"),
            ],
            "in the past",
        ),
        (
            vec![
                ("name", "k"),
                ("environment", "live"),
                ("preset", "Read-only"),
                ("expiry", "custom"),
                ("custom_date", "tomorrow"),
            ],
            "YYYY-MM-DD",
        ),
        (
            vec![
                ("name", "k"),
                ("environment", "live"),
                ("preset", "Read-only"),
                ("expiry", "forever"),
            ],
            "Choose when the key expires",
        ),
    ];
    for (fields, message) in cases {
        let res = b.create_key(&fields).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{message}");
        assert!(res.body.contains(message), "{message}: {}", res.body);
        assert!(res.new_key().is_none());
    }
    let list = b.get("/settings/api-keys").await;
    assert!(list.body.contains("No API keys yet"));

    // A 100-character name and a custom date are fine; an injected org_id is ignored.
    let name100 = "n".repeat(100);
    let other = app.signed_up("other@example.com").await;
    drop(other);
    let other_user = app
        .store
        .user_by_email("other@example.com")
        .await
        .unwrap()
        .unwrap();
    let other_org = app.store.memberships(&other_user.id).await.unwrap()[0]
        .org_id
        .clone();
    let date = (app.clock_now_date() + Duration::days(10)).to_string();
    let res = b
        .create_key(&[
            ("name", &name100),
            ("environment", "test"),
            ("preset", "Admin"),
            ("expiry", "custom"),
            ("custom_date", &date),
            ("org_id", &other_org),
        ])
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let key = res.new_key().unwrap();
    assert!(key.starts_with("kw_test_"));
    let v = app.state.verifier.verify(Some(&key), &[]).await.unwrap();
    assert_ne!(v.org_id(), Some(other_org.as_str()));
    assert_eq!(v.scope_list(), ["read", "write", "admin"]);
    let (keys, _) = app
        .store
        .list_keys(&other_org, &Default::default(), 0, 10, 0)
        .await
        .unwrap();
    assert!(keys.is_empty());
}
both!(create_validation);

impl TestApp {
    fn clock_now_date(&self) -> time::Date {
        use keyward::clock::Clock;
        self.clock.now().date()
    }
}

async fn expiry_and_statuses(app: TestApp) {
    let mut b = app.signed_up("exp@example.com").await;
    let week = b
        .create_key(&[
            ("name", "week"),
            ("environment", "live"),
            ("preset", "Read-only"),
            ("expiry", "7d"),
        ])
        .await;
    let week_key = week.new_key().unwrap();
    let (_, year_key) = b.new_key("month").await;
    let (revoked_id, _) = b.new_key("gone").await;
    b.post(&format!("/settings/api-keys/{revoked_id}/revoke"), &[])
        .await;
    let test_key = b
        .create_key(&[
            ("name", "sandbox"),
            ("environment", "test"),
            ("preset", "Read-only"),
            ("expiry", "never"),
        ])
        .await;
    assert_eq!(test_key.status, StatusCode::OK);

    let names = |body: &str| -> Vec<String> {
        regex::Regex::new(r#"href="/settings/api-keys/[0-9a-f-]{36}">([^<]+)</a>"#)
            .unwrap()
            .captures_iter(body)
            .map(|c| c[1].to_string())
            .collect()
    };
    assert_eq!(
        names(&b.get("/settings/api-keys?status=expiring").await.body),
        vec!["week"]
    );
    assert_eq!(
        names(&b.get("/settings/api-keys?status=revoked").await.body),
        vec!["gone"]
    );
    assert_eq!(
        names(&b.get("/settings/api-keys?status=active").await.body),
        vec!["sandbox", "month"]
    );
    assert_eq!(
        names(&b.get("/settings/api-keys?env=test").await.body),
        vec!["sandbox"]
    );
    assert_eq!(
        names(&b.get("/settings/api-keys?status=bogus").await.body).len(),
        4
    );

    app.clock.advance(Duration::days(7) + Duration::seconds(1));
    b.sign_in("exp@example.com", crate::helpers::PASSWORD).await;
    assert_eq!(
        app.state
            .verifier
            .verify(Some(&week_key), &[])
            .await
            .unwrap()
            .code,
        VerifyCode::Expired
    );
    assert_eq!(
        app.state
            .verifier
            .verify(Some(&year_key), &[])
            .await
            .unwrap()
            .code,
        VerifyCode::Valid
    );
    assert_eq!(
        names(&b.get("/settings/api-keys?status=expired").await.body),
        vec!["week"]
    );
    let list = b.get("/settings/api-keys").await;
    assert!(list.body.contains("badge-expired"));
}
both!(expiry_and_statuses);

async fn search_and_pagination(app: TestApp) {
    let mut b = app.signed_up("many@example.com").await;
    for i in 0..27 {
        b.new_key(&format!("service {i:02}")).await;
    }
    b.new_key("100% literal_name").await;
    b.new_key("Über-Worker").await;
    let page1 = b.get("/settings/api-keys").await;
    assert!(page1.body.contains("Showing 1–25 of 29"), "{}", page1.body);
    let page2 = b.get("/settings/api-keys?page=2").await;
    assert!(page2.body.contains("Showing 26–29 of 29"));
    assert!(page2.body.contains("service 00"));
    // LIKE wildcards are literal; SQL metacharacters are just text.
    for (q, n) in [
        ("%", 1),
        ("_", 1),
        ("SERVICE 1", 10),
        ("über", 1),
        ("ÜBER-w", 1),
        ("' OR 1=1--", 0),
        ("name;DROP TABLE api_keys", 0),
    ] {
        let page = b
            .get(&format!("/settings/api-keys?q={}", urlencoding::encode(q)))
            .await;
        assert_eq!(page.status, StatusCode::OK);
        let shown = page.body.matches("class=\"mono nowrap\"").count();
        assert_eq!(shown, n, "search {q:?}");
    }
    // A page past the end goes to the last page; absurd page numbers do not break anything.
    let far = b.get("/settings/api-keys?q=service&page=99").await;
    assert_eq!(far.status, StatusCode::SEE_OTHER);
    assert_eq!(far.location(), "/settings/api-keys?q=service&page=2");
    let huge = b.get("/settings/api-keys?page=9223372036854775807").await;
    assert_eq!(huge.status, StatusCode::SEE_OTHER);
    assert_eq!(
        b.get("/settings/api-keys?page=-5").await.status,
        StatusCode::OK
    );
}
both!(search_and_pagination);

async fn malformed_keys_never_reach_the_store(app: TestApp) {
    let v = &app.state.verifier;
    assert_eq!(v.verify(None, &[]).await.unwrap().code, VerifyCode::Missing);
    assert_eq!(
        v.verify(Some("  "), &[]).await.unwrap().code,
        VerifyCode::Missing
    );
    assert_eq!(
        v.verify(Some("kw_live_abc"), &[]).await.unwrap().code,
        VerifyCode::InvalidFormat
    );
    let mut b = app.signed_up("fmt@example.com").await;
    let (_, key) = b.new_key("k").await;
    let mut typo = key.clone().into_bytes();
    typo[10] = if typo[10] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).unwrap();
    assert_eq!(
        v.verify(Some(&typo), &[]).await.unwrap().code,
        VerifyCode::InvalidFormat
    );
    // A well-formed key that was never issued.
    let unknown =
        keyward::keys::token::PlainKey::generate("kw", keyward::keys::token::Environment::Live)
            .unwrap();
    assert_eq!(
        v.verify(Some(unknown.expose()), &[]).await.unwrap().code,
        VerifyCode::NotFound
    );
}
both!(malformed_keys_never_reach_the_store);

async fn organization_defaults_prefill_new_keys(app: TestApp) {
    let mut b = app.signed_up("defaults@example.com").await;
    let page = b.get("/settings/organization").await;
    assert_eq!(page.status, StatusCode::OK);
    let bad = b
        .post(
            "/settings/organization",
            &[
                ("rate_limit", "-3"),
                ("rate_window", "minute"),
                ("daily_quota", ""),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("whole number"));
    let res = b
        .post(
            "/settings/organization",
            &[
                ("rate_limit", "100"),
                ("rate_window", "hour"),
                ("daily_quota", "250"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let form = b.get("/settings/api-keys/new").await;
    assert!(
        form.body
            .contains(r#"name="rate_limit" type="number" min="1" inputmode="numeric" value="100""#)
    );
    assert!(form.body.contains(r#"value="250""#));
    assert!(form.body.contains(r#"<option value="hour" selected>"#));
    // Submitting the prefilled form gives the key those limits.
    let token = form.form_token();
    let created = b
        .post(
            "/settings/api-keys",
            &[
                ("form_token", &token),
                ("name", "d"),
                ("environment", "live"),
                ("preset", "Read-only"),
                ("expiry", "7d"),
                ("rate_limit", "100"),
                ("rate_window", "hour"),
                ("daily_quota", "250"),
            ],
        )
        .await;
    let v = app
        .state
        .verifier
        .verify(Some(&created.new_key().unwrap()), &[])
        .await
        .unwrap();
    assert_eq!(v.quota.unwrap().limit, 250);
    assert_eq!(v.ratelimit.unwrap().limit, 100);
    let audit = b
        .get("/settings/audit-log?action=org.defaults_updated")
        .await;
    assert!(audit.body.contains("Default key limits changed"));
}
both!(organization_defaults_prefill_new_keys);
