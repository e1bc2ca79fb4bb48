//! The key rules the keys service enforces for both doors: what an API key may do to
//! itself and to broader keys, what a demoted member may do to keys above their role, one
//! status per refusal, one key per create form, and no control characters.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    api::{allow_key_minting, call, dashboard_key as key_with},
    both,
    helpers::TestApp,
    security::{add_member, switch_to},
};

/// Whether the key verifies now.
async fn works(app: &TestApp, key: &str) -> bool {
    app.state
        .verifier
        .verify(Some(key), &[])
        .await
        .unwrap()
        .valid
}

fn rfc3339_in(app: &TestApp, days: i64) -> String {
    (time::OffsetDateTime::from_unix_timestamp(app.state.clock.unix()).unwrap()
        + time::Duration::days(days))
    .format(&time::format_description::well_known::Rfc3339)
    .unwrap()
}

async fn a_key_cannot_loosen_its_own_restrictions(app: TestApp) {
    let mut admin = app.signed_up("self@example.com").await;
    let (id, key) = key_with(
        &mut admin,
        "self",
        &["read", "keys:write"],
        &[
            ("rate_limit", "100"),
            ("rate_window", "minute"),
            ("daily_quota", "1000"),
            ("ip_allowlist", "127.0.0.0/8"),
        ],
    )
    .await;
    let path = format!("/api/v1/keys/{id}");
    for body in [
        json!({ "expires_at": null }),
        json!({ "expires_at": rfc3339_in(&app, 60) }),
        json!({ "ip_allowlist": [] }),
        json!({ "ip_allowlist": ["0.0.0.0/0"] }),
        json!({ "rate_limit": null }),
        json!({ "rate_limit": 1000 }),
        json!({ "rate_window_seconds": 1 }),
        json!({ "daily_quota": null }),
        json!({ "daily_quota": 5000 }),
    ] {
        let (s, e) = call(&app, &key, Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{body}: {e}");
        assert_eq!(e["error"]["code"], "insufficient_permissions", "{e}");
    }
    // Tightening itself, or renaming, is fine.
    let (s, k) = call(
        &app,
        &key,
        Method::PATCH,
        &path,
        Some(json!({ "rate_limit": 50, "name": "tighter", "expires_at": rfc3339_in(&app, 10) })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{k}");
    assert_eq!(k["data"]["rate_limit"], 50);
    // A session (the member) may still loosen it.
    let detail = admin.get(&format!("/settings/api-keys/{id}")).await;
    assert_eq!(detail.status, StatusCode::OK);
    let res = admin
        .post(
            &format!("/settings/api-keys/{id}"),
            &[
                ("name", "tighter"),
                ("scopes", "read"),
                ("scopes", "keys:write"),
                ("expiry", "never"),
                ("rate_window", "minute"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
}
both!(a_key_cannot_loosen_its_own_restrictions);

async fn a_narrow_key_cannot_revoke_a_broad_one(app: TestApp) {
    let mut admin = app.signed_up("narrow@example.com").await;
    let (_, narrow) = key_with(&mut admin, "narrow", &["read", "keys:write"], &[]).await;
    let (broad_id, broad) = key_with(&mut admin, "broad", &["read", "write", "admin"], &[]).await;
    let (s, e) = call(
        &app,
        &narrow,
        Method::POST,
        &format!("/api/v1/keys/{broad_id}/revoke"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    assert!(works(&app, &broad).await);
}
both!(a_narrow_key_cannot_revoke_a_broad_one);

async fn a_demoted_member_cannot_renew_an_admin_key(app: TestApp) {
    let mut owner = app.signed_up("owner-demote@example.com").await;
    owner.get("/orgs/new").await;
    owner.post("/orgs", &[("name", "Demotions")]).await;
    owner.get("/settings/api-keys/new").await;
    let org = owner.org.clone().unwrap();
    let mut member = app.signed_up("demoted@example.com").await;
    add_member(&app, &org, "demoted@example.com", "admin").await;
    switch_to(&mut member, &org).await;
    let user = app
        .store
        .user_by_email("demoted@example.com")
        .await
        .unwrap()
        .unwrap();
    let (id, _) = key_with(&mut member, "admin key", &["read", "admin"], &[]).await;

    owner.get("/settings/members").await;
    let res = owner
        .post(
            &format!("/settings/members/{}/role", user.id),
            &[("role", "developer")],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);

    // The page says what happens to such a key.
    let detail = member.get(&format!("/settings/api-keys/{id}")).await;
    assert!(detail.shows("can no longer grant"), "{}", detail.body);
    // Not rolled into a fresh admin secret (the page offers no roll; a forged one fails)…
    assert!(!detail.body.contains("/roll\""), "no roll form");
    let token = member.get("/settings/api-keys/new").await.form_token();
    let res = member
        .post(
            &format!("/settings/api-keys/{id}/roll"),
            &[("form_token", &token), ("grace", "now")],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.body);
    // …nor extended…
    let res = member
        .post(
            &format!("/settings/api-keys/{id}"),
            &[
                ("name", "admin key"),
                ("scopes", "read"),
                ("scopes", "admin"),
                ("expiry", "1y"),
                ("rate_window", "minute"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.body);
    // …but narrowed: dropping the admin scope is theirs to do…
    member.get(&format!("/settings/api-keys/{id}/edit")).await;
    let res = member
        .post(
            &format!("/settings/api-keys/{id}"),
            &[
                ("name", "admin key"),
                ("scopes", "read"),
                ("expiry", "keep"),
                ("rate_window", "minute"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let key = app.store.key(&org, &id).await.unwrap().unwrap();
    assert_eq!(key.scope_list(), vec!["read".to_string()]);
    // …and, narrowed to what they may grant, it is theirs to roll again…
    let token = member.get("/settings/api-keys/new").await.form_token();
    let res = member
        .post(
            &format!("/settings/api-keys/{id}/roll"),
            &[("form_token", &token), ("grace", "now")],
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let (keys, _) = app
        .store
        .list_keys(
            &org,
            &keyward::store::KeyFilter::default(),
            app.state.clock.unix(),
            100,
            0,
        )
        .await
        .unwrap();
    let id = keys
        .into_iter()
        .find(|k| k.rolled_from.as_deref() == Some(id.as_str()))
        .expect("the rolled key")
        .id;
    // …and revocable by its creator.
    member.get(&format!("/settings/api-keys/{id}")).await;
    let res = member
        .post(&format!("/settings/api-keys/{id}/revoke"), &[])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
}
both!(a_demoted_member_cannot_renew_an_admin_key);

async fn a_closed_key_is_a_conflict_in_both_doors(app: TestApp) {
    let mut admin = app.signed_up("closed@example.com").await;
    let (_, mgmt) = key_with(&mut admin, "mgmt", &["read", "keys:write"], &[]).await;
    let (id, _) = key_with(&mut admin, "gone", &["read"], &[]).await;
    admin.get(&format!("/settings/api-keys/{id}")).await;
    admin
        .post(&format!("/settings/api-keys/{id}/revoke"), &[])
        .await;
    let res = admin
        .post(
            &format!("/settings/api-keys/{id}"),
            &[
                ("name", "renamed"),
                ("scopes", "read"),
                ("rate_window", "minute"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::CONFLICT, "{}", res.body);
    let (s, e) = call(
        &app,
        &mgmt,
        Method::PATCH,
        &format!("/api/v1/keys/{id}"),
        Some(json!({ "name": "renamed" })),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
}
both!(a_closed_key_is_a_conflict_in_both_doors);

async fn a_burst_of_one_create_form_makes_one_key(app: TestApp) {
    let mut admin = app.signed_up("burst@example.com").await;
    let form = admin.get("/settings/api-keys/new").await;
    let token = form.form_token();
    let csrf = admin.csrf.clone().unwrap();
    let org = admin.org.clone().unwrap();
    let body = serde_urlencoded::to_string([
        ("csrf", csrf.as_str()),
        ("org", org.as_str()),
        ("form_token", token.as_str()),
        ("name", "burst"),
        ("environment", "live"),
        ("preset", "Read-only"),
        ("expiry", "30d"),
    ])
    .unwrap();
    let sends = (0..8).map(|_| {
        admin
            .client
            .post(format!("{}/settings/api-keys", app.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
    });
    let results = futures_util::future::join_all(sends).await;
    let shown = results
        .into_iter()
        .filter(|r| r.as_ref().unwrap().status() == StatusCode::OK)
        .count();
    assert_eq!(shown, 1, "one submit shows a key");
    let events = app.audit_events().await;
    let created = events.iter().filter(|(a, _)| a == "key.created").count();
    assert_eq!(created, 1, "{events:?}");
}
both!(a_burst_of_one_create_form_makes_one_key);

async fn control_characters_are_refused_in_both_doors(app: TestApp) {
    let mut admin = app.signed_up("nul@example.com").await;
    let (_, mgmt) = key_with(&mut admin, "mgmt", &["read", "keys:write"], &[]).await;
    let (id, _) = key_with(&mut admin, "target", &["read"], &[]).await;
    allow_key_minting(&mut admin, true).await;
    // The dashboard form.
    for (field, value) in [
        ("name", "a\u{0}b"),
        ("description", "a\u{0}b"),
        ("name", "\u{202E}gnp.exe"),
        ("custom_date", "2030-01-01\u{0}"),
        ("ip_allowlist", "10.0.0.1\u{0}"),
        ("metadata", "{\"a\": \"\u{0}\"}"),
    ] {
        let mut fields = vec![
            ("name", "ok"),
            ("environment", "live"),
            ("preset", "Read-only"),
            (
                "expiry",
                if field == "custom_date" {
                    "custom"
                } else {
                    "30d"
                },
            ),
        ];
        fields.retain(|(f, _)| *f != field);
        fields.push((field, value));
        let page = admin.create_key(&fields).await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{field}: {}",
            page.body
        );
    }
    // The management API, on create and on edit.
    for (field, value) in [
        ("name", json!("a\u{0}b")),
        ("description", json!("a\u{0}b")),
        ("name", json!("\u{2067}abc")),
        ("metadata", json!({ "a": "\u{0}" })),
    ] {
        let mut body = json!({ "name": "ok", "environment": "live", "scopes": ["read"] });
        body[field] = value.clone();
        let (s, e) = call(&app, &mgmt, Method::POST, "/api/v1/keys", Some(body)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {e}");
        assert!(e["error"]["fields"][field].is_string(), "{field}: {e}");
        let mut patch = json!({});
        patch[field] = value;
        let (s, e) = call(
            &app,
            &mgmt,
            Method::PATCH,
            &format!("/api/v1/keys/{id}"),
            Some(patch),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {e}");
        assert!(e["error"]["fields"][field].is_string(), "{field}: {e}");
    }
    // Path ids and searches.
    let (s, e) = call(&app, &mgmt, Method::GET, "/api/v1/keys/ab%00cd", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, e) = call(&app, &mgmt, Method::GET, "/api/v1/keys?search=a%00b", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let page = admin.get("/settings/api-keys/ab%00cd").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    let page = admin.get("/settings/api-keys?q=a%00b").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
}
both!(control_characters_are_refused_in_both_doors);

async fn the_create_form_starts_on_the_least_privileged_preset(app: TestApp) {
    let mut b = app.signed_up("newcomer@example.com").await;
    let form = b.get("/settings/api-keys/new").await;
    assert!(
        form.body.contains(r#"value="Read-only" checked"#),
        "{}",
        form.body
    );
    assert!(!form.body.contains(r#"value="custom" checked"#));
    // Naming the key and pressing Create (the form's defaults) makes a read-only key.
    let page = b
        .create_key(&[
            ("name", "first"),
            ("environment", "live"),
            ("preset", "Read-only"),
            ("expiry", "90d"),
        ])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let v = app
        .state
        .verifier
        .verify(page.new_key().as_deref(), &[])
        .await
        .unwrap();
    assert_eq!(v.scope_list(), ["read".to_string()]);
}
both!(the_create_form_starts_on_the_least_privileged_preset);

async fn a_key_revokes_itself_by_possession(app: TestApp) {
    let mut admin = app.signed_up("leaked@example.com").await;
    // Any key, with no management scope.
    let (id, key) = key_with(&mut admin, "leaked", &["read"], &[]).await;
    let (_, other) = key_with(&mut admin, "other", &["read"], &[]).await;
    let (s, _) = call(&app, &key, Method::DELETE, "/api/v1/keys/current", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let v = app.state.verifier.verify(Some(&key), &[]).await.unwrap();
    assert_eq!(v.code, keyward::VerifyCode::Revoked);
    assert!(works(&app, &other).await, "only the presented key");
    // Once: then, like an unknown or malformed key, 401.
    for k in [key.as_str(), "kw_live_nope"] {
        let (s, e) = call(&app, k, Method::DELETE, "/api/v1/keys/current", None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
        assert_eq!(e["error"]["code"], "invalid_api_key");
    }
    let res = reqwest::Client::new()
        .delete(format!("{}/api/v1/keys/current", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // The audit log names the key itself.
    let events = app.audit_events().await;
    let (_, details) = events
        .iter()
        .find(|(a, d)| a == "key.revoked" && d["via"]["api_key"] == id.as_str())
        .expect("a key.revoked event");
    assert_eq!(details["by_possession"], true);
}
both!(a_key_revokes_itself_by_possession);

async fn revocations_carry_a_reason(app: TestApp) {
    let mut admin = app.signed_up("reasons@example.com").await;
    let (_, mgmt) = key_with(&mut admin, "mgmt", &["read", "keys:write"], &[]).await;
    // The dashboard asks for a reason; the key's page and the audit log show it.
    let (id, _) = key_with(&mut admin, "leaky", &["read"], &[]).await;
    let detail = admin.get(&format!("/settings/api-keys/{id}")).await;
    assert!(detail.body.contains(r#"name="reason""#), "the form asks");
    let res = admin
        .post(
            &format!("/settings/api-keys/{id}/revoke"),
            &[("reason", "compromised"), ("note", "pasted in a CI log")],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let detail = admin.get(&format!("/settings/api-keys/{id}")).await;
    assert!(
        detail
            .body
            .contains("Compromised (leaked or exposed): pasted in a CI log"),
        "{}",
        detail.body
    );
    let log = admin.get("/settings/audit-log").await;
    assert!(log.body.contains("compromised"), "in the audit log");
    // "Other" needs a note; an unknown reason is refused; nothing is revoked then.
    let (id2, key2) = key_with(&mut admin, "second", &["read"], &[]).await;
    admin.get(&format!("/settings/api-keys/{id2}")).await;
    let res = admin
        .post(
            &format!("/settings/api-keys/{id2}/revoke"),
            &[("reason", "other")],
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.body);
    for body in [
        json!({ "reason": "bogus" }),
        json!({ "reason": "other" }),
        json!({ "reason": "" }),
    ] {
        let (s, e) = call(
            &app,
            &mgmt,
            Method::POST,
            &format!("/api/v1/keys/{id2}/revoke"),
            Some(body),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert!(e["error"]["fields"]["reason"].is_string(), "{e}");
    }
    // A body that is not an object is malformed.
    let (s, e) = call(
        &app,
        &mgmt,
        Method::POST,
        &format!("/api/v1/keys/{id2}/revoke"),
        Some(json!([null, null])),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(works(&app, &key2).await);
    // The API takes the same reasons.
    let (s, e) = call(
        &app,
        &mgmt,
        Method::POST,
        &format!("/api/v1/keys/{id2}/revoke"),
        Some(json!({ "reason": "rotated", "note": "replaced by ci-2" })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let events = app.audit_events().await;
    let reasons: Vec<&Value> = events
        .iter()
        .filter(|(a, _)| a == "key.revoked")
        .map(|(_, d)| &d["reason"])
        .collect();
    assert_eq!(reasons, [&json!("compromised"), &json!("rotated")]);
}
both!(revocations_carry_a_reason);

async fn the_key_policy_requires_descriptions_and_sets_the_default_expiry(app: TestApp) {
    let mut admin = app.signed_up("policy@example.com").await;
    let (id, mgmt) = key_with(&mut admin, "mgmt", &["read", "keys:write"], &[]).await;
    allow_key_minting(&mut admin, true).await;
    admin.get("/settings/organization").await;
    let res = admin
        .post(
            "/settings/organization/key-policy",
            &[("require_description", "1"), ("default_expiry", "30d")],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let page = admin.get("/settings/organization").await;
    assert!(
        page.body
            .contains(r#"name="require_description" value="1" checked"#)
    );
    assert!(page.body.contains(r#"<option value="30d" selected>"#));
    let res = admin
        .post(
            "/settings/organization/key-policy",
            &[("default_expiry", "forever")],
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    // The create form starts on the policy's expiry.
    let form = admin.get("/settings/api-keys/new").await;
    assert!(
        form.body.contains(r#"<option value="30d" selected>"#),
        "{}",
        form.body
    );
    // No description: refused in both doors, on create and on edit.
    let page = admin
        .create_key(&[
            ("name", "undescribed"),
            ("environment", "live"),
            ("preset", "Read-only"),
            ("expiry", "30d"),
        ])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.body.contains("requires a description"),
        "{}",
        page.body
    );
    let (s, e) = call(
        &app,
        &mgmt,
        Method::POST,
        "/api/v1/keys",
        Some(json!({ "name": "ci", "environment": "live", "scopes": ["read"] })),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["error"]["fields"]["description"].is_string(), "{e}");
    let (s, e) = call(
        &app,
        &mgmt,
        Method::PATCH,
        &format!("/api/v1/keys/{id}"),
        Some(json!({ "description": "" })),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (s, e) = call(
        &app,
        &mgmt,
        Method::POST,
        "/api/v1/keys",
        Some(json!({ "name": "ci", "description": "deploys", "environment": "live", "scopes": ["read"] })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    // The change is audited.
    let events = app.audit_events().await;
    assert!(events.iter().any(|(a, d)| a == "org.key_policy_changed"
        && d["require_description"] == true
        && d["default_expiry"] == "30d"));
}
both!(the_key_policy_requires_descriptions_and_sets_the_default_expiry);

async fn the_openapi_document_names_each_refusal(app: TestApp) {
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", app.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let codes = |path: &str, method: &str| -> Vec<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    for (path, method, expected) in [
        (
            "/api/v1/keys",
            "get",
            &["200", "400", "401", "403", "429"][..],
        ),
        (
            "/api/v1/keys/{id}",
            "patch",
            &[
                "200", "400", "401", "403", "404", "409", "415", "422", "429",
            ][..],
        ),
        (
            "/api/v1/keys/{id}/revoke",
            "post",
            &["200", "400", "401", "403", "404", "409", "422", "429"][..],
        ),
        ("/api/v1/keys/current", "delete", &["204", "401"][..]),
    ] {
        assert_eq!(codes(path, method), expected, "{method} {path}");
        for code in expected.iter().filter(|c| !c.starts_with('2')) {
            let d = &doc["paths"][path][method]["responses"][code]["description"];
            assert!(
                !d.as_str().unwrap_or("").is_empty(),
                "{method} {path} {code}"
            );
        }
    }
}
both!(the_openapi_document_names_each_refusal);
