//! Members, roles, invitations, email and password reset.

use keyward::VerifyCode;
use reqwest::StatusCode;
use time::Duration;

use crate::{
    both,
    helpers::{Backend, Browser, PASSWORD, TestApp},
    smtp::{SmtpSink, link},
};

/// Creates a team organization (active from then on) and returns its id.
async fn team(app: &TestApp, b: &mut Browser, email: &str, name: &str) -> String {
    b.get("/orgs/new").await;
    assert_eq!(
        b.post("/orgs", &[("name", name)]).await.status,
        StatusCode::SEE_OTHER
    );
    let u = app.store.user_by_email(email).await.unwrap().unwrap();
    app.store
        .memberships(&u.id)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.org_name == name)
        .unwrap()
        .org_id
}

async fn user_id(app: &TestApp, email: &str) -> String {
    app.store.user_by_email(email).await.unwrap().unwrap().id
}

/// Creates an invitation from the members page; returns the link's path.
async fn invite(b: &mut Browser, email: &str, role: &str) -> String {
    b.get("/settings/members").await;
    let page = b
        .post("/settings/invitations", &[("email", email), ("role", role)])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let link = page
        .capture(r#"id="invite-link">([^<]+)<"#)
        .expect("link shown");
    format!("/invitations/{}", link.rsplit('/').next().unwrap())
}

async fn invitations_bring_teammates_in(app: TestApp) {
    let mut owner = app.signed_up("boss@example.com").await;
    // Personal organizations are not for sharing (the members page offers no invitation
    // form there; a forged one is refused).
    owner.get("/settings/api-keys/new").await;
    let res = owner
        .post(
            "/settings/invitations",
            &[("email", "m@example.com"), ("role", "viewer")],
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let boss_org = team(&app, &mut owner, "boss@example.com", "Boss team").await;
    let (key_id, _) = owner.new_key("team key").await;
    let path = invite(&mut owner, "Mate@Example.com", "viewer").await;
    // Without SMTP the email is logged and kept in the outbox for the operator.
    let outbox = app.state.mailer.outbox(10).await.unwrap();
    assert_eq!(outbox[0].recipient, "mate@example.com");
    assert_eq!(outbox[0].status, "logged");
    assert!(outbox[0].body.contains(&path));

    // Signed out, the link offers sign-up; sign-up through it joins the organization.
    let mut mate = app.browser();
    let page = mate.get(&path).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Create an account"));
    let token = path.rsplit('/').next().unwrap().to_string();
    let form = mate.get(&format!("/signup?invite={token}")).await;
    assert!(form.body.contains("mate@example.com"));
    let res = mate
        .post(
            "/signup",
            &[
                ("email", "mate@example.com"),
                ("password", PASSWORD),
                ("invite", &token),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    // The invitation proved the address: signed in at once, verified.
    let mate_user = app
        .store
        .user_by_email("mate@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(mate_user.email_verified_at.is_some());
    let list = mate.get("/settings/api-keys").await;
    assert!(
        list.body.contains("team key"),
        "the teammate sees the org's keys"
    );
    // Signing up through the invitation counts as a sign-in.
    assert!(
        app.store
            .user_by_email("mate@example.com")
            .await
            .unwrap()
            .unwrap()
            .last_login_at
            .is_some(),
        "sign-up by invitation is a sign-in"
    );
    assert!(!list.body.contains("Create API key"), "as a viewer");
    let forged = mate
        .post(&format!("/settings/api-keys/{key_id}/revoke"), &[])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let members = owner.get("/settings/members").await;
    assert!(members.body.contains("mate@example.com"));

    // The link works once.
    let mut other = app.signed_up("other@example.com").await;
    assert_eq!(other.get(&path).await.status, StatusCode::GONE);
    other.get("/settings/api-keys").await;
    let again = other.post(&format!("{path}/accept"), &[]).await;
    assert_eq!(again.status, StatusCode::GONE);

    // An invitation for someone else cannot be taken by another signed-in account.
    let for_x = invite(&mut owner, "x@example.com", "admin").await;
    let page = other.get(&for_x).await;
    assert!(page.body.contains("You are signed in as other@example.com"));
    let res = other.post(&format!("{for_x}/accept"), &[]).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(
        app.store
            .membership(&user_id(&app, "other@example.com").await, &boss_org)
            .await
            .unwrap()
            .is_none()
    );

    // Revoked and re-sent links stop working; the new one works.
    let for_y = invite(&mut owner, "y@example.com", "developer").await;
    let inv = app
        .store
        .open_invitations(&boss_org)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.email == "y@example.com")
        .unwrap();
    owner.get("/settings/members").await;
    let resent = owner
        .post(&format!("/settings/invitations/{}/resend", inv.id), &[])
        .await;
    assert_eq!(resent.status, StatusCode::OK);
    // The old link no longer exists at all.
    assert_eq!(
        app.browser().get(&for_y).await.status,
        StatusCode::NOT_FOUND
    );
    owner.get("/settings/members").await;
    owner
        .post(&format!("/settings/invitations/{}/revoke", inv.id), &[])
        .await;
    let new_link = resent.capture(r#"id="invite-link">([^<]+)<"#).unwrap();
    let new_path = format!("/invitations/{}", new_link.rsplit('/').next().unwrap());
    assert!(app.browser().get(&new_path).await.body.contains("revoked"));

    // Expired after 7 days.
    let for_z = invite(&mut owner, "z@example.com", "viewer").await;
    app.clock.advance(Duration::days(7) + Duration::seconds(1));
    let page = app.browser().get(&for_z).await;
    assert_eq!(page.status, StatusCode::GONE);
    assert!(page.body.contains("expired"));

    // Everything is audited.
    owner.sign_in("boss@example.com", PASSWORD).await;
    owner.post("/orgs/switch", &[("org_id", &boss_org)]).await;
    let audit = owner.get("/settings/audit-log").await;
    for a in [
        "invitation.created",
        "invitation.accepted",
        "invitation.resent",
        "invitation.revoked",
    ] {
        assert!(audit.body.contains(a), "{a}");
    }
}
both!(invitations_bring_teammates_in);

async fn members_roles_and_leaving(app: TestApp) {
    let mut owner = app.signed_up("own@example.com").await;
    let org = team(&app, &mut owner, "own@example.com", "Own team").await;
    // Bring in a developer and an admin through invitations.
    let mut dev = app.signed_up("dev@example.com").await;
    let path = invite(&mut owner, "dev@example.com", "developer").await;
    dev.get(&path).await;
    assert_eq!(
        dev.post(&format!("{path}/accept"), &[]).await.status,
        StatusCode::SEE_OTHER
    );
    let mut adm = app.signed_up("adm@example.com").await;
    let path = invite(&mut owner, "adm@example.com", "admin").await;
    adm.get(&path).await;
    adm.post(&format!("{path}/accept"), &[]).await;
    let (dev_id, adm_id, owner_id) = (
        user_id(&app, "dev@example.com").await,
        user_id(&app, "adm@example.com").await,
        user_id(&app, "own@example.com").await,
    );

    // A developer cannot change roles or remove people.
    dev.get("/settings/members").await;
    let res = dev
        .post(
            &format!("/settings/members/{adm_id}/role"),
            &[("role", "viewer")],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let res = dev
        .post(&format!("/settings/members/{adm_id}/remove"), &[])
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    // An admin can, but not for owners.
    adm.get("/settings/members").await;
    let res = adm
        .post(
            &format!("/settings/members/{owner_id}/role"),
            &[("role", "viewer")],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let res = adm
        .post(
            &format!("/settings/members/{dev_id}/role"),
            &[("role", "owner")],
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);

    // The developer's key stays when they are removed, marked, and can be handled in bulk.
    dev.get("/settings/api-keys").await;
    let (dev_key_id, dev_key) = dev.new_key("dev's key").await;
    let (dev_key2_id, dev_key2) = dev.new_key("dev's other key").await;
    let res = adm
        .post(&format!("/settings/members/{dev_id}/remove"), &[])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert!(app.store.membership(&dev_id, &org).await.unwrap().is_none());
    // The removed developer is back in their personal organization: the team's keys are
    // gone from their view, and the team's key pages are not found.
    let mine = dev.get("/settings/api-keys").await;
    assert_eq!(mine.status, StatusCode::OK);
    assert!(!mine.shows("dev's key") && !mine.shows("Own team"));
    assert_eq!(
        dev.get(&format!("/settings/api-keys/{dev_key_id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    dev.org = Some(org.clone());
    let res = dev
        .post(&format!("/settings/api-keys/{dev_key_id}/revoke"), &[])
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.state
            .verifier
            .verify(Some(&dev_key), &[])
            .await
            .unwrap()
            .code,
        VerifyCode::Valid
    );
    let former = adm.get("/settings/api-keys?creator=removed").await;
    assert!(
        former.body.contains("dev@example.com (creator removed)"),
        "{}",
        former.body
    );
    let res = adm
        .post(
            "/settings/api-keys/bulk",
            &[
                ("keys", &dev_key_id),
                ("action", "reassign"),
                ("to", &adm_id),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let key = app.store.key(&org, &dev_key_id).await.unwrap().unwrap();
    assert_eq!(key.created_by.as_deref(), Some(adm_id.as_str()));
    adm.get("/settings/api-keys?creator=removed").await;
    let res = adm
        .post(
            "/settings/api-keys/bulk",
            &[("keys", &dev_key2_id), ("action", "revoke")],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.state
            .verifier
            .verify(Some(&dev_key2), &[])
            .await
            .unwrap()
            .code,
        VerifyCode::Revoked
    );

    // The last owner can be neither demoted, removed, nor leave.
    owner.get("/settings/members").await;
    let res = owner.post("/settings/members/leave", &[]).await;
    assert_eq!(
        res.status,
        StatusCode::CONFLICT,
        "the sole owner cannot leave"
    );
    assert!(res.body.contains("at least one owner"));
    // An admin cannot make themselves owner.
    adm.get("/settings/members").await;
    let res = adm
        .post("/settings/members/transfer", &[("to", &adm_id)])
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let res = adm
        .post(&format!("/settings/members/{owner_id}/remove"), &[])
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let owners_only = app
        .store
        .set_role(
            &org,
            &owner_id,
            "admin",
            &keyward::store::NewAudit::new("x", 0),
        )
        .await
        .unwrap();
    assert_eq!(owners_only, keyward::store::MemberChange::LastOwner);

    // Transfer ownership: the admin becomes owner, the old owner an admin.
    owner.get("/settings/members").await;
    let res = owner
        .post("/settings/members/transfer", &[("to", &adm_id)])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.store
            .membership(&adm_id, &org)
            .await
            .unwrap()
            .unwrap()
            .role,
        "owner"
    );
    assert_eq!(
        app.store
            .membership(&owner_id, &org)
            .await
            .unwrap()
            .unwrap()
            .role,
        "admin"
    );
}
both!(members_roles_and_leaving);

async fn password_reset_by_email(backend: Backend) {
    let (sink, url) = SmtpSink::start().await;
    let Some(app) = TestApp::spawn_with(backend, |c| c.smtp_url = Some(url.clone())).await else {
        return;
    };
    let mut old_session = app.signed_up("forget@example.com").await;
    assert_eq!(
        old_session.get("/settings/api-keys").await.status,
        StatusCode::OK
    );

    let mut b = app.browser();
    b.get("/forgot-password").await;
    let known = b
        .post("/forgot-password", &[("email", "forget@example.com")])
        .await;
    let unknown = b
        .post("/forgot-password", &[("email", "nobody@example.com")])
        .await;
    assert_eq!(known.status, StatusCode::OK);
    let strip = |s: &str| {
        regex::Regex::new(r#"name="csrf" value="[^"]+""#)
            .unwrap()
            .replace_all(s, "")
            .to_string()
    };
    assert_eq!(
        strip(&known.body),
        strip(&unknown.body),
        "same answer whether or not the account exists"
    );
    // The first email to this address was the sign-up's verification link.
    let mail = sink.wait_for("forget@example.com", 2).await;
    assert!(mail.from.contains("keyward@localhost"));
    assert_eq!(sink.count_to("nobody@example.com"), 0);
    let reset_link = link(&mail.data, &format!("{}/reset-password/", app.base));
    let path = reset_link.trim_start_matches(&app.base).to_string();

    // A newer request voids the older link.
    // (At most one reset email a minute per account.)
    app.clock.advance(Duration::seconds(61));
    b.get("/forgot-password").await;
    b.post("/forgot-password", &[("email", "forget@example.com")])
        .await;
    for _ in 0..100 {
        if sink.count_to("forget@example.com") >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(b.get(&path).await.status, StatusCode::GONE);
    let newest = sink
        .messages
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m.to.iter().any(|t| t == "forget@example.com"))
        .unwrap()
        .clone();
    let path = link(&newest.data, &format!("{}/reset-password/", app.base))
        .trim_start_matches(&app.base)
        .to_string();

    // Policy applies; then the new password works and every old session is signed out.
    assert_eq!(b.get(&path).await.status, StatusCode::OK);
    let weak = b.post(&path, &[("password", "short")]).await;
    assert_eq!(weak.status, StatusCode::BAD_REQUEST);
    assert!(weak.body.contains("at least 15"));
    let new_password = "a brand new long passphrase";
    let res = b.post(&path, &[("password", new_password)]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(
        old_session.get("/settings/api-keys").await.status,
        StatusCode::SEE_OTHER,
        "old session ended"
    );
    assert_eq!(
        b.sign_in("forget@example.com", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        b.sign_in("forget@example.com", new_password).await.status,
        StatusCode::SEE_OTHER
    );
    // Single use.
    let mut c = app.browser();
    assert_eq!(c.get(&path).await.status, StatusCode::GONE);
    c.get("/forgot-password").await;
    let replay = c
        .post(&path, &[("password", "yet another long passphrase")])
        .await;
    assert_eq!(replay.status, StatusCode::GONE);

    // Links expire after 30 minutes.
    app.clock.advance(Duration::seconds(61));
    c.get("/forgot-password").await;
    c.post("/forgot-password", &[("email", "forget@example.com")])
        .await;
    for _ in 0..100 {
        if sink.count_to("forget@example.com") >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let third = sink
        .messages
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m.to.iter().any(|t| t == "forget@example.com"))
        .unwrap()
        .clone();
    let path = link(&third.data, &format!("{}/reset-password/", app.base))
        .trim_start_matches(&app.base)
        .to_string();
    app.clock.advance(Duration::minutes(31));
    assert_eq!(c.get(&path).await.status, StatusCode::GONE);
    // The emails went through SMTP and are recorded as sent, without their bodies.
    let outbox = app.state.mailer.outbox(10).await.unwrap();
    assert!(
        outbox
            .iter()
            .all(|e| e.status == "sent" && e.body.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_reset_by_email_sqlite() {
    password_reset_by_email(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_reset_by_email_postgres() {
    password_reset_by_email(Backend::Postgres).await;
}

/// The role table, over HTTP: for each role, each action is allowed or refused (403).
async fn role_table_over_http(app: TestApp) {
    let mut owner = app.signed_up("t-owner@example.com").await;
    let org = team(&app, &mut owner, "t-owner@example.com", "Table team").await;
    let (owner_key_id, _) = owner.new_key("owner key").await;
    // (role, view keys, create, edit own, edit others', revoke others', roll others',
    //  manage members, view audit, export audit)
    let table = [
        (
            "admin",
            [true, true, true, true, true, true, true, true, true],
        ),
        (
            "developer",
            [true, true, true, false, false, false, false, true, false],
        ),
        (
            "viewer",
            [true, false, false, false, false, false, false, true, false],
        ),
    ];
    for (role, expected) in table {
        let email = format!("t-{role}@example.com");
        let mut m = app.signed_up(&email).await;
        let path = invite(&mut owner, &email, role).await;
        m.get(&path).await;
        assert_eq!(
            m.post(&format!("{path}/accept"), &[]).await.status,
            StatusCode::SEE_OTHER
        );
        let mut got = vec![];
        got.push(m.get("/settings/api-keys").await.status == StatusCode::OK);
        let create = m.get("/settings/api-keys/new").await;
        let created = if create.status == StatusCode::OK {
            m.new_key(&format!("{role} key")).await.0
        } else {
            String::new()
        };
        got.push(!created.is_empty());
        let own = if created.is_empty() {
            false
        } else {
            m.get(&format!("/settings/api-keys/{created}")).await;
            m.post(
                &format!("/settings/api-keys/{created}"),
                &[("name", "renamed"), ("scopes", "read")],
            )
            .await
            .status
                == StatusCode::SEE_OTHER
        };
        got.push(own);
        m.get(&format!("/settings/api-keys/{owner_key_id}")).await;
        m.org = Some(org.clone());
        got.push(
            m.post(
                &format!("/settings/api-keys/{owner_key_id}"),
                &[
                    ("name", "owner key"),
                    ("scopes", "read"),
                    ("scopes", "write"),
                ],
            )
            .await
            .status
                == StatusCode::SEE_OTHER,
        );
        // Revoke and roll someone else's key: fresh keys of the owner, so that an allowed
        // attempt does not disturb the next role's checks.
        let (victim, _) = owner.new_key(&format!("victim of {role}")).await;
        let (victim2, _) = owner.new_key(&format!("roll victim of {role}")).await;
        m.get(&format!("/settings/api-keys/{owner_key_id}")).await;
        m.org = Some(org.clone());
        let revoke = m
            .post(&format!("/settings/api-keys/{victim}/revoke"), &[])
            .await
            .status;
        got.push(revoke == StatusCode::SEE_OTHER);
        let detail = m.get(&format!("/settings/api-keys/{victim2}")).await;
        let token = detail
            .capture(r#"name="form_token" value="([^"]+)""#)
            .unwrap_or_default();
        m.org = Some(org.clone());
        let roll = m
            .post(
                &format!("/settings/api-keys/{victim2}/roll"),
                &[("form_token", &token), ("grace", "now")],
            )
            .await
            .status;
        got.push(roll == StatusCode::OK);
        m.get("/settings/members").await;
        got.push(
            m.post(
                "/settings/invitations",
                &[("email", "nobody-yet@example.com"), ("role", "viewer")],
            )
            .await
            .status
                == StatusCode::OK,
        );
        got.push(m.get("/settings/audit-log").await.status == StatusCode::OK);
        got.push(m.get("/settings/audit-log/export?format=csv").await.status == StatusCode::OK);
        assert_eq!(got, expected.to_vec(), "role {role}");
    }
}
both!(role_table_over_http);
