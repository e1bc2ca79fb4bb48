//! CSRF, tenant isolation, roles, output encoding, headers and secret hygiene.

use keyward::{VerifyCode, store::NewAudit};
use reqwest::StatusCode;

use crate::{
    both,
    helpers::{Browser, PASSWORD, TestApp},
};

async fn org_of(app: &TestApp, email: &str) -> String {
    let u = app.store.user_by_email(email).await.unwrap().unwrap();
    app.store.memberships(&u.id).await.unwrap()[0]
        .org_id
        .clone()
}

pub async fn add_member(app: &TestApp, org_id: &str, email: &str, role: &str) {
    let u = app.store.user_by_email(email).await.unwrap().unwrap();
    app.store
        .add_member(org_id, &u.id, role, NewAudit::new("member.added", 0))
        .await
        .unwrap();
}

pub async fn switch_to(b: &mut Browser, org_id: &str) {
    b.get("/settings/api-keys").await;
    let res = b.post("/orgs/switch", &[("org_id", org_id)]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
}

async fn csrf_on_every_mutating_route(app: TestApp) {
    let mut victim = app.signed_up("victim@example.com").await;
    let (key_id, key) = victim.new_key("target").await;
    let mut attacker = app.signed_up("attacker@example.com").await;
    attacker.get("/settings/api-keys").await;
    let attacker_token = attacker.csrf.clone().unwrap();
    victim.get("/settings/api-keys").await;
    let good = victim.csrf.clone().unwrap();
    let form_page = victim.get(&format!("/settings/api-keys/{key_id}")).await;
    let roll_token = form_page.form_token();

    let routes: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/logout".into(), vec![]),
        ("/orgs".into(), vec![("name", "Evil org")]),
        ("/orgs/switch".into(), vec![("org_id", "x")]),
        (
            "/settings/api-keys".into(),
            vec![
                ("name", "evil"),
                ("environment", "live"),
                ("preset", "Admin"),
                ("expiry", "never"),
            ],
        ),
        (
            format!("/settings/api-keys/{key_id}"),
            vec![("name", "renamed"), ("scopes", "read")],
        ),
        (format!("/settings/api-keys/{key_id}/revoke"), vec![]),
        (
            format!("/settings/api-keys/{key_id}/enabled"),
            vec![("enabled", "false")],
        ),
        (
            "/settings/organization".into(),
            vec![("rate_limit", "1"), ("rate_window", "second")],
        ),
        (
            "/settings/api-keys/bulk".into(),
            vec![("keys", &key_id), ("action", "revoke")],
        ),
        ("/settings/members/transfer".into(), vec![("to", "x")]),
        ("/settings/members/leave".into(), vec![]),
        ("/settings/members/x/role".into(), vec![("role", "viewer")]),
        ("/settings/members/x/remove".into(), vec![]),
        (
            "/settings/invitations".into(),
            vec![("email", "e@example.com"), ("role", "viewer")],
        ),
        ("/settings/invitations/x/revoke".into(), vec![]),
        ("/settings/invitations/x/resend".into(), vec![]),
        ("/invitations/x/accept".into(), vec![]),
        (
            "/forgot-password".into(),
            vec![("email", "victim@example.com")],
        ),
        (
            "/reset-password/x".into(),
            vec![("password", "a long enough new password")],
        ),
        (
            format!("/settings/api-keys/{key_id}/roll"),
            vec![("form_token", &roll_token), ("grace", "now")],
        ),
        (
            "/login".into(),
            vec![("email", "victim@example.com"), ("password", PASSWORD)],
        ),
        (
            "/signup".into(),
            vec![("email", "new@example.com"), ("password", PASSWORD)],
        ),
        ("/sso/start".into(), vec![("email", "victim@example.com")]),
        ("/sso/link".into(), vec![("source", "provider:x")]),
        (
            "/sso/unlink".into(),
            vec![("issuer", "https://idp.example"), ("subject", "x")],
        ),
        (
            "/settings/sso".into(),
            vec![
                ("name", "Evil"),
                ("issuer", "https://evil.example"),
                ("client_id", "x"),
                ("client_secret", "x"),
                ("domains", "example.com"),
                ("default_role", "admin"),
            ],
        ),
        ("/settings/sso/x".into(), vec![("name", "Evil")]),
        ("/settings/sso/x/delete".into(), vec![]),
        ("/settings/sso/x/test".into(), vec![]),
        ("/settings/account/sessions/x/revoke".into(), vec![]),
        ("/settings/account/verify-email".into(), vec![]),
        ("/verify-email/x".into(), vec![]),
        ("/settings/account/sessions/revoke-others".into(), vec![]),
        (
            "/settings/account/password".into(),
            vec![
                ("current_password", PASSWORD),
                ("new_password", "an attacker's chosen password"),
                ("sign_out_others", "on"),
            ],
        ),
        (
            "/settings/account/security/totp".into(),
            vec![("code", "123456")],
        ),
        ("/settings/account/security/totp/remove".into(), vec![]),
        ("/settings/account/security/recovery-codes".into(), vec![]),
        (
            "/settings/account/confirm".into(),
            vec![("password", PASSWORD)],
        ),
        ("/login/two-step".into(), vec![("code", "123456")]),
        (
            "/settings/members/two-step".into(),
            vec![("required", "true")],
        ),
        ("/settings/account/security/passkeys/options".into(), vec![]),
        ("/settings/account/security/passkeys".into(), vec![]),
        (
            "/settings/account/security/passkeys/x/remove".into(),
            vec![],
        ),
        ("/settings/account/confirm/passkey/options".into(), vec![]),
        ("/settings/account/confirm/passkey".into(), vec![]),
        ("/login/two-step/passkey/options".into(), vec![]),
        ("/login/two-step/passkey".into(), vec![]),
        ("/login/passkey/options".into(), vec![]),
        ("/login/passkey".into(), vec![]),
    ];
    for (path, fields) in &routes {
        let with = |t: &str| {
            let mut f = vec![("csrf", t.to_string())];
            f.extend(fields.iter().map(|(k, v)| (*k, v.to_string())));
            f
        };
        type Variant<'a> = (Vec<(&'a str, String)>, Vec<(&'a str, &'a str)>, &'a str);
        let variants: Vec<Variant<'_>> = vec![
            (
                fields.iter().map(|(k, v)| (*k, v.to_string())).collect(),
                vec![],
                "no token",
            ),
            (with("wrong-token"), vec![], "wrong token"),
            (with(&attacker_token), vec![], "another session's token"),
            (
                with(&good),
                vec![("origin", "https://evil.example")],
                "cross-site origin",
            ),
            (
                with(&good),
                vec![("sec-fetch-site", "cross-site")],
                "cross-site fetch",
            ),
        ];
        for (f, headers, what) in variants {
            let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let res = victim.post_raw(path, &f, &headers).await;
            assert_eq!(res.status, StatusCode::FORBIDDEN, "{path} with {what}");
            assert!(
                res.body
                    .contains("This form has expired or was sent from another site")
            );
        }
    }
    // Nothing happened.
    let victim_org = victim.org.clone().unwrap();
    assert!(
        app.store
            .sso_connections(&victim_org)
            .await
            .unwrap()
            .is_empty()
    );
    let v = app.state.verifier.verify(Some(&key), &[]).await.unwrap();
    assert_eq!(v.code, VerifyCode::Valid);
    assert_eq!(v.name(), Some("target"));
    assert!(
        app.store
            .user_by_email("new@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        victim.get("/settings/api-keys").await.status,
        StatusCode::OK,
        "still signed in"
    );
    let u = app
        .store
        .user_by_email("victim@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(app.store.memberships(&u.id).await.unwrap().len(), 1);
    // GET on mutating routes changes nothing either.
    for path in [
        format!("/settings/api-keys/{key_id}/revoke"),
        format!("/settings/api-keys/{key_id}/roll"),
        "/logout".into(),
    ] {
        assert_eq!(
            victim.get(&path).await.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{path}"
        );
    }
    assert_eq!(
        app.state
            .verifier
            .verify(Some(&key), &[])
            .await
            .unwrap()
            .code,
        VerifyCode::Valid
    );
}
both!(csrf_on_every_mutating_route);

async fn other_orgs_keys_are_not_found(app: TestApp) {
    let mut a = app.signed_up("a@example.com").await;
    let (key_id, key) = a.new_key("A's key").await;
    let mut b = app.signed_up("b@example.com").await;
    let detail = b.get(&format!("/settings/api-keys/{key_id}")).await;
    assert_eq!(detail.status, StatusCode::NOT_FOUND);
    assert!(!detail.shows("A's key"));
    b.get("/settings/api-keys").await;
    let token = b.get("/settings/api-keys/new").await.form_token();
    let attempts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            format!("/settings/api-keys/{key_id}"),
            vec![("name", "pwned"), ("scopes", "read")],
        ),
        (format!("/settings/api-keys/{key_id}/revoke"), vec![]),
        (
            format!("/settings/api-keys/{key_id}/enabled"),
            vec![("enabled", "false")],
        ),
        (
            format!("/settings/api-keys/{key_id}/roll"),
            vec![("form_token", &token), ("grace", "now")],
        ),
    ];
    for (path, fields) in attempts {
        let res = b.post(&path, &fields).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{path}");
    }
    // B's audit log shows nothing of A's key.
    let audit = b.get(&format!("/settings/audit-log?key={key_id}")).await;
    assert!(audit.body.contains("No events match"));
    let all = b.get("/settings/audit-log").await;
    assert!(!all.body.contains("a@example.com"));
    let export = b.get("/settings/audit-log/export?format=json").await;
    assert!(!export.body.contains(&key_id));
    // A's key is untouched and the attempts were logged.
    let v = app.state.verifier.verify(Some(&key), &[]).await.unwrap();
    assert_eq!((v.code, v.name()), (VerifyCode::Valid, Some("A's key")));
    assert!(crate::helpers::log_text().contains(&format!("key_id={key_id}")));
}
both!(other_orgs_keys_are_not_found);

async fn roles_are_enforced(app: TestApp) {
    let mut owner = app.signed_up("own@example.com").await;
    let org = org_of(&app, "own@example.com").await;
    let (owner_key_id, owner_key) = owner.new_key("owner's key").await;

    // A viewer sees keys but no controls, and forged posts are refused.
    let mut viewer = app.signed_up("view@example.com").await;
    add_member(&app, &org, "view@example.com", "viewer").await;
    switch_to(&mut viewer, &org).await;
    let list = viewer.get("/settings/api-keys").await;
    assert!(list.shows("owner's key"));
    assert!(!list.body.contains("Create API key"));
    let detail = viewer
        .get(&format!("/settings/api-keys/{owner_key_id}"))
        .await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(!detail.body.contains("Revoke key") && !detail.body.contains("Roll key"));
    assert_eq!(
        viewer.get("/settings/api-keys/new").await.status,
        StatusCode::FORBIDDEN
    );
    let forged = viewer
        .post(
            "/settings/api-keys",
            &[
                ("form_token", "x"),
                ("name", "v"),
                ("environment", "live"),
                ("preset", "Read-only"),
                ("expiry", "7d"),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let revoke = viewer
        .post(&format!("/settings/api-keys/{owner_key_id}/revoke"), &[])
        .await;
    assert_eq!(revoke.status, StatusCode::FORBIDDEN);
    assert!(revoke.body.contains("viewer"));
    let pause = viewer
        .post(
            &format!("/settings/api-keys/{owner_key_id}/enabled"),
            &[("enabled", "false")],
        )
        .await;
    assert_eq!(pause.status, StatusCode::FORBIDDEN);
    let defaults = viewer
        .post(
            "/settings/organization",
            &[("rate_limit", "1"), ("rate_window", "second")],
        )
        .await;
    assert_eq!(defaults.status, StatusCode::FORBIDDEN);
    assert_eq!(
        viewer
            .get("/settings/audit-log/export?format=csv")
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.state
            .verifier
            .verify(Some(&owner_key), &[])
            .await
            .unwrap()
            .code,
        VerifyCode::Valid
    );

    // A developer manages their own keys only, and cannot grant `admin`.
    let mut dev = app.signed_up("dev@example.com").await;
    add_member(&app, &org, "dev@example.com", "developer").await;
    switch_to(&mut dev, &org).await;
    let admin_scope = dev
        .create_key(&[
            ("name", "d"),
            ("environment", "live"),
            ("preset", "custom"),
            ("scopes", "admin"),
            ("expiry", "7d"),
        ])
        .await;
    assert_eq!(admin_scope.status, StatusCode::BAD_REQUEST);
    assert!(admin_scope.body.contains("cannot grant the scope"));
    let (dev_key_id, dev_key) = dev.new_key("dev key").await;
    let res = dev
        .post(&format!("/settings/api-keys/{owner_key_id}/revoke"), &[])
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let res = dev
        .post(
            &format!("/settings/api-keys/{owner_key_id}"),
            &[("name", "mine now"), ("scopes", "read")],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    // Adding `admin` on edit is an escalation too.
    let res = dev
        .post(
            &format!("/settings/api-keys/{dev_key_id}"),
            &[("name", "dev key"), ("scopes", "read"), ("scopes", "admin")],
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let res = dev
        .post(&format!("/settings/api-keys/{dev_key_id}/revoke"), &[])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.state
            .verifier
            .verify(Some(&dev_key), &[])
            .await
            .unwrap()
            .code,
        VerifyCode::Revoked
    );

    // The owner (and admins) manage everyone's keys.
    let res = owner
        .post(
            &format!("/settings/api-keys/{dev_key_id}"),
            &[("name", "x"), ("scopes", "read")],
        )
        .await;
    assert_eq!(
        res.status,
        StatusCode::CONFLICT,
        "revoked keys are read-only, for owners too (409 in both doors)"
    );
    let (dev2_id, _) = dev.new_key("dev key 2").await;
    let res = owner
        .post(&format!("/settings/api-keys/{dev2_id}/revoke"), &[])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
}
both!(roles_are_enforced);

async fn user_text_is_escaped(app: TestApp) {
    let mut b = app.signed_up("xss@example.com").await;
    let payloads = [
        "<script>alert(1)</script>",
        "\"><img src=x onerror=alert(1)>",
        "</script><script>alert(2)</script>",
    ];
    let mut ids = vec![];
    for p in payloads {
        let page = b
            .create_key(&[
                ("name", p),
                ("description", p),
                ("environment", "live"),
                ("preset", "Read-only"),
                ("expiry", "7d"),
            ])
            .await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(!page.body.contains(p));
        ids.push(page.key_id());
    }
    let mut pages = vec![
        b.get("/settings/api-keys").await,
        b.get("/settings/audit-log").await,
    ];
    for id in &ids {
        pages.push(b.get(&format!("/settings/api-keys/{id}")).await);
    }
    for (i, page) in pages.iter().enumerate() {
        assert_eq!(page.status, StatusCode::OK);
        for p in payloads {
            assert!(!page.body.contains(p), "unescaped {p}");
        }
        // The list, the audit log and the first key's page show the first payload, inert.
        if i <= 2 {
            assert!(page.shows("<script>alert(1)</script>"), "page {i}");
        }
    }
}
both!(user_text_is_escaped);

async fn security_headers_everywhere(app: TestApp) {
    let mut b = app.signed_up("hdr@example.com").await;
    let pages = [
        b.get("/settings/api-keys").await,
        app.browser().get("/login").await,
        b.get("/no/such/page").await,
        b.get("/settings/api-keys/00000000-0000-0000-0000-000000000000")
            .await,
    ];
    for p in &pages {
        let csp = p.header("content-security-policy");
        for part in [
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "script-src 'self'",
        ] {
            assert!(csp.contains(part), "{csp}");
        }
        assert_eq!(p.header("x-content-type-options"), "nosniff");
        assert_eq!(p.header("content-type"), "text/html; charset=utf-8");
        assert_eq!(p.header("cache-control"), "no-store");
        assert!(!p.header("referrer-policy").is_empty());
    }
    assert_eq!(pages[2].status, StatusCode::NOT_FOUND);
    assert!(pages[2].shows("couldn't find"));
    assert_eq!(
        b.get("/static/app.css").await.header("content-type"),
        "text/css; charset=utf-8"
    );
    assert_eq!(b.get("/healthz").await.body, "ok");
    assert_eq!(b.get("/readyz").await.body, "ready");
    // Unauthenticated pages redirect to sign-in with a local `next`.
    let mut anon = app.browser();
    let r = anon.get("/settings/audit-log?action=key.created").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.location(),
        "/login?next=%2Fsettings%2Faudit-log%3Faction%3Dkey.created"
    );
    // After sign-in, `next` is honoured only for local paths.
    for (next, expected) in [
        ("/settings/audit-log", "/settings/audit-log"),
        ("//evil.example", "/settings/api-keys"),
        ("https://evil.example", "/settings/api-keys"),
    ] {
        let mut c = app.browser();
        c.get("/login").await;
        let res = c
            .post(
                "/login",
                &[
                    ("email", "hdr@example.com"),
                    ("password", PASSWORD),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(res.location(), expected, "{next}");
    }
}
both!(security_headers_everywhere);

async fn plaintext_keys_are_stored_nowhere(app: TestApp) {
    let mut b = app.signed_up("leak@example.com").await;
    let mut keys = vec![];
    let (id, k) = b.new_key("one").await;
    keys.push(k);
    let page = b.get(&format!("/settings/api-keys/{id}")).await;
    let rolled = b
        .post(
            &format!("/settings/api-keys/{id}/roll"),
            &[("form_token", &page.form_token()), ("grace", "1h")],
        )
        .await;
    keys.push(rolled.new_key().unwrap());
    for k in &keys {
        assert_eq!(
            app.state.verifier.verify(Some(k), &[]).await.unwrap().code,
            VerifyCode::Valid
        );
    }
    let dump = app.dump_database().await;
    assert!(
        dump.contains("leak@example.com"),
        "the dump reads the tables"
    );
    let logs = crate::helpers::log_text();
    for k in &keys {
        let secret = &k[8..];
        assert!(!dump.contains(secret), "a key is in the database");
        assert!(!logs.contains(secret), "a key is in the logs");
    }
    assert!(!dump.contains(PASSWORD) && !logs.contains(PASSWORD));
    // The session store keeps no key either (it is part of the dump), and the list page
    // shows only display fields.
    let list = b.get("/settings/api-keys").await;
    for k in &keys {
        assert!(!list.body.contains(&k[8..]));
    }
}
both!(plaintext_keys_are_stored_nowhere);

async fn forms_from_another_org_are_refused(app: TestApp) {
    let mut b = app.signed_up("tabs@example.com").await;
    let form = b.get("/settings/api-keys/new").await;
    let stale_org = b.org.clone().unwrap();
    let token = form.form_token();
    // In another tab, the user creates and switches to a second organization.
    b.post("/orgs", &[("name", "Second")]).await;
    let fields = [
        ("csrf", b.csrf.clone().unwrap()),
        ("org", stale_org),
        ("form_token", token),
    ];
    let mut all: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend([
        ("name", "k"),
        ("environment", "live"),
        ("preset", "Read-only"),
        ("expiry", "7d"),
    ]);
    let res = b.post_raw("/settings/api-keys", &all, &[]).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert!(res.body.contains("switched organizations in another tab"));
    assert!(res.new_key().is_none());
}
both!(forms_from_another_org_are_refused);

#[tokio::test]
async fn a_different_pepper_is_refused_at_start() {
    let app = TestApp::spawn(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    let first = keyward::config::KeyPepper::new(vec![42u8; 32]);
    app.store.check_pepper(&first.check_value()).await.unwrap();
    app.store.check_pepper(&first.check_value()).await.unwrap();
    let other = keyward::config::KeyPepper::new(vec![7u8; 32]);
    let err = app
        .store
        .check_pepper(&other.check_value())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("different pepper"));
}
