//! Settings → Key policy's maximum lifetime (new, extended and rolled keys; existing keys
//! kept until a date or blocked at verification) and Settings → API Keys → Key hygiene
//! (the groups and their bulk actions).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    api::{call, dashboard_key as key_with},
    both,
    helpers::{Browser, PASSWORD, TestApp},
    security::{add_member, switch_to},
};

/// A read-only key with this expiry choice: (id, plaintext).
async fn key_expiring(b: &mut Browser, name: &str, expiry: &str) -> (String, String) {
    let page = b
        .create_key(&[
            ("name", name),
            ("environment", "live"),
            ("preset", "custom"),
            ("scopes", "read"),
            ("expiry", expiry),
        ])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    (page.key_id(), page.new_key().unwrap())
}

/// Submits Key hygiene's bulk form and follows the redirect to the page it lands on.
async fn bulk(b: &mut Browser, fields: &[(&str, &str)]) -> crate::helpers::Page {
    let res = b.post("/settings/api-keys/hygiene", fields).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    b.get(res.location()).await
}

async fn verify(app: &TestApp, key: &str) -> (bool, String) {
    let v = app.state.verifier.verify(Some(key), &[]).await.unwrap();
    (v.valid, format!("{:?}", v.code))
}

fn date_in(app: &TestApp, days: i64) -> String {
    (time::OffsetDateTime::from_unix_timestamp(app.state.clock.unix()).unwrap()
        + time::Duration::days(days))
    .date()
    .to_string()
}

fn rfc3339_in(app: &TestApp, days: i64) -> String {
    (time::OffsetDateTime::from_unix_timestamp(app.state.clock.unix()).unwrap()
        + time::Duration::days(days))
    .format(&time::format_description::well_known::Rfc3339)
    .unwrap()
}

/// Saves the key policy form; returns the response.
async fn set_policy(b: &mut Browser, fields: &[(&str, &str)]) -> crate::helpers::Page {
    b.get("/settings/organization").await;
    b.post("/settings/organization/key-policy", fields).await
}

async fn a_maximum_lifetime_bounds_new_extended_and_rolled_keys(app: TestApp) {
    let mut owner = app.signed_up("lifetime@example.com").await;
    let (api_id, api_key) = key_with(&mut owner, "automation", &["read", "keys:write"], &[]).await;
    let res = set_policy(
        &mut owner,
        &[
            ("default_expiry", "30d"),
            ("max_lifetime_days", "60"),
            ("existing", "block"),
        ],
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);

    // The create form offers only what the policy allows, and says why.
    let form = owner.get("/settings/api-keys/new").await;
    assert!(form.shows("keys live at most 60 days"), "{}", form.body);
    assert!(
        !form.body.contains(r#"value="never""#),
        "no “never” offered"
    );
    assert!(!form.body.contains(r#"value="90d""#), "no 90 days offered");
    assert!(form.body.contains(r#"value="30d" selected"#), "the default");
    // A forged choice beyond the maximum is refused with the reason.
    for expiry in [
        vec![("expiry", "never")],
        vec![("expiry", "90d")],
        vec![("expiry", "custom"), ("custom_date", "")],
    ] {
        let date = date_in(&app, 61);
        let mut fields = vec![
            ("name", "too long"),
            ("environment", "live"),
            ("preset", "custom"),
            ("scopes", "read"),
        ];
        for (k, v) in &expiry {
            fields.push((k, if v.is_empty() { date.as_str() } else { v }));
        }
        let page = owner.create_key(&fields).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{expiry:?}");
        assert!(page.shows("at most 60 days"), "{}", page.body);
    }
    let (ok_id, _) = key_with(&mut owner, "within", &["read"], &[]).await;

    // Extending beyond the maximum is refused in both doors; shortening is fine.
    owner.get(&format!("/settings/api-keys/{ok_id}")).await;
    let res = owner
        .post(
            &format!("/settings/api-keys/{ok_id}"),
            &[
                ("name", "within"),
                ("scopes", "read"),
                ("expiry", "never"),
                ("rate_window", "minute"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.body);
    assert!(res.shows("at most 60 days"), "{}", res.body);
    let path = format!("/api/v1/keys/{ok_id}");
    let (s, e) = call(
        &app,
        &api_key,
        Method::PATCH,
        &path,
        Some(json!({ "expires_at": rfc3339_in(&app, 61) })),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e.to_string().contains("at most 60 days"), "{e}");
    let (s, e) = call(
        &app,
        &api_key,
        Method::PATCH,
        &path,
        Some(json!({ "expires_at": rfc3339_in(&app, 10) })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{e}");

    // The API cannot create a key without an expiry, or beyond the maximum.
    let mut admin_ui = owner;
    allow_minting(&mut admin_ui).await;
    for body in [
        json!({ "name": "no expiry", "environment": "live", "scopes": ["read"] }),
        json!({ "name": "far", "environment": "live", "scopes": ["read"], "expires_at": rfc3339_in(&app, 61) }),
    ] {
        let (s, e) = call(&app, &api_key, Method::POST, "/api/v1/keys", Some(body)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    }
    let (s, e) = call(
        &app,
        &api_key,
        Method::POST,
        "/api/v1/keys",
        Some(json!({ "name": "near", "environment": "live", "scopes": ["read"], "expires_at": rfc3339_in(&app, 59) })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");

    // A key made before the policy (30 days, so within it) still rolls; shortening the
    // policy below its remaining life stops the roll until its expiry is shortened.
    let res = set_policy(
        &mut admin_ui,
        &[
            ("default_expiry", "7d"),
            ("max_lifetime_days", "7"),
            ("existing", "until"),
            ("until", &date_in(&app, 3)),
        ],
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let (s, e) = call(
        &app,
        &api_key,
        Method::POST,
        &format!("/api/v1/keys/{api_id}/roll"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e.to_string().contains("maximum key lifetime"), "{e}");
    let detail = admin_ui.get(&format!("/settings/api-keys/{api_id}")).await;
    assert!(
        detail.shows("Beyond the maximum key lifetime"),
        "{}",
        detail.body
    );
    assert!(!detail.body.contains("/roll\""), "no roll form offered");
}
both!(a_maximum_lifetime_bounds_new_extended_and_rolled_keys);

async fn allow_minting(b: &mut Browser) {
    crate::api::allow_key_minting(b, true).await;
}

async fn existing_keys_beyond_the_maximum_keep_working_until_the_date(app: TestApp) {
    let mut owner = app.signed_up("grace@example.com").await;
    let (forever_id, forever) = key_expiring(&mut owner, "forever", "never").await;
    let (_, month) = key_with(&mut owner, "month", &["read"], &[]).await;

    let res = set_policy(
        &mut owner,
        &[
            ("default_expiry", "7d"),
            ("max_lifetime_days", "14"),
            ("existing", "until"),
            ("until", &date_in(&app, 10)),
        ],
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let settings = owner.get("/settings/organization").await;
    assert!(
        settings.shows("2 existing key(s) expire later than it allows"),
        "{}",
        settings.body
    );
    // Until the date, both work; the key's page says what will happen.
    assert_eq!(verify(&app, &forever).await, (true, "Valid".into()));
    let detail = owner.get(&format!("/settings/api-keys/{forever_id}")).await;
    assert!(detail.shows("It keeps working until"), "{}", detail.body);

    // After it, they are refused with a code that says why, in every door.
    app.clock.advance(time::Duration::days(11));
    assert_eq!(
        verify(&app, &forever).await,
        (false, "ExceedsMaxLifetime".into())
    );
    let res = reqwest::Client::new()
        .get(format!("{}/v1/auth", app.base))
        .header("authorization", format!("Bearer {forever}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "exceeds_max_lifetime", "{body}");
    // The month key now has 19 days left, still beyond 14: refused too.
    assert_eq!(verify(&app, &month).await.1, "ExceedsMaxLifetime");
    // Five days later it complies again (the life left is what counts).
    app.clock.advance(time::Duration::days(6));
    assert_eq!(verify(&app, &month).await, (true, "Valid".into()));

    // Key hygiene lists the one still beyond; a bulk expiry brings it back within. (The
    // session ended while the clock moved on: sign in again.)
    owner.sign_in("grace@example.com", PASSWORD).await;
    let page = owner
        .get("/settings/api-keys/hygiene?show=beyond_lifetime")
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.shows("forever"), "{}", page.body);
    assert!(!page.body.contains(">month</a>"), "{}", page.body);
    let page = bulk(
        &mut owner,
        &[
            ("show", "beyond_lifetime"),
            ("keys", &forever_id),
            ("action", "expire"),
            ("expiry", "7d"),
        ],
    )
    .await;
    assert!(page.shows("Set the expiry of 1 key(s)."), "{}", page.body);
    assert_eq!(verify(&app, &forever).await, (true, "Valid".into()));
    // A bulk expiry beyond the maximum is refused with the reason.
    let page = bulk(
        &mut owner,
        &[
            ("show", "never_expires"),
            ("keys", &forever_id),
            ("action", "expire"),
            ("expiry", "custom"),
            ("custom_date", &date_in(&app, 30)),
        ],
    )
    .await;
    assert!(page.shows("at most 14 days"), "{}", page.body);
}
both!(existing_keys_beyond_the_maximum_keep_working_until_the_date);

async fn blocking_existing_keys_at_once_and_lifting_the_policy(app: TestApp) {
    let mut owner = app.signed_up("block@example.com").await;
    let (_, forever) = key_expiring(&mut owner, "forever", "never").await;
    assert!(verify(&app, &forever).await.0);
    let res = set_policy(
        &mut owner,
        &[
            ("default_expiry", "30d"),
            ("max_lifetime_days", "90"),
            ("existing", "block"),
        ],
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(verify(&app, &forever).await.1, "ExceedsMaxLifetime");
    // The change is audited with what it does.
    let (events, _) = app
        .store
        .list_audit(
            owner.org.as_deref().unwrap(),
            &keyward::store::AuditFilter::default(),
            10,
            0,
        )
        .await
        .unwrap();
    let e = events
        .iter()
        .find(|e| e.action == "org.key_policy_changed")
        .expect("audited");
    assert!(
        e.details.contains("\"max_lifetime_days\":90"),
        "{}",
        e.details
    );
    // Lifting the maximum lets it work again.
    let res = set_policy(
        &mut owner,
        &[("default_expiry", "30d"), ("max_lifetime_days", "")],
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert!(verify(&app, &forever).await.0);
}
both!(blocking_existing_keys_at_once_and_lifting_the_policy);

async fn the_policy_form_refuses_what_cannot_hold(app: TestApp) {
    let mut owner = app.signed_up("policyform@example.com").await;
    owner.get("/settings/organization").await;
    let org = owner.org.clone().unwrap();
    for (fields, message) in [
        (
            vec![
                ("default_expiry", "1y"),
                ("max_lifetime_days", "90"),
                ("existing", "block"),
            ],
            "must fit within the maximum lifetime of 90 days",
        ),
        (
            vec![("default_expiry", "30d"), ("max_lifetime_days", "0")],
            "number of days from 1 to",
        ),
        (
            vec![
                ("default_expiry", "30d"),
                ("max_lifetime_days", "60"),
                ("existing", "until"),
                ("until", "2001-01-01"),
            ],
            "in the past",
        ),
    ] {
        let res = set_policy(&mut owner, &fields).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{fields:?}");
        assert!(res.shows(message), "{}", res.body);
        // What was typed is still there to correct.
        assert!(
            res.body.contains(&format!(
                r#"name="max_lifetime_days" inputmode="numeric" value="{}""#,
                fields[1].1
            )),
            "{}",
            res.body
        );
        let saved = app.store.org(&org).await.unwrap().unwrap();
        assert_eq!(saved.lifetime.max_lifetime_days, None, "nothing saved");
    }
}
both!(the_policy_form_refuses_what_cannot_hold);

async fn key_hygiene_groups_and_bulk_revoke(app: TestApp) {
    let mut owner = app.signed_up("hygiene@example.com").await;
    owner.get("/orgs/new").await;
    owner.post("/orgs", &[("name", "Hygienic")]).await;
    owner.get("/settings/api-keys/new").await;
    let org = owner.org.clone().unwrap();
    let (forever_id, _) = key_expiring(&mut owner, "forever", "never").await;
    let (used_id, used) = key_with(&mut owner, "used", &["read"], &[]).await;
    assert!(verify(&app, &used).await.0);
    app.state.verifier.flush().await.unwrap();
    let mut dev = app.signed_up("leaver@example.com").await;
    add_member(&app, &org, "leaver@example.com", "developer").await;
    switch_to(&mut dev, &org).await;
    let (left_id, _) = key_expiring(&mut dev, "leaver's", "90d").await;
    // A developer may not open the view.
    let res = dev.get("/settings/api-keys/hygiene").await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let leaver = app
        .store
        .user_by_email("leaver@example.com")
        .await
        .unwrap()
        .unwrap();
    owner.get("/settings/members").await;
    let res = owner
        .post(&format!("/settings/members/{}/remove", leaver.id), &[])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);

    let counts = |body: &str, label: &str| -> i64 {
        let re = regex::Regex::new(&format!(
            r#"{}[^<]*<span class="badge">(\d+)</span>"#,
            regex::escape(label)
        ))
        .unwrap();
        re.captures(body).map_or(-1, |c| c[1].parse().unwrap())
    };
    let page = owner.get("/settings/api-keys/hygiene").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(counts(&page.body, "Never expire"), 1, "{}", page.body);
    assert_eq!(counts(&page.body, "Never used"), 2);
    assert_eq!(counts(&page.body, "Created by former members"), 1);
    assert_eq!(counts(&page.body, "Unused for 90 days"), 0);
    assert!(
        !page.shows("Beyond the maximum lifetime"),
        "no policy, no group"
    );
    // 31 days on, the unused ones (created then, used never or not since) show.
    app.clock.advance(time::Duration::days(31));
    owner.sign_in("hygiene@example.com", PASSWORD).await;
    switch_to(&mut owner, &org).await;
    let page = owner
        .get("/settings/api-keys/hygiene?show=unused&days=30")
        .await;
    assert_eq!(counts(&page.body, "Unused for 30 days"), 2, "{}", page.body);
    assert!(page.body.contains(&forever_id) && page.body.contains(&left_id));
    assert!(
        !page.body.contains(&used_id),
        "used and since expired: not open"
    );

    // Bulk revoke asks for a reason, and records it per key.
    let page = bulk(
        &mut owner,
        &[
            ("show", "unused"),
            ("keys", &forever_id),
            ("keys", &left_id),
            ("action", "revoke"),
            ("reason", "other"),
        ],
    )
    .await;
    assert!(page.shows("Say why in the note"), "{}", page.body);
    let page = bulk(
        &mut owner,
        &[
            ("show", "unused"),
            ("keys", &forever_id),
            ("keys", &left_id),
            ("action", "revoke"),
            ("reason", "no_longer_needed"),
        ],
    )
    .await;
    assert!(page.shows("Revoked 2 key(s)."), "{}", page.body);
    assert!(page.shows("No keys in this group"), "{}", page.body);
    let (events, _) = app
        .store
        .list_audit(&org, &keyward::store::AuditFilter::default(), 50, 0)
        .await
        .unwrap();
    let revoked: Vec<_> = events
        .iter()
        .filter(|e| e.action == "key.revoked")
        .collect();
    assert_eq!(revoked.len(), 2);
    assert!(
        revoked
            .iter()
            .all(|e| e.details.contains("no_longer_needed"))
    );
    // Keys of another organization cannot be slipped in.
    let mut other = app.signed_up("other-hygiene@example.com").await;
    let (foreign, foreign_key) = key_with(&mut other, "foreign", &["read"], &[]).await;
    let res = owner
        .post(
            "/settings/api-keys/hygiene",
            &[
                ("show", "never_used"),
                ("keys", &foreign),
                ("action", "revoke"),
                ("reason", "compromised"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.body);
    assert!(verify(&app, &foreign_key).await.0);
}
both!(key_hygiene_groups_and_bulk_revoke);
