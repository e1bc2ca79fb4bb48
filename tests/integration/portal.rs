//! Issue 14 §2–§3: sign-in hand-offs from the team's app (portal sessions), and
//! organizations mapped to the team's customers by external id on every door.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    both,
    helpers::{PASSWORD, TestApp},
};
use keyward::config::{TEST_OPERATOR_TOKEN, TEST_VERIFIER_TOKEN};

/// The allowed return origin of `Config::for_tests`.
const RETURN: &str = "http://127.0.0.1:9/account";

async fn operator(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", app.base))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn handoff(user: &str, email: &str, org: &str) -> Value {
    json!({
        "external_user_id": user,
        "email": email,
        "name": "Ada Customer",
        "organization": { "external_id": org, "name": format!("Customer {org}") },
        "role": "admin",
        "return_url": RETURN,
    })
}

/// Asks for a hand-off link; answers its path on Keyward.
async fn link(app: &TestApp, body: Value) -> String {
    let (status, body) = operator(
        app,
        reqwest::Method::POST,
        "/api/v1/portal/sessions",
        Some(TEST_OPERATOR_TOKEN),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let url = body["data"]["url"].as_str().unwrap();
    assert!(body["data"]["expires_at"].is_string(), "{body}");
    url.strip_prefix(&app.base)
        .expect("a link on Keyward")
        .to_string()
}

/// Opens a hand-off link as a person does: the page says whom and where; Continue posts.
async fn enter(b: &mut crate::helpers::Browser, path: &str) -> crate::helpers::Page {
    let page = b.get(path).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.shows("Continue to your API keys"), "{}", page.body);
    b.post(path, &[]).await
}

async fn a_handoff_signs_the_person_in_once(app: TestApp) {
    let path = link(&app, handoff("u-1", "ada@customer.test", "cus_1")).await;
    // The token is long (≥ 128 bits) and only its hash is stored.
    let token = path.strip_prefix("/portal/").unwrap();
    assert!(token.len() >= 43, "{token}");
    assert!(!app.dump_database().await.contains(token));

    let mut b = app.browser();
    let before = b.get("/login").await;
    let old_cookie = b.session_cookie(&before);
    // Opening the link alone signs no one in and uses nothing (a link someone sends
    // cannot silently put a browser in their account).
    let shown = b.get(&path).await;
    assert!(shown.shows("ada@customer.test"), "{}", shown.body);
    assert!(shown.shows("Customer cus_1"), "{}", shown.body);
    assert_eq!(
        b.get("/settings/api-keys").await.status,
        StatusCode::SEE_OTHER
    );
    let res = enter(&mut b, &path).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(res.location(), "/settings/api-keys");
    let new_cookie = b.session_cookie(&res).expect("a new session cookie");
    assert_ne!(Some(new_cookie), old_cookie, "a new session id");
    let page = b.get("/settings/api-keys").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.shows("Customer cus_1"), "{}", page.body);
    assert!(
        page.body.contains(&format!("href=\"{RETURN}\"")),
        "Back to the app"
    );
    assert!(page.shows("Back to Keyward"), "the product's name");
    // The person can create a key in their organization.
    let (_, key) = b.new_key("from the portal").await;
    let (_, v) = app.verify_api(json!({ "key": key })).await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["external_org_id"], "cus_1", "{v}");
    // Listed under the account's sessions, and sign-out works as for any session.
    let sessions = b.get("/settings/account/sessions").await;
    assert_eq!(sessions.status, StatusCode::OK);
    assert!(sessions.shows("this session"), "{}", sessions.body);
    let out = b.post("/logout", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), RETURN, "back to the team's app");
    assert_eq!(
        b.get("/settings/api-keys").await.status,
        StatusCode::SEE_OTHER,
        "signed out"
    );

    // Single use: a second opening (any browser) is refused, and so is a replayed post.
    let again = app.browser().get(&path).await;
    assert_eq!(again.status, StatusCode::GONE, "{}", again.body);
    assert!(again.shows("expired or was already used"), "{}", again.body);
    let mut other = app.browser();
    other.get("/login").await;
    let replay = other.post(&path, &[]).await;
    assert_eq!(replay.status, StatusCode::GONE, "{}", replay.body);

    let events: Vec<String> = app.audit_events().await.into_iter().map(|e| e.0).collect();
    for action in [
        "portal.link_issued",
        "user.created_by_portal",
        "org.created_by_operator",
        "member.added",
        "auth.signed_in",
    ] {
        assert!(events.iter().any(|a| a == action), "{action}: {events:?}");
    }
}
both!(a_handoff_signs_the_person_in_once);

async fn a_handoff_link_expires(app: TestApp) {
    let path = link(&app, handoff("u-2", "bo@customer.test", "cus_2")).await;
    app.clock
        .advance(time::Duration::seconds(keyward::portal::LINK_TTL_SECS + 1));
    let res = app.browser().get(&path).await;
    assert_eq!(res.status, StatusCode::GONE, "{}", res.body);
    // Nothing was provisioned by the expired link.
    assert!(
        app.store
            .org_by_external_id("cus_2")
            .await
            .unwrap()
            .is_none()
    );
    // An unknown token looks the same.
    let res = app.browser().get("/portal/not-a-real-token").await;
    assert_eq!(res.status, StatusCode::GONE);
}
both!(a_handoff_link_expires);

async fn handoffs_need_the_operator_credential(app: TestApp) {
    for token in [
        None,
        Some(TEST_VERIFIER_TOKEN),
        Some("wrong-operator-token-123"),
    ] {
        let (status, body) = operator(
            &app,
            reqwest::Method::POST,
            "/api/v1/portal/sessions",
            token,
            handoff("u-3", "cy@customer.test", "cus_3"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // A dashboard session is not an operator either.
    let b = app.signed_up("member@example.com").await;
    let res = b
        .client
        .post(format!("{}/api/v1/portal/sessions", app.base))
        .json(&handoff("u-3", "cy@customer.test", "cus_3"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
both!(handoffs_need_the_operator_credential);

async fn handoff_fields_are_checked(app: TestApp) {
    let mut body = handoff("u-4", "not-an-email", "cus_4");
    body["return_url"] = json!("https://evil.test/steal");
    body["role"] = json!("emperor");
    body["organization"]["external_id"] = json!("");
    let (status, res) = operator(
        &app,
        reqwest::Method::POST,
        "/api/v1/portal/sessions",
        Some(TEST_OPERATOR_TOKEN),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{res}");
    let fields = &res["error"]["fields"];
    assert!(
        fields["return_url"]
            .as_str()
            .unwrap()
            .contains("http://127.0.0.1:9"),
        "{res}"
    );
    for f in ["email", "role", "organization.external_id"] {
        assert!(fields[f].is_string(), "{f}: {res}");
    }
    // Nothing was issued.
    assert!(
        !app.audit_events()
            .await
            .iter()
            .any(|e| e.0 == "portal.link_issued")
    );
    let (status, _) = operator(
        &app,
        reqwest::Method::POST,
        "/api/v1/portal/sessions",
        Some(TEST_OPERATOR_TOKEN),
        json!({ "external_user_id": "x" }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "missing fields");
}
both!(handoff_fields_are_checked);

async fn the_same_external_user_is_the_same_account(app: TestApp) {
    let first = link(&app, handoff("u-5", "dee@customer.test", "cus_5")).await;
    let mut b = app.browser();
    assert_eq!(enter(&mut b, &first).await.status, StatusCode::SEE_OTHER);
    let mut again = handoff("u-5", "dee.new@customer.test", "cus_5");
    again["name"] = json!("Dee Renamed");
    again["role"] = json!("viewer");
    let second = link(&app, again).await;
    let mut b2 = app.browser();
    assert_eq!(enter(&mut b2, &second).await.status, StatusCode::SEE_OTHER);
    let org = app
        .store
        .org_by_external_id("cus_5")
        .await
        .unwrap()
        .unwrap();
    let members = app.store.members(&org.id).await.unwrap();
    assert_eq!(members.len(), 1, "one account, not two: {members:?}");
    assert_eq!(members[0].email, "dee.new@customer.test");
    assert_eq!(members[0].name, "Dee Renamed");
    // The organization's only owner stays its owner (whatever `role` says).
    assert_eq!(members[0].role, "owner");
    assert_eq!(b2.get("/settings/api-keys").await.status, StatusCode::OK);
}
both!(the_same_external_user_is_the_same_account);

async fn a_handoff_never_takes_over_a_password_account(app: TestApp) {
    // Someone already has a password account with this email and keys in their own org.
    let mut owner = app.signed_up("victim@example.com").await;
    let (_, victim_key) = owner.new_key("victim's key").await;
    let victim = app
        .store
        .user_by_email("victim@example.com")
        .await
        .unwrap()
        .unwrap();

    // The team's app hands in a person claiming that email.
    let path = link(&app, handoff("u-6", "victim@example.com", "cus_6")).await;
    let mut b = app.browser();
    assert_eq!(enter(&mut b, &path).await.status, StatusCode::SEE_OTHER);
    let page = b.get("/settings/api-keys").await;
    assert!(page.shows("Customer cus_6"), "{}", page.body);
    assert!(!page.shows("victim's key"), "{}", page.body);
    // The hand-off's account is a separate one, in none of the victim's organizations.
    let org = app
        .store
        .org_by_external_id("cus_6")
        .await
        .unwrap()
        .unwrap();
    let members = app.store.members(&org.id).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_ne!(members[0].user_id, victim.id, "never the existing account");
    for m in app.store.memberships(&victim.id).await.unwrap() {
        assert_ne!(m.org_id, org.id);
    }
    // The password account still signs in as before and still finds its own account.
    let found = app
        .store
        .user_by_email("victim@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, victim.id);
    let mut again = app.browser();
    let res = again.sign_in("victim@example.com", PASSWORD).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let keys = again.get("/settings/api-keys").await;
    assert!(keys.shows("victim's key"), "{}", keys.body);
    let (_, v) = app.verify_api(json!({ "key": victim_key })).await;
    assert_eq!(v["valid"], true);
    // Sign-up with that email is still refused as taken (by the password account).
    let mut other = app.browser();
    other.get("/signup").await;
    let res = other
        .post(
            "/signup",
            &[("email", "victim@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_ne!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
}
both!(a_handoff_never_takes_over_a_password_account);

async fn the_two_step_policy_applies_unless_vouched_strong(app: TestApp) {
    // The organization exists (first hand-off) and requires two-step verification.
    let first = link(&app, handoff("u-7", "eve@customer.test", "cus_7")).await;
    assert_eq!(
        enter(&mut app.browser(), &first).await.status,
        StatusCode::SEE_OTHER
    );
    let org = app
        .store
        .org_by_external_id("cus_7")
        .await
        .unwrap()
        .unwrap();
    app.raw_execute(&format!(
        "UPDATE organizations SET require_two_step = TRUE WHERE id = '{}'",
        org.id
    ))
    .await
    .unwrap();
    let plain = link(&app, handoff("u-7", "eve@customer.test", "cus_7")).await;
    let mut b = app.browser();
    assert_eq!(enter(&mut b, &plain).await.status, StatusCode::SEE_OTHER);
    let page = b.get("/settings/api-keys").await;
    assert_eq!(
        page.status,
        StatusCode::SEE_OTHER,
        "held back: {}",
        page.body
    );
    assert!(
        page.location().starts_with("/settings/account"),
        "{}",
        page.location()
    );

    let mut strong = handoff("u-7", "eve@customer.test", "cus_7");
    strong["strong_auth"] = json!(true);
    let path = link(&app, strong).await;
    let mut b = app.browser();
    assert_eq!(enter(&mut b, &path).await.status, StatusCode::SEE_OTHER);
    let page = b.get("/settings/api-keys").await;
    assert_eq!(page.status, StatusCode::OK, "vouched strong: {}", page.body);
}
both!(the_two_step_policy_applies_unless_vouched_strong);

async fn external_ids_come_back_from_every_door(app: TestApp) {
    let mut b = app.signed_up("team@example.com").await;
    let (_, key) = b.new_key("door test").await;
    let user = app
        .store
        .user_by_email("team@example.com")
        .await
        .unwrap()
        .unwrap();
    let org_id = app.store.memberships(&user.id).await.unwrap()[0]
        .org_id
        .clone();
    let (_, v) = app.verify_api(json!({ "key": key })).await;
    assert!(v.get("external_org_id").is_none(), "unset: {v}");

    // Only an operator may set it.
    let path = format!("/api/v1/orgs/{org_id}/external-id");
    let (status, _) = operator(
        &app,
        reqwest::Method::PUT,
        &path,
        Some(TEST_VERIFIER_TOKEN),
        json!({ "external_id": "cus_42" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = operator(
        &app,
        reqwest::Method::PUT,
        &path,
        Some(TEST_OPERATOR_TOKEN),
        json!({ "external_id": "cus_42" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["external_id"], "cus_42");
    let (status, body) = operator(
        &app,
        reqwest::Method::GET,
        "/api/v1/orgs/by-external-id/cus_42",
        Some(TEST_OPERATOR_TOKEN),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["id"], org_id.as_str());

    // Verify API (the cached key was dropped when the id changed).
    let (_, v) = app.verify_api(json!({ "key": key })).await;
    assert_eq!(v["external_org_id"], "cus_42", "{v}");
    // Forward-auth.
    let res = reqwest::Client::new()
        .get(format!("{}/v1/auth", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-keyward-org-external-id"], "cus_42");
    // In process.
    let v = app
        .state
        .verifier
        .check(&keyward::verify::VerifyRequest {
            key: Some(&key),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(v.external_org_id(), Some("cus_42"));

    // Unique per deployment; invalid ids are refused; unknown orgs are 404.
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
    let (status, body) = operator(
        &app,
        reqwest::Method::PUT,
        &format!("/api/v1/orgs/{other_org}/external-id"),
        Some(TEST_OPERATOR_TOKEN),
        json!({ "external_id": "cus_42" }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = operator(
        &app,
        reqwest::Method::PUT,
        &path,
        Some(TEST_OPERATOR_TOKEN),
        json!({ "external_id": "naïve" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = operator(
        &app,
        reqwest::Method::PUT,
        "/api/v1/orgs/nope/external-id",
        Some(TEST_OPERATOR_TOKEN),
        json!({ "external_id": "x" }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Cleared: the doors stop sending it.
    let (status, _) = operator(
        &app,
        reqwest::Method::PUT,
        &path,
        Some(TEST_OPERATOR_TOKEN),
        json!({ "external_id": null }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let res = reqwest::Client::new()
        .get(format!("{}/v1/auth", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("x-keyward-org-external-id").is_none());
    let changes = app
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e.0 == "org.external_id_changed")
        .count();
    assert_eq!(changes, 2);
}
both!(external_ids_come_back_from_every_door);

async fn the_cli_sets_an_external_id(app: TestApp) {
    let b = app.signed_up("cli@example.com").await;
    drop(b);
    let user = app
        .store
        .user_by_email("cli@example.com")
        .await
        .unwrap()
        .unwrap();
    let org_id = app.store.memberships(&user.id).await.unwrap()[0]
        .org_id
        .clone();
    let out = crate::cli::keyward(&["org", "external-id", &org_id, "cus_cli"], &app.db_url, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cus_cli"));
    let org = app.store.org(&org_id).await.unwrap().unwrap();
    assert_eq!(org.external_id.as_deref(), Some("cus_cli"));
    let out = crate::cli::keyward(&["org", "external-id", "no-such-org", "x"], &app.db_url, "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No organization"));
    let out = crate::cli::keyward(&["org", "external-id", &org_id, "--clear"], &app.db_url, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let org = app.store.org(&org_id).await.unwrap().unwrap();
    assert_eq!(org.external_id, None);
}
both!(the_cli_sets_an_external_id);

async fn handoff_sessions_follow_the_session_rules(app: TestApp) {
    let path = link(&app, handoff("u-8", "fay@customer.test", "cus_8")).await;
    let mut b = app.browser();
    assert_eq!(enter(&mut b, &path).await.status, StatusCode::SEE_OTHER);
    // Without a password or a factor, a later confirmation points back to the team's app
    // (a new hand-off is the proof), not to a form that can only fail.
    app.clock.advance(time::Duration::minutes(20));
    let page = b.get("/settings/account/confirm").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.shows("Go back to Keyward and open"), "{}", page.body);
    assert!(page.body.contains(&format!("href=\"{RETURN}\"")));
    assert!(!page.body.contains("name=\"password\""), "{}", page.body);
    // The idle limit ends the session like any other.
    app.clock.advance(time::Duration::hours(2));
    let page = b.get("/settings/api-keys").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.location().starts_with("/login"), "{}", page.location());
}
both!(handoff_sessions_follow_the_session_rules);

async fn a_browser_signed_in_elsewhere_is_told_before_switching(app: TestApp) {
    let mut b = app.signed_up("someone@example.com").await;
    let path = link(&app, handoff("u-9", "gil@customer.test", "cus_9")).await;
    let page = b.get(&path).await;
    assert!(
        page.shows("This browser is signed in as someone@example.com"),
        "{}",
        page.body
    );
    // Still signed in as before: nothing happened without the click.
    let keys = b.get("/settings/api-keys").await;
    assert_eq!(keys.status, StatusCode::OK);
    assert!(!keys.shows("Customer cus_9"));
    // A post without the page's CSRF token (e.g. from another site) does nothing.
    let forged = b.post_raw(&path, &[], &[]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    let res = enter(&mut b, &path).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert!(b.get("/settings/api-keys").await.shows("Customer cus_9"));
}
both!(a_browser_signed_in_elsewhere_is_told_before_switching);

async fn the_team_app_can_disable_a_person(app: TestApp) {
    let path = link(&app, handoff("u-10", "hal@customer.test", "cus_10")).await;
    let mut b = app.browser();
    assert_eq!(enter(&mut b, &path).await.status, StatusCode::SEE_OTHER);
    assert_eq!(b.get("/settings/api-keys").await.status, StatusCode::OK);
    let (status, body) = operator(
        &app,
        reqwest::Method::PATCH,
        "/api/v1/portal/users/u-10",
        Some(TEST_OPERATOR_TOKEN),
        json!({ "disabled": true }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["disabled"], true);
    // Their session ends at once; a new hand-off is refused.
    assert_eq!(
        b.get("/settings/api-keys").await.status,
        StatusCode::SEE_OTHER
    );
    let again = link(&app, handoff("u-10", "hal@customer.test", "cus_10")).await;
    let res = enter(&mut app.browser(), &again).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.body);
    assert!(res.shows("disabled by Keyward"), "{}", res.body);
    // Enabled again, they come back in.
    let (status, _) = operator(
        &app,
        reqwest::Method::PATCH,
        "/api/v1/portal/users/u-10",
        Some(TEST_OPERATOR_TOKEN),
        json!({ "disabled": false }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let back = link(&app, handoff("u-10", "hal@customer.test", "cus_10")).await;
    assert_eq!(
        enter(&mut app.browser(), &back).await.status,
        StatusCode::SEE_OTHER
    );
    // Unknown people, and other credentials, are 404 / 401.
    let (status, _) = operator(
        &app,
        reqwest::Method::PATCH,
        "/api/v1/portal/users/nobody",
        Some(TEST_OPERATOR_TOKEN),
        json!({ "disabled": true }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = operator(
        &app,
        reqwest::Method::PATCH,
        "/api/v1/portal/users/u-10",
        Some(TEST_VERIFIER_TOKEN),
        json!({ "disabled": true }),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
both!(the_team_app_can_disable_a_person);

async fn a_new_organization_gets_an_owner_and_keeps_one(app: TestApp) {
    let mut first = handoff("u-11", "ida@customer.test", "cus_11");
    first["role"] = json!("developer");
    let path = link(&app, first).await;
    assert_eq!(
        enter(&mut app.browser(), &path).await.status,
        StatusCode::SEE_OTHER
    );
    let org = app
        .store
        .org_by_external_id("cus_11")
        .await
        .unwrap()
        .unwrap();
    let members = app.store.members(&org.id).await.unwrap();
    assert_eq!(members[0].role, "owner", "someone can manage it");
    // A later hand-off does not demote the only owner.
    let mut again = handoff("u-11", "ida@customer.test", "cus_11");
    again["role"] = json!("viewer");
    let path = link(&app, again).await;
    assert_eq!(
        enter(&mut app.browser(), &path).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(app.store.members(&org.id).await.unwrap()[0].role, "owner");
    // The second person gets the role asked for.
    let mut second = handoff("u-12", "jo@customer.test", "cus_11");
    second["role"] = json!("viewer");
    let path = link(&app, second).await;
    assert_eq!(
        enter(&mut app.browser(), &path).await.status,
        StatusCode::SEE_OTHER
    );
    let members = app.store.members(&org.id).await.unwrap();
    let jo = members
        .iter()
        .find(|m| m.email == "jo@customer.test")
        .unwrap();
    assert_eq!(jo.role, "viewer");
}
both!(a_new_organization_gets_an_owner_and_keeps_one);
