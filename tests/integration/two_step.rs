//! Two-step verification: authenticator apps (TOTP), recovery codes, the second step of a
//! password sign-in, step-up, and organizations' two-step policy.

use reqwest::StatusCode;
use time::Duration;

use crate::{
    both,
    helpers::{Backend, Browser, PASSWORD, TestApp},
    smtp::{SmtpSink, link},
};

const SECURITY: &str = "/settings/account/security";
const TOTP: &str = "/settings/account/security/totp";

/// The code an authenticator app shows for `secret` (base32) at Unix time `t`, computed
/// here independently of the server.
pub fn code_at(secret: &str, t: i64) -> String {
    let bytes = totp_rs::Secret::try_from_base32(secret).unwrap();
    let totp = totp_rs::Builder::new()
        .with_secret(bytes.as_ref().to_vec())
        .build()
        .unwrap();
    totp.generate(u64::try_from(t).unwrap()).to_string()
}

fn now(app: &TestApp) -> i64 {
    use keyward::clock::Clock;
    app.clock.unix()
}

/// Opens the enrolment page and returns the secret it shows.
async fn enrolment_secret(b: &mut Browser) -> String {
    let page = b.get(TOTP).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("<svg"), "a server-rendered QR code");
    page.capture(r#"id="totp-secret">([A-Z2-7]+)<"#)
        .expect("the secret is shown as text")
}

/// Enrols an authenticator app for a signed-in browser; returns (secret, recovery codes).
async fn enrol_totp(app: &TestApp, b: &mut Browser) -> (String, Vec<String>) {
    let secret = enrolment_secret(b).await;
    let res = b.post(TOTP, &[("code", &code_at(&secret, now(app)))]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(res.location(), "/settings/account/security/recovery-codes");
    let page = b.get(res.location()).await;
    let codes: Vec<String> = regex::Regex::new(r"<li>([a-z2-9]{5}-[a-z2-9]{5})</li>")
        .unwrap()
        .captures_iter(&page.body)
        .map(|c| c[1].to_string())
        .collect();
    assert_eq!(codes.len(), 10, "{}", page.body);
    (secret, codes)
}

/// Moves the clock to the start of a later 30-second step (so that each sign-in in a
/// test uses a step no code was accepted for yet).
fn next_step(app: &TestApp) {
    let t = now(app);
    app.clock.advance(Duration::seconds(30 - t.rem_euclid(30)));
}

/// Signs in with the password; returns the answer (a redirect to the second step for an
/// account with a second factor).
async fn password_step(app: &TestApp, email: &str) -> (Browser, reqwest::StatusCode, String) {
    let mut b = app.browser();
    b.get("/login").await;
    let res = b
        .post("/login", &[("email", email), ("password", PASSWORD)])
        .await;
    if res.location() == "/login/two-step" {
        // The browser follows the redirect (and picks up the page's form token).
        assert_eq!(b.get("/login/two-step").await.status, StatusCode::OK);
    }
    (b, res.status, res.location().to_string())
}

/// A 6-digit code that is none of the codes accepted at `t` (so a test cannot pass by luck).
fn wrong_code(secret: &str, t: i64) -> String {
    let right = [
        code_at(secret, t - 30),
        code_at(secret, t),
        code_at(secret, t + 30),
    ];
    (0..4)
        .map(|i| format!("{i}{i}{i}{i}{i}{i}"))
        .find(|c| !right.contains(c))
        .unwrap()
}

async fn with_totp(app: &TestApp, email: &str) -> (String, Vec<String>) {
    let mut b = app.signed_up(email).await;
    let enrolled = enrol_totp(app, &mut b).await;
    next_step(app);
    enrolled
}

async fn totp_enrolment_needs_the_right_first_code(app: TestApp) {
    let mut b = app.signed_up("enrol@example.com").await;
    let secret = enrolment_secret(&mut b).await;
    assert_eq!(
        enrolment_secret(&mut b).await,
        secret,
        "the same secret until enrolled"
    );
    let wrong = b
        .post(TOTP, &[("code", &wrong_code(&secret, now(&app)))])
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert!(wrong.shows("That code is not right"));
    assert!(
        !app.store
            .has_second_factor(&user_id(&app, "enrol@example.com").await)
            .await
            .unwrap()
    );

    let res = b
        .post(TOTP, &[("code", &code_at(&secret, now(&app)))])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    // Until shown, the codes wait in the session, sealed.
    let dump = app.dump_database().await;
    let codes = b.get(res.location()).await;
    assert!(codes.shows("shown only this once"));
    let first = codes
        .capture(r"<li>([a-z2-9]{5}-[a-z2-9]{5})</li>")
        .unwrap();
    assert!(!dump.contains(&first) && !dump.contains(&first.replace('-', "")));
    // Shown once.
    let again = b.get("/settings/account/security/recovery-codes").await;
    assert_eq!(again.location(), SECURITY);
    let page = b.get(SECURITY).await;
    assert!(page.shows("10 unused recovery codes"), "{}", page.body);
    // Sealed at rest: the secret is nowhere in the database.
    assert!(!app.dump_database().await.contains(&secret));
    let events = app.audit_events().await;
    assert!(events.iter().any(|(a, _)| a == "account.totp_enabled"));
}
both!(totp_enrolment_needs_the_right_first_code);

async fn user_id(app: &TestApp, email: &str) -> String {
    app.store.user_by_email(email).await.unwrap().unwrap().id
}

async fn sign_in_asks_for_the_code(app: TestApp) {
    let (secret, _) = with_totp(&app, "ask@example.com").await;
    let (mut b, status, location) = password_step(&app, "ask@example.com").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/login/two-step");
    // Not signed in yet.
    let keys = b.get("/settings/api-keys").await;
    assert!(keys.location().starts_with("/login"), "{}", keys.location());
    let page = b.get("/login/two-step").await;
    assert_eq!(page.status, StatusCode::OK);
    let res = b
        .post("/login/two-step", &[("code", &code_at(&secret, now(&app)))])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(res.location(), "/settings/api-keys");
    assert_eq!(b.get("/settings/api-keys").await.status, StatusCode::OK);
    let events = app.audit_events().await;
    let (_, details) = events
        .iter()
        .rev()
        .find(|(a, _)| a == "auth.signed_in")
        .unwrap();
    assert_eq!(details["method"], "password+totp");
}
both!(sign_in_asks_for_the_code);

async fn codes_one_step_off_are_accepted_two_steps_off_refused(app: TestApp) {
    let (secret, _) = with_totp(&app, "skew@example.com").await;
    for (offset, accepted) in [(-60, false), (60, false), (-30, true), (30, true)] {
        // Far past every step used so far.
        app.clock.advance(Duration::seconds(120));
        let (mut b, _, _) = password_step(&app, "skew@example.com").await;
        let code = code_at(&secret, now(&app) + offset);
        let res = b.post("/login/two-step", &[("code", &code)]).await;
        if accepted {
            assert_eq!(res.status, StatusCode::SEE_OTHER, "offset {offset}");
        } else {
            assert_eq!(res.status, StatusCode::UNAUTHORIZED, "offset {offset}");
            assert!(res.shows("That code is not right"));
        }
    }
}
both!(codes_one_step_off_are_accepted_two_steps_off_refused);

async fn a_used_code_is_refused(app: TestApp) {
    let (secret, _) = with_totp(&app, "replay@example.com").await;
    let code = code_at(&secret, now(&app));
    let (mut first, _, _) = password_step(&app, "replay@example.com").await;
    let ok = first.post("/login/two-step", &[("code", &code)]).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    // The same code again, within its step: refused.
    let (mut second, _, _) = password_step(&app, "replay@example.com").await;
    let replay = second.post("/login/two-step", &[("code", &code)]).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert!(replay.shows("already used"), "{}", replay.body);
    // An earlier step's code (still within the window) is refused too.
    app.clock.advance(Duration::seconds(30));
    let fresh = code_at(&secret, now(&app));
    assert_eq!(
        second
            .post("/login/two-step", &[("code", &fresh)])
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    let (mut third, _, _) = password_step(&app, "replay@example.com").await;
    let older = third.post("/login/two-step", &[("code", &code)]).await;
    assert_eq!(older.status, StatusCode::UNAUTHORIZED);
}
both!(a_used_code_is_refused);

async fn a_recovery_code_works_once(app: TestApp) {
    let (_, codes) = with_totp(&app, "recover@example.com").await;
    let (mut b, _, _) = password_step(&app, "recover@example.com").await;
    let res = b
        .post(
            "/login/two-step",
            &[("recovery_code", &codes[3].to_uppercase())],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let landing = b.get(res.location()).await;
    assert!(landing.shows("9 recovery codes left"), "{}", landing.body);
    let (mut again, _, _) = password_step(&app, "recover@example.com").await;
    let reused = again
        .post("/login/two-step", &[("recovery_code", &codes[3])])
        .await;
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED);
    assert!(reused.shows("already used"));
    let events = app.audit_events().await;
    let (_, used) = events
        .iter()
        .find(|(a, _)| a == "account.recovery_code_used")
        .unwrap();
    assert_eq!(used["remaining"], 9);
    let (_, signed_in) = events
        .iter()
        .rev()
        .find(|(a, _)| a == "auth.signed_in")
        .unwrap();
    assert_eq!(signed_in["method"], "password+recovery_code");
}
both!(a_recovery_code_works_once);

async fn new_recovery_codes_void_the_old_ones(app: TestApp) {
    let mut b = app.signed_up("regen@example.com").await;
    let (_, old) = enrol_totp(&app, &mut b).await;
    b.get(SECURITY).await;
    let res = b
        .post("/settings/account/security/recovery-codes", &[])
        .await;
    assert_eq!(res.location(), "/settings/account/security/recovery-codes");
    let page = b.get(res.location()).await;
    let new = page.capture(r"<li>([a-z2-9]{5}-[a-z2-9]{5})</li>").unwrap();
    assert!(!old.contains(&new));
    let (mut c, _, _) = password_step(&app, "regen@example.com").await;
    let stale = c
        .post("/login/two-step", &[("recovery_code", &old[0])])
        .await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED);
    let fresh = c.post("/login/two-step", &[("recovery_code", &new)]).await;
    assert_eq!(fresh.status, StatusCode::SEE_OTHER);
    assert!(
        app.audit_events()
            .await
            .iter()
            .any(|(a, _)| a == "account.recovery_codes_regenerated")
    );
}
both!(new_recovery_codes_void_the_old_ones);

async fn wrong_codes_end_the_pending_sign_in(app: TestApp) {
    let (secret, _) = with_totp(&app, "guess@example.com").await;
    let (mut b, _, _) = password_step(&app, "guess@example.com").await;
    let wrong = wrong_code(&secret, now(&app));
    for _ in 0..4 {
        let res = b.post("/login/two-step", &[("code", &wrong)]).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    }
    let last = b.post("/login/two-step", &[("code", &wrong)]).await;
    assert_eq!(last.location(), "/login?reason=two_step_expired");
    // Even the right code no longer helps: the password step must be done again.
    let late = b
        .post("/login/two-step", &[("code", &code_at(&secret, now(&app)))])
        .await;
    assert_eq!(late.location(), "/login?reason=two_step_expired");
    let user = app
        .store
        .user_by_email("guess@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        user.failed_logins, 5,
        "every wrong code counts like a wrong password"
    );
}
both!(wrong_codes_end_the_pending_sign_in);

/// Codes are no faster to guess than passwords: wrong codes count against the account as
/// they come (across pending sign-ins), and once the account is paused the second step
/// refuses even the right code.
async fn wrong_codes_pause_the_account_like_wrong_passwords(app: TestApp) {
    let (secret, _) = with_totp(&app, "pause2fa@example.com").await;
    let wrong = wrong_code(&secret, now(&app));
    let (mut b, _, _) = password_step(&app, "pause2fa@example.com").await;
    for _ in 0..5 {
        b.post("/login/two-step", &[("code", &wrong)]).await;
    }
    // The right password starts a new second step, but its first wrong code is the
    // sixth failure in a row: the account pauses.
    let (mut b, _, location) = password_step(&app, "pause2fa@example.com").await;
    assert_eq!(location, "/login/two-step");
    let res = b.post("/login/two-step", &[("code", &wrong)]).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    let right = b
        .post("/login/two-step", &[("code", &code_at(&secret, now(&app)))])
        .await;
    assert_eq!(right.location(), "/login?reason=two_step_expired");
    let user = app
        .store
        .user_by_email("pause2fa@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.failed_logins, 6);
    assert!(user.locked_until.is_some_and(|t| t > now(&app)));
}
both!(wrong_codes_pause_the_account_like_wrong_passwords);

/// A factor is set up only once the email address is confirmed: an account someone else
/// opened for an address cannot arm itself before the address's owner turns up.
async fn factors_need_a_confirmed_address(app: TestApp) {
    let mut b = app.signed_up_unverified("early@example.com").await;
    let page = b.get(SECURITY).await;
    assert!(
        page.shows("Confirm your email address first"),
        "{}",
        page.body
    );
    assert!(!page.shows("Set up an authenticator app"));
    assert_eq!(b.get(TOTP).await.status, StatusCode::FORBIDDEN);
    let res = b.post(TOTP, &[("code", "123456")]).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let options = b
        .post_raw(
            "/settings/account/security/passkeys/options",
            &[],
            &[("x-csrf-token", &b.csrf.clone().unwrap_or_default())],
        )
        .await;
    assert_ne!(options.status, StatusCode::OK);
}
both!(factors_need_a_confirmed_address);

/// A wrong password on the step-up confirmation counts as a failed sign-in (here against
/// this browser's trusted device token, which keeps its own count).
async fn step_up_guesses_count_as_failed_sign_ins(app: TestApp) {
    let mut b = app.signed_up("confirmer@example.com").await;
    app.clock.advance(Duration::minutes(16));
    b.get("/settings/account/confirm").await;
    for _ in 0..3 {
        let res = b
            .post(
                "/settings/account/confirm",
                &[("password", "not my password at all")],
            )
            .await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.body);
    }
    let failed: Vec<serde_json::Value> = app
        .audit_events()
        .await
        .into_iter()
        .filter(|(a, _)| a == "auth.sign_in_failed")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(failed.len(), 1, "one row for the window: {failed:?}");
    assert_eq!(failed[0]["trusted_device"], serde_json::json!(true));
    // The account's own count is untouched: an attacker elsewhere gains nothing.
    let user = app
        .store
        .user_by_email("confirmer@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.failed_logins, 0);
}
both!(step_up_guesses_count_as_failed_sign_ins);

async fn a_pending_sign_in_expires(app: TestApp) {
    let (secret, _) = with_totp(&app, "slow@example.com").await;
    let (mut b, _, _) = password_step(&app, "slow@example.com").await;
    app.clock.advance(Duration::seconds(301));
    let res = b
        .post("/login/two-step", &[("code", &code_at(&secret, now(&app)))])
        .await;
    assert_eq!(res.location(), "/login?reason=two_step_expired");
}
both!(a_pending_sign_in_expires);

async fn enrolling_after_fifteen_minutes_asks_to_confirm(app: TestApp) {
    let mut b = app.signed_up("stepup@example.com").await;
    app.clock.advance(Duration::minutes(16));
    let res = b.get(TOTP).await;
    assert_eq!(
        res.location(),
        "/settings/account/confirm?next=%2Fsettings%2Faccount%2Fsecurity%2Ftotp"
    );
    let page = b.get(res.location()).await;
    assert!(page.shows("Confirm it's you"));
    let wrong = b
        .post(
            "/settings/account/confirm",
            &[("password", "not the password"), ("next", TOTP)],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // A form post without a recent sign-in is refused the same way.
    let post = b.post(TOTP, &[("code", "123456")]).await;
    assert!(post.location().starts_with("/settings/account/confirm"));
    b.get("/settings/account/confirm").await;
    let ok = b
        .post(
            "/settings/account/confirm",
            &[("password", PASSWORD), ("next", TOTP)],
        )
        .await;
    assert_eq!(ok.location(), TOTP);
    assert_eq!(b.get(TOTP).await.status, StatusCode::OK);
    // The confirmation, too, lasts 15 minutes.
    app.clock.advance(Duration::minutes(16));
    assert!(
        b.get(TOTP)
            .await
            .location()
            .starts_with("/settings/account/confirm")
    );
}
both!(enrolling_after_fifteen_minutes_asks_to_confirm);

async fn removing_the_app_needs_a_recent_sign_in(app: TestApp) {
    let mut b = app.signed_up("remove@example.com").await;
    let (secret, _) = enrol_totp(&app, &mut b).await;
    app.clock.advance(Duration::minutes(16));
    b.get(SECURITY).await;
    let res = b.post("/settings/account/security/totp/remove", &[]).await;
    assert!(res.location().starts_with("/settings/account/confirm"));
    let id = user_id(&app, "remove@example.com").await;
    assert!(app.store.has_second_factor(&id).await.unwrap());
    // Confirm with a code instead of the password.
    b.get(res.location()).await;
    let ok = b
        .post(
            "/settings/account/confirm",
            &[("code", &code_at(&secret, now(&app))), ("next", SECURITY)],
        )
        .await;
    assert_eq!(ok.location(), SECURITY);
    b.get(SECURITY).await;
    let removed = b.post("/settings/account/security/totp/remove", &[]).await;
    assert_eq!(removed.location(), SECURITY);
    assert!(!app.store.has_second_factor(&id).await.unwrap());
    assert_eq!(app.store.recovery_codes_left(&id).await.unwrap(), 0);
    let (_, status, location) = password_step(&app, "remove@example.com").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/settings/api-keys", "no second step any more");
}
both!(removing_the_app_needs_a_recent_sign_in);

async fn reset_keeps_the_second_factor(backend: Backend) {
    let (sink, url) = SmtpSink::start().await;
    let Some(app) = TestApp::spawn_with(backend, |c| c.smtp_url = Some(url.clone())).await else {
        return;
    };
    let (secret, _) = with_totp(&app, "reset2fa@example.com").await;
    let mut b = app.browser();
    b.get("/forgot-password").await;
    b.post("/forgot-password", &[("email", "reset2fa@example.com")])
        .await;
    // The first message is the sign-up confirmation; the second, the reset link.
    let mail = sink.wait_for("reset2fa@example.com", 2).await;
    let path = link(&mail.data, &format!("{}/reset-password/", app.base))
        .trim_start_matches(&app.base)
        .to_string();
    b.get(&path).await;
    let new_password = "a brand new long passphrase";
    let res = b.post(&path, &[("password", new_password)]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    b.get("/login").await;
    let signin = b
        .post(
            "/login",
            &[
                ("email", "reset2fa@example.com"),
                ("password", new_password),
            ],
        )
        .await;
    assert_eq!(
        signin.location(),
        "/login/two-step",
        "still asks the second step"
    );
    b.get("/login/two-step").await;
    let done = b
        .post("/login/two-step", &[("code", &code_at(&secret, now(&app)))])
        .await;
    assert_eq!(done.location(), "/settings/api-keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_keeps_the_second_factor_sqlite() {
    reset_keeps_the_second_factor(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_keeps_the_second_factor_postgres() {
    reset_keeps_the_second_factor(Backend::Postgres).await;
}

// ------------------------------------------------------------------ organization policy

/// An owner with an authenticator app, in a new team organization (active); returns the
/// owner's browser and the organization id.
async fn team_with_owner(app: &TestApp, email: &str) -> (Browser, String) {
    let mut owner = app.signed_up(email).await;
    enrol_totp(app, &mut owner).await;
    owner.get("/orgs/new").await;
    let res = owner.post("/orgs", &[("name", "Team")]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let id = user_id(app, email).await;
    let org = app
        .store
        .memberships(&id)
        .await
        .unwrap()
        .into_iter()
        .find(|m| !m.personal)
        .unwrap()
        .org_id;
    (owner, org)
}

async fn require_policy(owner: &mut Browser, required: &str) -> crate::helpers::Page {
    owner.get("/settings/members").await;
    owner
        .post("/settings/members/two-step", &[("required", required)])
        .await
}

async fn org_policy_sends_members_without_a_second_factor_to_enrol(app: TestApp) {
    let (mut owner, org) = team_with_owner(&app, "policy-owner@example.com").await;
    let res = require_policy(&mut owner, "true").await;
    assert_eq!(res.location(), "/settings/members");
    assert!(owner.get("/settings/members").await.shows("Required."));
    let (_, details) = app
        .audit_events()
        .await
        .into_iter()
        .find(|(a, _)| a == "org.two_step_policy_changed")
        .unwrap();
    assert_eq!(details["required"], true);

    let mut member = app.signed_up("policy-member@example.com").await;
    let member_id = user_id(&app, "policy-member@example.com").await;
    app.store
        .add_member(
            &org,
            &member_id,
            "developer",
            keyward::store::NewAudit::new("member.added", now(&app)),
        )
        .await
        .unwrap();
    // Their personal organization does not require it.
    assert_eq!(
        member.get("/settings/api-keys").await.status,
        StatusCode::OK
    );
    let switched = member.post("/orgs/switch", &[("org_id", &org)]).await;
    assert_eq!(switched.status, StatusCode::SEE_OTHER);
    for page in [
        "/settings/api-keys",
        "/settings/members",
        "/settings/audit-log",
    ] {
        let res = member.get(page).await;
        assert_eq!(res.location(), SECURITY, "{page}");
    }
    let security = member.get(SECURITY).await;
    assert!(
        security.shows("Team requires two-step verification"),
        "{}",
        security.body
    );
    // The management API with the session: a clear JSON refusal.
    let api = member
        .client
        .get(format!("{}/api/v1/keys", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(body["error"]["code"], "two_step_required");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Settings → Account → Security")
    );

    // After enrolling, everything opens.
    enrol_totp(&app, &mut member).await;
    assert_eq!(
        member.get("/settings/api-keys").await.status,
        StatusCode::OK
    );
    let api = member
        .client
        .get(format!("{}/api/v1/keys", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::OK);

    // Members page: each member's two-step status.
    let members = owner.get("/settings/members").await;
    assert!(members.shows("Two-step"));
    assert_eq!(members.body.matches("badge badge-active\">On<").count(), 2);
    let _ = require_policy(&mut owner, "false").await;
    assert!(owner.get("/settings/members").await.shows("Not required."));
}
both!(org_policy_sends_members_without_a_second_factor_to_enrol);

async fn members_page_shows_who_has_two_step(app: TestApp) {
    let (mut owner, org) = team_with_owner(&app, "status-owner@example.com").await;
    app.signed_up("status-member@example.com").await;
    let member_id = user_id(&app, "status-member@example.com").await;
    app.store
        .add_member(
            &org,
            &member_id,
            "viewer",
            keyward::store::NewAudit::new("member.added", now(&app)),
        )
        .await
        .unwrap();
    let page = owner.get("/settings/members").await;
    let row = |email: &str| {
        let table = page.body.find("<tbody>").unwrap();
        let start = table + page.body[table..].find(email).unwrap();
        let end = start + page.body[start..].find("</tr>").unwrap();
        page.body[start..end].to_string()
    };
    assert!(row("status-owner@example.com").contains(">On<"));
    assert!(row("status-member@example.com").contains(">Off<"));
}
both!(members_page_shows_who_has_two_step);

async fn an_owner_without_two_step_cannot_require_it(app: TestApp) {
    let mut owner = app.signed_up("bare-owner@example.com").await;
    owner.get("/orgs/new").await;
    owner.post("/orgs", &[("name", "Team")]).await;
    let res = require_policy(&mut owner, "true").await;
    assert_eq!(res.location(), "/settings/members");
    let page = owner.get("/settings/members").await;
    assert!(page.shows("Set up two-step verification for your own account first"));
    assert!(page.shows("Not required."));
    // Admins cannot set it at all.
    let (mut admin_owner, org) = team_with_owner(&app, "other-owner@example.com").await;
    let mut admin = app.signed_up("admin@example.com").await;
    let admin_id = user_id(&app, "admin@example.com").await;
    app.store
        .add_member(
            &org,
            &admin_id,
            "admin",
            keyward::store::NewAudit::new("member.added", now(&app)),
        )
        .await
        .unwrap();
    admin.get("/settings/api-keys").await;
    admin.post("/orgs/switch", &[("org_id", &org)]).await;
    let page = admin.get("/settings/members").await;
    assert!(!page.shows("Require two-step verification"));
    let refused = admin
        .post("/settings/members/two-step", &[("required", "true")])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        admin_owner
            .get("/settings/members")
            .await
            .shows("Not required.")
    );
}
both!(an_owner_without_two_step_cannot_require_it);

// ------------------------------------------------------------------ passkeys
// The ceremonies themselves run in the browser journeys (Chromium's virtual
// authenticator); here: the options the server asks for, and refusals.

/// An app whose base URL names `localhost` (browsers offer passkeys only to domain names).
async fn passkey_app(backend: Backend) -> Option<TestApp> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    TestApp::spawn_on(backend, listener, |c| {
        c.base_url = format!("http://localhost:{port}");
    })
    .await
}

async fn json_post(
    b: &Browser,
    path: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let res = b
        .client
        .post(format!("{}{path}", b.base))
        .header("x-csrf-token", b.csrf.clone().unwrap_or_default())
        .header("accept", "application/json")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

async fn passkey_options_ask_for_a_discoverable_verified_credential(backend: Backend) {
    let Some(app) = passkey_app(backend).await else {
        return;
    };
    let login = app.browser().get("/login").await;
    assert!(login.shows("Sign in with a passkey"));
    let mut b = app.signed_up("pk@example.com").await;
    let page = b.get(SECURITY).await;
    assert!(page.shows("Add a passkey"));
    let (status, options) = json_post(
        &b,
        "/settings/account/security/passkeys/options",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{options}");
    let pk = &options["publicKey"];
    assert_eq!(pk["rp"]["id"], "localhost");
    assert_eq!(pk["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
    // A forged answer is refused and nothing is registered.
    let forged = serde_json::json!({
        "name": "Forged",
        "credential": {
            "id": "AAAA", "rawId": "AAAA", "type": "public-key",
            "response": { "attestationObject": "AAAA", "clientDataJSON": "AAAA" },
            "extensions": {}
        }
    });
    let (status, err) = json_post(&b, "/settings/account/security/passkeys", forged.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["code"], "passkey_refused");
    // The ceremony was used up.
    let (status, err) = json_post(&b, "/settings/account/security/passkeys", forged).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    let id = user_id(&app, "pk@example.com").await;
    assert!(app.store.passkeys(&id).await.unwrap().is_empty());

    // Adding a passkey needs a recent sign-in too: the script is sent to confirm.
    app.clock.advance(Duration::minutes(16));
    b.get(SECURITY).await;
    let (status, err) = json_post(
        &b,
        "/settings/account/security/passkeys/options",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["error"]["code"], "reauthentication_required");
    assert!(
        err["error"]["confirm"]
            .as_str()
            .unwrap()
            .starts_with("/settings/account/confirm")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkey_options_ask_for_a_discoverable_verified_credential_sqlite() {
    passkey_options_ask_for_a_discoverable_verified_credential(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkey_options_ask_for_a_discoverable_verified_credential_postgres() {
    passkey_options_ask_for_a_discoverable_verified_credential(Backend::Postgres).await;
}

async fn passkey_sign_in_refuses_unknown_credentials(backend: Backend) {
    let Some(app) = passkey_app(backend).await else {
        return;
    };
    let mut b = app.browser();
    b.get("/login").await;
    let (status, options) = json_post(&b, "/login/passkey/options", serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(options["publicKey"]["userVerification"], "required");
    assert!(options.get("mediation").is_none(), "a button, not autofill");
    let unknown = serde_json::json!({ "credential": {
        "id": "AAAA", "rawId": "AAAA", "type": "public-key",
        "response": {
            "authenticatorData": "AAAA", "clientDataJSON": "AAAA", "signature": "AAAA",
            "userHandle": "AAAAAAAAAAAAAAAAAAAAAA"
        },
        "extensions": {}
    }});
    let (status, err) = json_post(&b, "/login/passkey", unknown.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    assert_eq!(err["error"]["code"], "passkey_refused");
    assert!(
        b.get("/settings/api-keys")
            .await
            .location()
            .starts_with("/login")
    );
    // Without a ceremony started first.
    let (status, _) = json_post(&b, "/login/passkey", unknown).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkey_sign_in_refuses_unknown_credentials_sqlite() {
    passkey_sign_in_refuses_unknown_credentials(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkey_sign_in_refuses_unknown_credentials_postgres() {
    passkey_sign_in_refuses_unknown_credentials(Backend::Postgres).await;
}

async fn passkeys_are_not_offered_at_an_ip_address(app: TestApp) {
    assert!(
        !app.browser()
            .get("/login")
            .await
            .shows("Sign in with a passkey")
    );
    let mut b = app.signed_up("nopk@example.com").await;
    assert!(
        b.get(SECURITY)
            .await
            .shows("Passkeys are not available on this Keyward")
    );
    let (status, err) = json_post(
        &b,
        "/settings/account/security/passkeys/options",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["error"]["code"], "passkeys_unavailable");
}
both!(passkeys_are_not_offered_at_an_ip_address);

async fn sso_sign_ins_are_left_to_the_provider(backend: Backend) {
    let Some(s) = crate::sso::setup(backend, |_, _| {}).await else {
        return;
    };
    let (mut admin, _) = crate::sso::admin_with_connection(&s, &[]).await;
    enrol_totp(&s.app, &mut admin).await;
    let res = require_policy(&mut admin, "true").await;
    assert_eq!(res.location(), "/settings/members");
    assert!(admin.get("/settings/members").await.shows("Required."));
    // Bob joins and signs in through the organization's SSO: no second step asked, and
    // the organization's pages open without one.
    let mut bob = s.app.browser();
    let landed = crate::sso::sso_sign_in(&mut bob, &s.idp, "bob@corp.test", "bob").await;
    assert_eq!(landed.location(), "/settings/api-keys");
    let keys = bob.get("/settings/api-keys").await;
    assert_eq!(keys.status, StatusCode::OK, "{}", keys.location());
    assert!(keys.shows("Corp"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_sign_ins_are_left_to_the_provider_sqlite() {
    sso_sign_ins_are_left_to_the_provider(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_sign_ins_are_left_to_the_provider_postgres() {
    sso_sign_ins_are_left_to_the_provider(Backend::Postgres).await;
}

/// A software authenticator (webauthn-authenticator-rs) standing in for the browser. It
/// keeps no discoverable credentials, so the options' resident-key request is dropped
/// for it (the browser journey covers the passkey-only sign-in).
struct SoftAuthenticator {
    inner: webauthn_authenticator_rs::softpasskey::SoftPasskey,
    origin: webauthn_rs::prelude::Url,
}

impl SoftAuthenticator {
    fn new(app: &TestApp) -> Self {
        Self {
            // `true`: it asserts user verification (a PIN or fingerprint check).
            inner: webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true),
            origin: app.state.config.base_url.parse().unwrap(),
        }
    }

    fn register(&mut self, mut options: serde_json::Value) -> serde_json::Value {
        use webauthn_authenticator_rs::WebauthnAuthenticator;
        let sel = options["publicKey"]["authenticatorSelection"]
            .as_object_mut()
            .unwrap();
        sel.insert("residentKey".into(), "discouraged".into());
        sel.insert("requireResidentKey".into(), false.into());
        let options = serde_json::from_value(options).unwrap();
        let cred = self
            .inner
            .do_registration(self.origin.clone(), options)
            .unwrap();
        serde_json::to_value(cred).unwrap()
    }

    fn assert(&mut self, options: serde_json::Value) -> serde_json::Value {
        use webauthn_authenticator_rs::WebauthnAuthenticator;
        let options = serde_json::from_value(options).unwrap();
        let cred = self
            .inner
            .do_authentication(self.origin.clone(), options)
            .unwrap();
        serde_json::to_value(cred).unwrap()
    }
}

async fn a_passkey_is_a_second_step(backend: Backend) {
    let Some(app) = passkey_app(backend).await else {
        return;
    };
    let mut device = SoftAuthenticator::new(&app);
    let mut b = app.signed_up("soft@example.com").await;
    b.get(SECURITY).await;
    let (_, options) = json_post(
        &b,
        "/settings/account/security/passkeys/options",
        serde_json::json!({}),
    )
    .await;
    let credential = device.register(options);
    let (status, done) = json_post(
        &b,
        "/settings/account/security/passkeys",
        serde_json::json!({ "name": "Soft key", "credential": credential }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(
        done["redirect"], "/settings/account/security/recovery-codes",
        "the first factor comes with recovery codes"
    );
    let page = b.get(SECURITY).await;
    assert!(page.shows("Soft key"));
    let id = user_id(&app, "soft@example.com").await;
    assert!(app.store.has_second_factor(&id).await.unwrap());

    // Password, then the passkey.
    let (mut c, _, location) = password_step(&app, "soft@example.com").await;
    assert_eq!(location, "/login/two-step");
    let (status, options) =
        json_post(&c, "/login/two-step/passkey/options", serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK, "{options}");
    let assertion = device.assert(options);
    let (status, done) = json_post(
        &c,
        "/login/two-step/passkey",
        serde_json::json!({ "credential": assertion.clone() }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["redirect"], "/settings/api-keys");
    assert_eq!(c.get("/settings/api-keys").await.status, StatusCode::OK);
    let events = app.audit_events().await;
    let (_, signed_in) = events
        .iter()
        .rev()
        .find(|(a, _)| a == "auth.signed_in")
        .unwrap();
    assert_eq!(signed_in["method"], "password+passkey");
    assert!(
        app.store.passkeys(&id).await.unwrap()[0]
            .last_used_at
            .is_some()
    );

    // A captured answer does not work again (each ceremony has its own challenge).
    let (mut d, _, _) = password_step(&app, "soft@example.com").await;
    json_post(&d, "/login/two-step/passkey/options", serde_json::json!({})).await;
    let (status, err) = json_post(
        &d,
        "/login/two-step/passkey",
        serde_json::json!({ "credential": assertion }),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    assert!(
        d.get("/settings/api-keys")
            .await
            .location()
            .starts_with("/login")
    );

    // Step-up with the passkey, then remove it.
    app.clock.advance(Duration::minutes(16));
    c.get(SECURITY).await;
    let row = app.store.passkeys(&id).await.unwrap().remove(0);
    let remove = format!("/settings/account/security/passkeys/{}/remove", row.id);
    let res = c.post(&remove, &[]).await;
    assert!(res.location().starts_with("/settings/account/confirm"));
    let confirm = c.get(res.location()).await;
    assert!(confirm.shows("Confirm with a passkey"));
    let (_, options) = json_post(
        &c,
        "/settings/account/confirm/passkey/options",
        serde_json::json!({}),
    )
    .await;
    let (status, done) = json_post(
        &c,
        "/settings/account/confirm/passkey",
        serde_json::json!({ "credential": device.assert(options), "next": SECURITY }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["redirect"], SECURITY);
    c.get(SECURITY).await;
    assert_eq!(c.post(&remove, &[]).await.location(), SECURITY);
    assert!(!app.store.has_second_factor(&id).await.unwrap());
    assert!(
        app.audit_events()
            .await
            .iter()
            .any(|(a, d)| a == "account.passkey_removed" && d["passkey"] == "Soft key")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_is_a_second_step_sqlite() {
    a_passkey_is_a_second_step(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_is_a_second_step_postgres() {
    a_passkey_is_a_second_step(Backend::Postgres).await;
}

/// Only the organization's own SSO connection vouches for a sign-in under its two-step
/// policy: a member who signed in through an operator-wide provider (a social login, say)
/// is sent to enrol like a password sign-in.
async fn operator_provider_sign_ins_meet_the_policy(backend: Backend) {
    let Some(s) = crate::sso::setup(backend, |c, issuer| {
        c.sso_providers = vec![crate::sso::operator_provider(issuer)];
    })
    .await
    else {
        return;
    };
    s.app.state.check_sso_providers().await.unwrap();
    let (mut admin, _) = crate::sso::admin_with_connection(&s, &[]).await;
    enrol_totp(&s.app, &mut admin).await;
    require_policy(&mut admin, "true").await;
    admin.get("/settings/members").await;
    let org = admin.org.clone().unwrap();

    let mut erin = s.app.browser();
    erin.get("/login").await;
    let res = erin.post("/sso/start", &[("provider", "test-idp")]).await;
    let cb =
        crate::sso::through_idp(&mut erin, &s.idp, &crate::sso::to_provider(&res), "erin").await;
    assert_eq!(erin.get_abs(&cb).await.status, StatusCode::SEE_OTHER);
    let erin_id = user_id(&s.app, "erin@mail.test").await;
    s.app
        .raw_execute(&format!(
            "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ('{org}', '{erin_id}', 'developer', {})",
            now(&s.app)
        ))
        .await
        .unwrap();
    erin.get("/settings/api-keys").await;
    erin.post("/orgs/switch", &[("org_id", &org)]).await;
    let page = erin.get("/settings/api-keys").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), SECURITY);
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_provider_sign_ins_meet_the_policy_sqlite() {
    operator_provider_sign_ins_meet_the_policy(Backend::Sqlite).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_provider_sign_ins_meet_the_policy_postgres() {
    operator_provider_sign_ins_meet_the_policy(Backend::Postgres).await;
}

// ------------------------------------------------------------------ shorter passwords

/// Ten characters: enough with a second factor (8), not alone (15).
const SHORT_PASSWORD: &str = "Plum-tree9";

async fn change_password(b: &mut Browser, current: &str, new: &str) -> crate::helpers::Page {
    b.get("/settings/account/password").await;
    b.post(
        "/settings/account/password",
        &[("current_password", current), ("new_password", new)],
    )
    .await
}

async fn a_second_factor_allows_a_shorter_password(app: TestApp) {
    let mut b = app.signed_up("shorter@example.com").await;
    let page = b.get("/settings/account/password").await;
    assert!(page.body.contains("From 15 to"), "{}", page.body);
    assert!(
        page.body.contains("(8 are enough once"),
        "the page says why"
    );
    let alone = change_password(&mut b, PASSWORD, SHORT_PASSWORD).await;
    assert_eq!(alone.status, StatusCode::BAD_REQUEST);
    assert!(alone.body.contains("at least 15"), "{}", alone.body);

    let (secret, _) = enrol_totp(&app, &mut b).await;
    let page = b.get("/settings/account/password").await;
    assert!(page.body.contains("From 8 to"), "{}", page.body);
    let too_short = change_password(&mut b, PASSWORD, "Plum-9x").await;
    assert_eq!(too_short.status, StatusCode::BAD_REQUEST);
    assert!(too_short.body.contains("at least 8"), "{}", too_short.body);
    let changed = change_password(&mut b, PASSWORD, SHORT_PASSWORD).await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);

    // The last factor cannot go while the password needs it: nothing is removed.
    let id = user_id(&app, "shorter@example.com").await;
    b.get(SECURITY).await;
    let refused = b.post("/settings/account/security/totp/remove", &[]).await;
    assert_eq!(refused.location(), SECURITY);
    let page = b.get(SECURITY).await;
    assert!(
        page.body.contains("Choose a longer password first"),
        "{}",
        page.body
    );
    assert!(app.store.has_second_factor(&id).await.unwrap());
    assert_eq!(app.store.recovery_codes_left(&id).await.unwrap(), 10);
    assert!(
        !app.audit_events()
            .await
            .iter()
            .any(|(a, _)| a == "account.totp_removed")
    );
    // Signing in still takes both steps.
    next_step(&app);
    let mut c = app.browser();
    assert_eq!(
        c.sign_in("shorter@example.com", SHORT_PASSWORD)
            .await
            .location(),
        "/login/two-step"
    );
    c.get("/login/two-step").await;
    let done = c
        .post("/login/two-step", &[("code", &code_at(&secret, now(&app)))])
        .await;
    assert_eq!(done.location(), "/settings/api-keys");

    // With a long password again, the factor can go.
    let long = change_password(&mut b, SHORT_PASSWORD, "a long enough passphrase again").await;
    assert_eq!(long.status, StatusCode::SEE_OTHER, "{}", long.body);
    b.get(SECURITY).await;
    let removed = b.post("/settings/account/security/totp/remove", &[]).await;
    assert_eq!(removed.location(), SECURITY);
    assert!(!app.store.has_second_factor(&id).await.unwrap());
}
both!(a_second_factor_allows_a_shorter_password);

async fn a_reset_allows_a_shorter_password_only_with_a_second_factor(backend: Backend) {
    let (sink, url) = SmtpSink::start().await;
    let Some(app) = TestApp::spawn_with(backend, |c| c.smtp_url = Some(url.clone())).await else {
        return;
    };
    async fn reset_link(
        app: &TestApp,
        sink: &SmtpSink,
        b: &mut Browser,
        email: &str,
        n: usize,
    ) -> String {
        b.get("/forgot-password").await;
        b.post("/forgot-password", &[("email", email)]).await;
        let mail = sink.wait_for(email, n).await;
        link(&mail.data, &format!("{}/reset-password/", app.base))
            .trim_start_matches(&app.base)
            .to_string()
    }
    // Without a factor: 15.
    app.signed_up("plainreset@example.com").await;
    let mut b = app.browser();
    let path = reset_link(&app, &sink, &mut b, "plainreset@example.com", 2).await;
    let page = b.get(&path).await;
    assert!(
        page.body.contains("At least 15 characters"),
        "{}",
        page.body
    );
    let refused = b.post(&path, &[("password", SHORT_PASSWORD)]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("at least 15"), "{}", refused.body);

    // With one: 8, and the factor is still asked for.
    let (secret, _) = with_totp(&app, "factorreset@example.com").await;
    let mut b = app.browser();
    let path = reset_link(&app, &sink, &mut b, "factorreset@example.com", 2).await;
    let page = b.get(&path).await;
    assert!(page.body.contains("At least 8 characters"), "{}", page.body);
    let done = b.post(&path, &[("password", SHORT_PASSWORD)]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    b.get("/login").await;
    let signin = b
        .post(
            "/login",
            &[
                ("email", "factorreset@example.com"),
                ("password", SHORT_PASSWORD),
            ],
        )
        .await;
    assert_eq!(signin.location(), "/login/two-step");
    b.get("/login/two-step").await;
    let done = b
        .post("/login/two-step", &[("code", &code_at(&secret, now(&app)))])
        .await;
    assert_eq!(done.location(), "/settings/api-keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_allows_a_shorter_password_only_with_a_second_factor_sqlite() {
    a_reset_allows_a_shorter_password_only_with_a_second_factor(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_allows_a_shorter_password_only_with_a_second_factor_postgres() {
    a_reset_allows_a_shorter_password_only_with_a_second_factor(Backend::Postgres).await;
}
