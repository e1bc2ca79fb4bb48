//! Sign-up, sign-in, sign-out, sessions and organizations.

use keyward::config::SignupMode;
use reqwest::StatusCode;
use time::Duration;

use crate::{
    both,
    helpers::{Backend, PASSWORD, TestApp},
};

async fn signup_signin_signout(app: TestApp) {
    let mut b = app.browser();
    let page = b.get("/signup").await;
    assert_eq!(page.status, StatusCode::OK);
    let res = b
        .post(
            "/signup",
            &[("email", " Alice@Example.com "), ("password", PASSWORD)],
        )
        .await;
    // Nobody is signed in by sign-up: the address is proved first, then the password.
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.body.contains("Check your inbox"));
    assert!(res.headers.get("set-cookie").is_none(), "no session");
    assert_eq!(
        b.get("/settings/api-keys").await.status,
        StatusCode::SEE_OTHER
    );
    let link = app.verification_link("alice@example.com").await;
    b.get(&link).await;
    let done = b.post(&link, &[]).await;
    assert!(
        done.body.contains("Email address confirmed"),
        "{}",
        done.body
    );
    assert_eq!(
        b.get("/settings/api-keys").await.status,
        StatusCode::SEE_OTHER,
        "the link does not sign in"
    );
    let res = b.sign_in("alice@example.com", PASSWORD).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);

    // Lands in the personal organization, with the empty state.
    let home = b.get("/settings/api-keys").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.shows("alice's organization"), "{}", home.body);
    assert!(home.body.contains("No API keys yet"));
    assert_eq!(home.header("cache-control"), "no-store");

    // The stored hash is argon2id at the required cost.
    let user = app
        .store
        .user_by_email("alice@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(
        user.password_hash
            .unwrap()
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
    );

    // Sign out: POST only, then the old cookie is useless even when replayed by hand.
    let jar_cookie = b.cookie_value(&app.base);
    let out = b.post("/logout", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/login?reason=signed_out");
    let replay = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let again = replay
        .get(format!("{}/settings/api-keys", app.base))
        .header("cookie", format!("keyward_session={jar_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    assert!(
        again.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/login")
    );
    assert_eq!(
        b.get("/logout").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );

    // Sign in again, with the email in another case.
    let res = b.sign_in("ALICE@example.com", PASSWORD).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(b.get("/settings/api-keys").await.status, StatusCode::OK);
}
both!(signup_signin_signout);

async fn failed_sign_in_is_generic(app: TestApp) {
    app.signed_up("bob@example.com").await;
    let mut b = app.browser();
    let wrong = b
        .sign_in("bob@example.com", "correct horse battery stapler")
        .await;
    let unknown = b.sign_in("nobody@example.com", PASSWORD).await;
    let case = b
        .sign_in("bob@example.com", "Correct horse battery staple")
        .await;
    for page in [&wrong, &unknown, &case] {
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        assert!(page.body.contains("Incorrect email or password."));
    }
    // Identical apart from the CSRF token and the echoed email.
    let strip = |s: &str, email: &str| {
        regex::Regex::new(r#"name="csrf" value="[^"]+""#)
            .unwrap()
            .replace_all(s, "")
            .replace(email, "")
    };
    assert_eq!(
        strip(&wrong.body, "bob@example.com"),
        strip(&unknown.body, "nobody@example.com")
    );
    // Both failures count against the known account (recorded in the background, so
    // that the answer does not wait for a write only known accounts cause).
    let mut failed = 0;
    for _ in 0..200 {
        let user = app
            .store
            .user_by_email("bob@example.com")
            .await
            .unwrap()
            .unwrap();
        failed = user.failed_logins;
        if failed == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(failed, 2);
}
both!(failed_sign_in_is_generic);

async fn password_rules_are_explained(app: TestApp) {
    let mut b = app.browser();
    b.get("/signup").await;
    let cases: [(&str, u16, &str); 6] = [
        ("fourteen chars", 400, "at least 15 characters"),
        ("password1234567", 400, "common password"),
        ("carol@example.com", 400, "based on your email"),
        ("keywardkeyward!", 400, "name of this service"),
        (&"x".repeat(257), 400, "at most 256"),
        ("aaaaaaaaaaaaaaaaaa", 400, "repeated or sequential"),
    ];
    for (pw, status, message) in cases {
        let res = b
            .post(
                "/signup",
                &[("email", "carol@example.com"), ("password", pw)],
            )
            .await;
        assert_eq!(res.status.as_u16(), status, "{pw}");
        assert!(res.body.contains(message), "{pw}: {}", res.body);
        assert!(res.body.contains("aria-invalid=\"true\""));
    }
    assert!(
        app.store
            .user_by_email("carol@example.com")
            .await
            .unwrap()
            .is_none()
    );
    // Fifteen emoji are fifteen characters.
    let ok = b
        .post(
            "/signup",
            &[
                ("email", "carol@example.com"),
                ("password", "🦀🐙🦊🐢🦉🐝🦋🐌🐞🦎🐍🦖🐳🦭🐧"),
            ],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(ok.body.contains("Check your inbox"));

    // A bad email is explained.
    let mut other = app.browser();
    other.get("/signup").await;
    let bad = other
        .post(
            "/signup",
            &[("email", "not-an-email"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("valid email address"));
}
both!(password_rules_are_explained);

async fn session_id_is_renewed_at_sign_in(app: TestApp) {
    app.signed_up("dave@example.com").await;
    let mut b = app.browser();
    let login_page = b.get("/login").await;
    let before = b
        .session_cookie(&login_page)
        .expect("anonymous session for the login CSRF token");
    let res = b
        .post(
            "/login",
            &[("email", "dave@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let after = b.session_cookie(&res).expect("new session cookie");
    assert_ne!(before, after);
    // The pre-login id is not signed in.
    let attacker = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = attacker
        .get(format!("{}/settings/api-keys", app.base))
        .header("cookie", format!("keyward_session={before}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // Cookie attributes (the session's; the device cookie is checked in throttle.rs).
    let set_cookie = res
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("keyward_session="))
        .expect("session cookie");
    assert!(
        set_cookie.contains("HttpOnly")
            && set_cookie.contains("SameSite=Lax")
            && set_cookie.contains("Path=/")
    );
    assert!(!set_cookie.contains("Domain"));
}
both!(session_id_is_renewed_at_sign_in);

async fn sessions_time_out(app: TestApp) {
    let mut b = app.signed_up("erin@example.com").await;
    // Idle: 60 minutes without a request.
    app.clock.advance(Duration::minutes(61));
    let r = b.get("/settings/api-keys").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.location().contains("reason=expired"));

    // Absolute: 24 hours after sign-in, even when active every 30 minutes.
    let res = b.sign_in("erin@example.com", PASSWORD).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    for _ in 0..47 {
        app.clock.advance(Duration::minutes(30));
        assert_eq!(b.get("/settings/api-keys").await.status, StatusCode::OK);
    }
    app.clock.advance(Duration::minutes(31));
    let r = b.get("/settings/api-keys").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let login = b.get(r.location()).await;
    assert!(login.body.contains("Your session has ended"));
}
both!(sessions_time_out);

async fn organizations_create_and_switch(app: TestApp) {
    let mut b = app.signed_up("frank@example.com").await;
    b.get("/orgs/new").await;
    let bad = b.post("/orgs", &[("name", "  ")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let res = b.post("/orgs", &[("name", "Acme <Corp>")]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let page = b.get("/settings/api-keys").await;
    assert!(page.shows("Created Acme <Corp>"), "{}", page.body);
    assert!(!page.body.contains("Acme <Corp>"));
    // The active org is shown, and a key created now belongs to it.
    let (key_id, _) = b.new_key("acme key").await;
    let user = app
        .store
        .user_by_email("frank@example.com")
        .await
        .unwrap()
        .unwrap();
    let orgs = app.store.memberships(&user.id).await.unwrap();
    assert_eq!(orgs.len(), 2);
    let acme = orgs.iter().find(|m| m.org_name == "Acme <Corp>").unwrap();
    let personal = orgs.iter().find(|m| m.personal).unwrap();
    assert!(
        app.store
            .key(&acme.org_id, &key_id)
            .await
            .unwrap()
            .is_some()
    );

    // Switch back: the key is not in the personal org.
    let res = b
        .post("/orgs/switch", &[("org_id", &personal.org_id)])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(
        b.get(&format!("/settings/api-keys/{key_id}")).await.status,
        StatusCode::NOT_FOUND
    );
    // Switching to an organization one is not a member of is "not found".
    let stranger = app.signed_up("grace@example.com").await;
    drop(stranger);
    let grace = app
        .store
        .user_by_email("grace@example.com")
        .await
        .unwrap()
        .unwrap();
    let grace_org = &app.store.memberships(&grace.id).await.unwrap()[0];
    let res = b
        .post("/orgs/switch", &[("org_id", &grace_org.org_id)])
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
}
both!(organizations_create_and_switch);

async fn closed_signup(backend: Backend) {
    let app = match TestApp::spawn_with(backend, |c| c.signup = SignupMode::Closed).await {
        Some(app) => app,
        None => return,
    };
    let mut b = app.browser();
    let page = b.get("/signup").await;
    assert!(page.body.contains("Sign-up is closed"));
    let res = b
        .post(
            "/signup",
            &[("email", "h@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(
        app.store
            .user_by_email("h@example.com")
            .await
            .unwrap()
            .is_none()
    );
    let login = b.get("/login").await;
    assert!(!login.body.contains("href=\"/signup\""));
}

#[tokio::test]
async fn closed_signup_sqlite() {
    closed_signup(Backend::Sqlite).await;
}

#[tokio::test]
async fn closed_signup_postgres() {
    closed_signup(Backend::Postgres).await;
}

async fn signing_up_with_a_taken_address_looks_like_a_new_sign_up(app: TestApp) {
    app.signed_up("taken@example.com").await;
    let sign_up = |email: &'static str| {
        let mut b = app.browser();
        async move {
            b.get("/signup").await;
            b.post("/signup", &[("email", email), ("password", PASSWORD)])
                .await
        }
    };
    let taken = sign_up("taken@example.com").await;
    let fresh = sign_up("fresh@example.com").await;
    assert_eq!(taken.status, fresh.status);
    assert_eq!(taken.status, StatusCode::OK);
    assert!(taken.headers.get("set-cookie").is_none());
    assert!(fresh.headers.get("set-cookie").is_none());
    // Byte for byte the same apart from the echoed address.
    assert_eq!(
        taken.body.replace("taken@example.com", "EMAIL"),
        fresh.body.replace("fresh@example.com", "EMAIL")
    );
    // The owner of the taken address hears about it (no new link, no second account);
    // the new address gets a verification link.
    let notice = app
        .wait_for_mail("taken@example.com", "Someone tried to sign up")
        .await;
    assert!(notice.body.contains("/login") && notice.body.contains("/forgot-password"));
    assert!(!notice.body.contains("/verify-email/"));
    app.verification_link("fresh@example.com").await;
    // The existing account's password did not change.
    let mut b = app.browser();
    assert_eq!(
        b.sign_in("taken@example.com", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
}
both!(signing_up_with_a_taken_address_looks_like_a_new_sign_up);
