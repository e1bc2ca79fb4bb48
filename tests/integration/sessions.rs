//! Sessions under the user's control: ids stored only hashed, the sessions page, signing
//! sessions out, and changing the password.

use reqwest::StatusCode;

use crate::{
    both,
    helpers::{Browser, PASSWORD, TestApp},
};

const NEW_PASSWORD: &str = "a different long passphrase";

/// A second browser signed in to the same account.
async fn second_browser(app: &TestApp, email: &str) -> Browser {
    let mut b = app.browser();
    let res = b.sign_in(email, PASSWORD).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    b
}

/// The handles of the sessions listed on the page, and the current one's.
fn handles(page: &crate::helpers::Page) -> Vec<String> {
    regex::Regex::new(r#"/settings/account/sessions/([0-9a-f]{32})/revoke"#)
        .unwrap()
        .captures_iter(&page.body)
        .map(|c| c[1].to_string())
        .collect()
}

async fn signed_in(b: &mut Browser) -> bool {
    b.get("/settings/api-keys").await.status == StatusCode::OK
}

async fn the_database_holds_no_session_id(app: TestApp) {
    let mut a = app.signed_up("dump@example.com").await;
    let mut b = second_browser(&app, "dump@example.com").await;
    assert!(signed_in(&mut a).await && signed_in(&mut b).await);
    let dump = app.dump_database().await;
    for cookie in [a.cookie_value(&app.base), b.cookie_value(&app.base)] {
        assert_eq!(cookie.len(), 22, "a 128-bit id");
        assert!(!dump.contains(&cookie), "the raw session id is in the dump");
    }
    // The sessions are there, by user (hashed ids).
    assert!(dump.contains("sessions"), "{dump}");
}
both!(the_database_holds_no_session_id);

async fn a_forged_session_id_is_anonymous(app: TestApp) {
    let mut real = app.signed_up("forged@example.com").await;
    assert!(signed_in(&mut real).await);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // A well-formed id nobody was given, and the real one's near miss.
    let cookie = real.cookie_value(&app.base);
    let mut near = cookie.clone().into_bytes();
    near[0] = if near[0] == b'A' { b'B' } else { b'A' };
    for forged in [
        "AAAAAAAAAAAAAAAAAAAAAA".to_string(),
        String::from_utf8(near).unwrap(),
    ] {
        let res = client
            .get(format!("{}/settings/api-keys", app.base))
            .header("cookie", format!("keyward_session={forged}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{forged}");
        assert!(
            res.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with("/login")
        );
    }
}
both!(a_forged_session_id_is_anonymous);

async fn the_sessions_page_lists_each_session_and_marks_this_one(app: TestApp) {
    let mut a = app.signed_up("list@example.com").await;
    let _b = second_browser(&app, "list@example.com").await;
    let page = a.get("/settings/account/sessions").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body.matches("<tr").count() - 1, 2, "{}", page.body);
    assert_eq!(page.body.matches("this session").count(), 1);
    // Only the other one can be signed out from here.
    assert_eq!(handles(&page).len(), 1);
    assert!(page.body.contains("127.0.0.1"));
    assert!(page.shows("Sign out all other sessions"));
    // Linked from the account page.
    assert!(
        a.get("/settings/account")
            .await
            .body
            .contains("/settings/account/sessions")
    );
}
both!(the_sessions_page_lists_each_session_and_marks_this_one);

async fn signing_out_one_session_ends_only_that_one(app: TestApp) {
    let mut a = app.signed_up("one@example.com").await;
    let mut b = second_browser(&app, "one@example.com").await;
    let mut c = second_browser(&app, "one@example.com").await;
    // B's handle: the one listed on C's page that is not on B's page.
    let on_b = handles(&b.get("/settings/account/sessions").await);
    let on_c = handles(&c.get("/settings/account/sessions").await);
    let b_handle = on_c.iter().find(|h| !on_b.contains(h)).unwrap().clone();
    a.get("/settings/account/sessions").await;
    let res = a
        .post(
            &format!("/settings/account/sessions/{b_handle}/revoke"),
            &[],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert!(!signed_in(&mut b).await, "B was signed out");
    assert!(signed_in(&mut a).await && signed_in(&mut c).await);
    let events = app.audit_events().await;
    assert!(events.iter().any(|(a, _)| a == "account.session_revoked"));
    // Gone: a second attempt finds nothing.
    let again = a
        .post(
            &format!("/settings/account/sessions/{b_handle}/revoke"),
            &[],
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}
both!(signing_out_one_session_ends_only_that_one);

async fn signing_out_all_other_sessions(app: TestApp) {
    let mut a = app.signed_up("all@example.com").await;
    let mut b = second_browser(&app, "all@example.com").await;
    let mut c = second_browser(&app, "all@example.com").await;
    a.get("/settings/account/sessions").await;
    let res = a
        .post("/settings/account/sessions/revoke-others", &[])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert!(
        a.get(res.location())
            .await
            .shows("Signed out 2 other sessions.")
    );
    assert!(!signed_in(&mut b).await && !signed_in(&mut c).await);
    assert!(signed_in(&mut a).await);
    let page = a.get("/settings/account/sessions").await;
    assert!(handles(&page).is_empty());
    assert!(
        app.audit_events()
            .await
            .iter()
            .any(|(a, _)| a == "account.sessions_revoked")
    );
}
both!(signing_out_all_other_sessions);

async fn another_users_session_cannot_be_signed_out(app: TestApp) {
    let mut victim = app.signed_up("victim@example.com").await;
    let mut victim2 = second_browser(&app, "victim@example.com").await;
    let victim_handle = handles(&victim.get("/settings/account/sessions").await)[0].clone();
    let mut attacker = app.signed_up("mallory@example.com").await;
    attacker.get("/settings/account/sessions").await;
    let res = attacker
        .post(
            &format!("/settings/account/sessions/{victim_handle}/revoke"),
            &[],
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert!(signed_in(&mut victim).await && signed_in(&mut victim2).await);
    // "All other sessions" is about one's own sessions only.
    attacker
        .post("/settings/account/sessions/revoke-others", &[])
        .await;
    assert!(signed_in(&mut victim).await && signed_in(&mut victim2).await);
}
both!(another_users_session_cannot_be_signed_out);

async fn change_password(
    b: &mut Browser,
    current: &str,
    new: &str,
    sign_out: bool,
) -> crate::helpers::Page {
    b.get("/settings/account/password").await;
    let mut fields = vec![("current_password", current), ("new_password", new)];
    if sign_out {
        fields.push(("sign_out_others", "on"));
    }
    b.post("/settings/account/password", &fields).await
}

async fn a_wrong_current_password_changes_nothing(app: TestApp) {
    let mut a = app.signed_up("wrong@example.com").await;
    let page = a.get("/settings/account/password").await;
    assert!(
        page.body
            .contains("name=\"sign_out_others\" value=\"on\" checked")
    );
    let res = change_password(&mut a, "not my password at all", NEW_PASSWORD, true).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(res.body.contains("Your current password is not correct"));
    // The new password is checked against the policy too.
    let weak = change_password(&mut a, PASSWORD, "short", true).await;
    assert_eq!(weak.status, StatusCode::BAD_REQUEST);
    assert!(weak.body.contains("at least 15"));
    let mut other = app.browser();
    assert_eq!(
        other.sign_in("wrong@example.com", PASSWORD).await.status,
        StatusCode::SEE_OTHER,
        "the old password still works"
    );
}
both!(a_wrong_current_password_changes_nothing);

async fn changing_the_password_signs_out_the_other_sessions(app: TestApp) {
    let mut a = app.signed_up("change@example.com").await;
    let mut b = second_browser(&app, "change@example.com").await;
    let before = a.cookie_value(&app.base);
    let res = change_password(&mut a, PASSWORD, NEW_PASSWORD, true).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_ne!(a.cookie_value(&app.base), before, "a renewed session id");
    assert!(signed_in(&mut a).await, "this browser stays signed in");
    assert!(!signed_in(&mut b).await, "the other one is signed out");
    let mut c = app.browser();
    assert_eq!(
        c.sign_in("change@example.com", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.sign_in("change@example.com", NEW_PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    // Audited, and the owner is told by email.
    let events = app.audit_events().await;
    let (_, details) = events
        .iter()
        .find(|(a, _)| a == "account.password_changed")
        .unwrap();
    assert_eq!(details["signed_out_other_sessions"], true);
    let mail = app.state.mailer.outbox(10).await.unwrap();
    assert!(
        mail.iter().any(|m| m.recipient == "change@example.com"
            && m.subject == "Your Keyward password was changed")
    );
}
both!(changing_the_password_signs_out_the_other_sessions);

async fn changing_the_password_can_keep_the_other_sessions(app: TestApp) {
    let mut a = app.signed_up("keep@example.com").await;
    let mut b = second_browser(&app, "keep@example.com").await;
    let res = change_password(&mut a, PASSWORD, NEW_PASSWORD, false).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert!(signed_in(&mut a).await);
    assert!(signed_in(&mut b).await, "kept when unchecked");
}
both!(changing_the_password_can_keep_the_other_sessions);

async fn expired_session_records_are_deleted(app: TestApp) {
    use tower_sessions::session_store::ExpiredDeletion;
    let mut a = app.signed_up("old@example.com").await;
    let mut b = second_browser(&app, "old@example.com").await;
    // B's record is past its (idle) expiry; the clean-up task removes it.
    let b_handle = {
        let on_a = handles(&a.get("/settings/account/sessions").await);
        on_a[0].clone()
    };
    assert!(app.dump_database().await.contains(&b_handle));
    app.raw_execute(&format!(
        "UPDATE sessions SET expires_at = 0 WHERE handle = '{b_handle}'"
    ))
    .await
    .unwrap();
    app.store
        .session_store()
        .await
        .unwrap()
        .delete_expired()
        .await
        .unwrap();
    assert!(
        !app.dump_database().await.contains(&b_handle),
        "the expired row is gone"
    );
    assert!(!signed_in(&mut b).await);
    assert!(signed_in(&mut a).await);
}
both!(expired_session_records_are_deleted);
