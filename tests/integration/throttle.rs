//! Brute-force defence on the dashboard's front door (issue 11 §1–2; SECURITY.md B.8–B.12,
//! T4, T5): the per-account pause and disable, device cookies, per-source budgets, the
//! trusted-proxy address, coalesced audit rows — each with the production budgets
//! (`source_budget_scale = 1`), on both backends, with the injected clock.

use keyward::clock::Clock;
use reqwest::StatusCode;
use time::Duration;

use crate::helpers::{Backend, Browser, PASSWORD, Page, TestApp};

/// `name::sqlite` and `name::postgres`, each with the production per-source budgets.
macro_rules! throttled {
    ($name:ident) => {
        throttled!($name, |_c| {});
    };
    ($name:ident, $tweak:expr) => {
        mod $name {
            use crate::helpers::Backend;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(app) = super::spawn(Backend::Sqlite, $tweak).await {
                    super::$name(app).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) = super::spawn(Backend::Postgres, $tweak).await {
                    super::$name(app).await;
                }
            }
        }
    };
}

async fn spawn(
    backend: Backend,
    tweak: impl FnOnce(&mut keyward::config::Config),
) -> Option<TestApp> {
    TestApp::spawn_with(backend, |c| {
        c.source_budget_scale = 1.0;
        tweak(c);
    })
    .await
}

const WRONG: &str = "not the right password at all";

/// An account, signed out, whose browser never signed in with a password.
async fn account(app: &TestApp, email: &str) {
    let mut b = app.signed_up(email).await;
    b.get("/settings/api-keys").await;
    assert_eq!(b.post("/logout", &[]).await.status, StatusCode::SEE_OTHER);
}

/// A sign-in attempt from a fresh browser (no device cookie), coming from `ip` through a
/// trusted proxy when the test configured one.
async fn attempt_from(app: &TestApp, ip: &str, email: &str, password: &str) -> Page {
    let mut b = app.browser();
    attempt(&mut b, ip, email, password).await
}

async fn attempt(b: &mut Browser, ip: &str, email: &str, password: &str) -> Page {
    b.get("/login").await;
    let csrf = b.csrf.clone().unwrap_or_default();
    let res = b
        .post_raw(
            "/login",
            &[("csrf", &csrf), ("email", email), ("password", password)],
            &[("x-real-ip", ip), ("x-forwarded-for", ip)],
        )
        .await;
    if res.status == StatusCode::SEE_OTHER {
        // As a browser would: the landing page (and the new session's CSRF token).
        let to = res.location().to_string();
        b.get(&to).await;
    }
    res
}

fn signed_in(page: &Page) -> bool {
    page.status == StatusCode::SEE_OTHER
}

async fn user(app: &TestApp, email: &str) -> keyward::store::User {
    app.store.user_by_email(email).await.unwrap().unwrap()
}

/// Failures are counted in the background; the next attempt on the account waits for
/// them, a test reading the store directly waits here.
async fn settled(app: &TestApp, email: &str, failures: i64) -> keyward::store::User {
    for _ in 0..200 {
        let u = user(app, email).await;
        if u.failed_logins == failures {
            return u;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "failed_logins never reached {failures} (is {})",
        user(app, email).await.failed_logins
    );
}

/// Strips what legitimately differs between two sign-in answers.
fn normalized(page: &Page, email: &str) -> String {
    regex::Regex::new(r#"name="csrf" value="[^"]+""#)
        .unwrap()
        .replace_all(&page.body, "")
        .replace(email, "EMAIL")
}

async fn five_free_failures_then_a_pause_even_for_the_right_password(app: TestApp) {
    account(&app, "pat@example.com").await;
    for _ in 0..6 {
        let page = attempt_from(&app, "198.51.100.1", "pat@example.com", WRONG).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    let u = settled(&app, "pat@example.com", 6).await;
    assert_eq!(u.locked_until, Some(app.clock.unix() + 30));
    // During the pause the right password is refused exactly like a wrong one.
    let paused = attempt_from(&app, "198.51.100.1", "pat@example.com", PASSWORD).await;
    let wrong = attempt_from(&app, "198.51.100.1", "pat@example.com", WRONG).await;
    assert_eq!(paused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        normalized(&paused, "pat@example.com"),
        normalized(&wrong, "pat@example.com")
    );
    // Attempts during the pause are not guesses: the count stays.
    assert_eq!(settled(&app, "pat@example.com", 6).await.failed_logins, 6);
    app.clock.advance(Duration::seconds(30));
    let ok = attempt_from(&app, "198.51.100.1", "pat@example.com", PASSWORD).await;
    assert!(signed_in(&ok), "{}", ok.body);
    let u = user(&app, "pat@example.com").await;
    assert_eq!(
        (u.failed_logins, u.locked_until),
        (0, None),
        "a success resets"
    );
}
throttled!(five_free_failures_then_a_pause_even_for_the_right_password);

async fn the_pause_doubles_with_each_further_failure(app: TestApp) {
    account(&app, "dbl@example.com").await;
    for _ in 0..6 {
        attempt_from(&app, "198.51.100.2", "dbl@example.com", WRONG).await;
    }
    settled(&app, "dbl@example.com", 6).await;
    app.clock.advance(Duration::seconds(30));
    attempt_from(&app, "198.51.100.2", "dbl@example.com", WRONG).await;
    let u = settled(&app, "dbl@example.com", 7).await;
    assert_eq!(u.locked_until, Some(app.clock.unix() + 60));
    app.clock.advance(Duration::seconds(59));
    let early = attempt_from(&app, "198.51.100.2", "dbl@example.com", PASSWORD).await;
    assert!(!signed_in(&early));
    app.clock.advance(Duration::seconds(1));
    let ok = attempt_from(&app, "198.51.100.2", "dbl@example.com", PASSWORD).await;
    assert!(signed_in(&ok), "{}", ok.body);
}
throttled!(the_pause_doubles_with_each_further_failure);

/// SECURITY.md B.8 / T4: 100 wrong passwords from 100 addresses, then the right one from a
/// new browser: refused until the password is reset. `X-Forwarded-For` is not believed
/// without a configured proxy header, and rotating it changes nothing either way.
async fn a_hundred_failures_disable_the_password_until_reset(app: TestApp) {
    account(&app, "dis@example.com").await;
    for i in 0..100 {
        let ip = format!("198.51.{}.{}", 100 + i / 50, i % 50 + 1);
        let page = attempt_from(&app, &ip, "dis@example.com", WRONG).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        settled(&app, "dis@example.com", i + 1).await;
        // Wait out the pause (and refill the source budget).
        app.clock.advance(Duration::hours(1));
    }
    let refused = attempt_from(&app, "203.0.113.9", "dis@example.com", PASSWORD).await;
    assert!(!signed_in(&refused));
    app.clock.advance(Duration::days(3));
    let still = attempt_from(&app, "203.0.113.9", "dis@example.com", PASSWORD).await;
    assert!(!signed_in(&still), "disabled, not paused");
    let events = app.audit_events().await;
    assert_eq!(
        events
            .iter()
            .filter(|(a, _)| a == "auth.password_disabled")
            .count(),
        1
    );

    // A password reset brings it back.
    let u = user(&app, "dis@example.com").await;
    let (token, hash) = keyward::members::new_link_token().unwrap();
    let now = app.clock.unix();
    app.store
        .create_password_reset(&u.id, &hash, now, now + 1800)
        .await
        .unwrap();
    let mut b = app.browser();
    b.get(&format!("/reset-password/{token}")).await;
    let reset = b
        .post(
            &format!("/reset-password/{token}"),
            &[("password", "a brand new pass phrase 77")],
        )
        .await;
    assert_eq!(reset.status, StatusCode::SEE_OTHER, "{}", reset.body);
    let ok = attempt_from(
        &app,
        "203.0.113.9",
        "dis@example.com",
        "a brand new pass phrase 77",
    )
    .await;
    assert!(signed_in(&ok), "{}", ok.body);
}
throttled!(a_hundred_failures_disable_the_password_until_reset);

/// Lockout-DoS: a browser that signed in before keeps its own budget for the account.
async fn a_browser_that_signed_in_before_is_not_locked_out(app: TestApp) {
    account(&app, "own@example.com").await;
    let mut mine = app.browser();
    assert!(signed_in(
        &attempt(&mut mine, "192.0.2.10", "own@example.com", PASSWORD).await
    ));
    assert_eq!(
        mine.post("/logout", &[]).await.status,
        StatusCode::SEE_OTHER
    );

    // An attacker exhausts the account from elsewhere.
    for i in 0..100 {
        attempt_from(&app, "198.51.100.66", "own@example.com", WRONG).await;
        settled(&app, "own@example.com", i + 1).await;
        app.clock.advance(Duration::hours(1));
    }
    assert!(!signed_in(
        &attempt_from(&app, "192.0.2.10", "own@example.com", PASSWORD).await
    ));
    // My browser still signs in (and its own typos count only against it).
    attempt(&mut mine, "192.0.2.10", "own@example.com", WRONG).await;
    let ok = attempt(&mut mine, "192.0.2.10", "own@example.com", PASSWORD).await;
    assert!(signed_in(&ok), "{}", ok.body);
    // …without re-enabling the password for everyone else.
    assert_eq!(user(&app, "own@example.com").await.failed_logins, 100);
}
throttled!(a_browser_that_signed_in_before_is_not_locked_out);

/// A trusted browser's own failures pause it like any other browser.
async fn a_trusted_browser_has_its_own_pause(app: TestApp) {
    account(&app, "typo@example.com").await;
    let mut mine = app.browser();
    attempt(&mut mine, "192.0.2.11", "typo@example.com", PASSWORD).await;
    assert_eq!(
        mine.post("/logout", &[]).await.status,
        StatusCode::SEE_OTHER
    );
    for _ in 0..6 {
        attempt(&mut mine, "192.0.2.11", "typo@example.com", WRONG).await;
    }
    assert!(!signed_in(
        &attempt(&mut mine, "192.0.2.11", "typo@example.com", PASSWORD).await
    ));
    // The account itself was not touched: a new browser signs in.
    assert_eq!(user(&app, "typo@example.com").await.failed_logins, 0);
    assert!(signed_in(
        &attempt_from(&app, "192.0.2.12", "typo@example.com", PASSWORD).await
    ));
}
throttled!(a_trusted_browser_has_its_own_pause);

/// T5: unknown email, wrong password, paused and disabled accounts: one status, one body.
async fn every_refusal_looks_the_same(app: TestApp) {
    account(&app, "same@example.com").await;
    let wrong = attempt_from(&app, "198.51.100.3", "same@example.com", WRONG).await;
    let unknown = attempt_from(&app, "198.51.100.3", "nobody@example.com", WRONG).await;
    for _ in 0..6 {
        attempt_from(&app, "198.51.100.3", "same@example.com", WRONG).await;
    }
    let paused = attempt_from(&app, "198.51.100.3", "same@example.com", PASSWORD).await;
    let reference = normalized(&wrong, "same@example.com");
    for (page, email) in [
        (&unknown, "nobody@example.com"),
        (&paused, "same@example.com"),
    ] {
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        assert_eq!(normalized(page, email), reference);
    }
    assert!(
        wrong
            .body
            .contains("try again later, or reset your password")
    );
}
throttled!(every_refusal_looks_the_same);

/// Spraying: one source trying many accounts runs out of its budget (20 at once, then one
/// every 30 s), whatever `X-Forwarded-For` says; another source is unaffected.
async fn one_source_cannot_spray_many_accounts(app: TestApp) {
    for i in 0..20 {
        let page = attempt_from(&app, "198.51.100.4", &format!("u{i}@example.com"), WRONG).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let mut b = app.browser();
    b.get("/login").await;
    let csrf = b.csrf.clone().unwrap_or_default();
    let spent = b
        .post_raw(
            "/login",
            &[
                ("csrf", &csrf),
                ("email", "x@example.com"),
                ("password", WRONG),
            ],
            &[("x-forwarded-for", "203.0.113.77")],
        )
        .await;
    assert_eq!(spent.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(spent.header("retry-after"), "30");
    assert!(spent.body.contains("Too many attempts from your network"));
    app.clock.advance(Duration::seconds(30));
    let again = attempt_from(&app, "198.51.100.4", "y@example.com", WRONG).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
}
throttled!(one_source_cannot_spray_many_accounts);

/// Behind a trusted proxy, the budget follows the proxy's header (the rightmost value);
/// IPv6 addresses of one /64 share a budget.
async fn budgets_follow_the_trusted_proxy_header(app: TestApp) {
    for i in 0..20 {
        attempt_from(&app, "2001:db8:1:2::1", &format!("v{i}@example.com"), WRONG).await;
    }
    let same_64 = attempt_from(&app, "2001:db8:1:2:ffff::9", "w@example.com", WRONG).await;
    assert_eq!(same_64.status, StatusCode::TOO_MANY_REQUESTS);
    let other = attempt_from(&app, "2001:db8:1:3::1", "w@example.com", WRONG).await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    // A client prepending its own value does not escape: the proxy's entry is the last.
    let spoofed = attempt_from(&app, "203.0.113.1, 2001:db8:1:2::5", "w@example.com", WRONG).await;
    assert_eq!(spoofed.status, StatusCode::TOO_MANY_REQUESTS);
}
throttled!(budgets_follow_the_trusted_proxy_header, |c| {
    c.client_ip_header = Some(axum::http::HeaderName::from_static("x-real-ip"));
});

/// Sign-up and password reset have budgets of their own (5 at once per source).
async fn sign_up_and_reset_have_budgets(app: TestApp) {
    let mut b = app.browser();
    b.get("/forgot-password").await;
    for i in 0..5 {
        let page = b
            .post(
                "/forgot-password",
                &[("email", &format!("r{i}@example.com"))],
            )
            .await;
        assert_eq!(page.status, StatusCode::OK);
    }
    let spent = b
        .post("/forgot-password", &[("email", "r9@example.com")])
        .await;
    assert_eq!(spent.status, StatusCode::TOO_MANY_REQUESTS);

    let mut b = app.browser();
    b.get("/signup").await;
    for i in 0..5 {
        b.post(
            "/signup",
            &[("email", &format!("s{i}@example.com")), ("password", "x")],
        )
        .await;
    }
    let spent = b
        .post(
            "/signup",
            &[("email", "s9@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(spent.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        app.store
            .user_by_email("s9@example.com")
            .await
            .unwrap()
            .is_none()
    );
}
throttled!(sign_up_and_reset_have_budgets);

/// An anonymous client cannot flood an organization's log: at most one
/// `auth.sign_in_failed` row per account per 15 minutes, carrying the count.
async fn failed_sign_ins_are_coalesced_in_the_audit_log(app: TestApp) {
    account(&app, "log@example.com").await;
    let failed_rows = |events: Vec<(String, serde_json::Value)>| -> Vec<serde_json::Value> {
        events
            .into_iter()
            .filter(|(a, _)| a == "auth.sign_in_failed")
            .map(|(_, d)| d)
            .collect()
    };
    for _ in 0..6 {
        attempt_from(&app, "198.51.100.5", "log@example.com", WRONG).await;
    }
    settled(&app, "log@example.com", 6).await;
    let rows = failed_rows(app.audit_events().await);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["count"], 1);
    app.clock.advance(Duration::minutes(16));
    attempt_from(&app, "198.51.100.5", "log@example.com", WRONG).await;
    settled(&app, "log@example.com", 7).await;
    let rows = failed_rows(app.audit_events().await);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1]["count"], 6, "the five held back and this one");
    assert_eq!(rows[1]["consecutive"], 7);
    // Failures still held back when the owner signs in are written then, not lost.
    app.clock.advance(Duration::minutes(2));
    attempt_from(&app, "198.51.100.5", "log@example.com", WRONG).await;
    settled(&app, "log@example.com", 8).await;
    app.clock.advance(Duration::hours(1));
    assert!(signed_in(
        &attempt_from(&app, "198.51.100.5", "log@example.com", PASSWORD).await
    ));
    let rows = failed_rows(app.audit_events().await);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[2]["count"], 1);
}
throttled!(failed_sign_ins_are_coalesced_in_the_audit_log);

/// An organization's log shows a member's account events only from the time they joined.
async fn org_logs_show_account_events_from_joining_on(app: TestApp) {
    let mut owner = app.signed_up("own-org@example.com").await;
    account(&app, "late@example.com").await;
    assert!(signed_in(
        &attempt_from(&app, "192.0.2.20", "late@example.com", PASSWORD).await
    ));
    let owner_user = user(&app, "own-org@example.com").await;
    let late = user(&app, "late@example.com").await;
    let orgs = app.store.memberships(&owner_user.id).await.unwrap();
    let org = &orgs[0].org_id;
    app.clock.advance(Duration::minutes(5));
    app.raw_execute(&format!(
        "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ('{org}', '{}', 'viewer', {})",
        late.id,
        app.clock.unix()
    ))
    .await
    .unwrap();
    let page = owner
        .get("/settings/audit-log?actor=late%40example.com")
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page
            .body
            .contains(r#"<span class="mono">auth.signed_in</span>"#),
        "sign-in before joining is not the organization's business"
    );
    app.clock.advance(Duration::minutes(1));
    assert!(signed_in(
        &attempt_from(&app, "192.0.2.20", "late@example.com", PASSWORD).await
    ));
    let page = owner
        .get("/settings/audit-log?actor=late%40example.com")
        .await;
    assert!(
        page.body
            .contains(r#"<span class="mono">auth.signed_in</span>"#),
        "{}",
        page.body
    );
}
throttled!(org_logs_show_account_events_from_joining_on);

/// SECURITY.md B.10 / T5: unknown email, wrong password and paused account do the same
/// work (exactly one argon2 check each; the failure count is written after the answer) and
/// take the same time. Samples are interleaved so that load falls on every class alike.
/// The time bound is 10 % with `KEYWARD_STRICT_TIMING=1` (on a quiet machine, by hand:
/// README) and 50 % otherwise, where the rest of the suite runs in parallel on two cores —
/// still far tighter than the classic leak (no argon2 for an unknown email: ≈ 20×).
async fn refusals_take_the_same_time(app: TestApp) {
    let known: Vec<String> = (0..10).map(|i| format!("t{i}@example.com")).collect();
    for email in &known {
        account(&app, email).await;
    }
    account(&app, "paused@example.com").await;
    for _ in 0..6 {
        attempt_from(&app, "198.51.100.7", "paused@example.com", WRONG).await;
    }
    settled(&app, "paused@example.com", 6).await;
    let mut b = app.browser();
    b.get("/login").await;
    let csrf = b.csrf.clone().unwrap_or_default();
    let timed = |email: String| {
        let (client, url, csrf) = (b.client.clone(), format!("{}/login", b.base), csrf.clone());
        let passwords = app.state.passwords.clone();
        async move {
            let checks = passwords.verifications();
            let started = std::time::Instant::now();
            let res = client
                .post(url)
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("email", &email),
                    ("password", WRONG),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
            res.text().await.unwrap();
            let took = started.elapsed().as_secs_f64();
            assert_eq!(
                passwords.verifications(),
                checks + 1,
                "one argon2 check for {email}"
            );
            took
        }
    };
    let (mut unknown, mut wrong, mut paused) = (vec![], vec![], vec![]);
    for i in 0..60 {
        // Each class goes first, second and third in turn: a failure's background write
        // slows whatever request comes next, whichever class that is.
        for class in (0..3).map(|k| (k + i) % 3) {
            match class {
                0 => unknown.push(timed(format!("nobody{i}@example.com")).await),
                1 => wrong.push(timed(known[i % known.len()].clone()).await),
                _ => paused.push(timed("paused@example.com".into()).await),
            }
        }
    }
    // The fastest tenth of each class: the machine's load (the rest of the test suite
    // runs in parallel) only ever adds time, so the low end shows the work each path does.
    let low = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 10]
    };
    let (u, w, p) = (low(unknown), low(wrong), low(paused));
    eprintln!(
        "sign-in refusals, 10th percentile: unknown email {:.2} ms, wrong password {:.2} ms, paused {:.2} ms",
        u * 1e3,
        w * 1e3,
        p * 1e3
    );
    let bound = if std::env::var("KEYWARD_STRICT_TIMING").is_ok_and(|v| v == "1") {
        0.10
    } else {
        0.50
    };
    for (name, t) in [("wrong password", w), ("paused", p)] {
        assert!(
            (t / u - 1.0).abs() < bound,
            "{name}: {:.2} ms vs {:.2} ms for an unknown email",
            t * 1e3,
            u * 1e3
        );
    }
}
crate::both!(refusals_take_the_same_time);

/// A device token the account never saw (made up, or another account's) buys nothing:
/// its failures count against the account like any other browser's.
async fn a_made_up_device_token_counts_against_the_account(app: TestApp) {
    account(&app, "fake@example.com").await;
    for i in 0..3 {
        let mut b = app.browser();
        b.get("/login").await;
        let csrf = b.csrf.clone().unwrap_or_default();
        let page = b
            .post_raw(
                "/login",
                &[
                    ("csrf", &csrf),
                    ("email", "fake@example.com"),
                    ("password", WRONG),
                ],
                &[(
                    "cookie",
                    &format!(
                        "keyward_session={}; keyward_device=madeup{i}",
                        b.cookie_value(&app.base)
                    ),
                )],
            )
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    settled(&app, "fake@example.com", 3).await;
}
throttled!(a_made_up_device_token_counts_against_the_account);

/// A page on another site that posts to the sign-in form from its visitors' browsers is
/// refused by the CSRF check, and spends nothing of their address's budget.
async fn cross_site_posts_do_not_spend_the_budget(app: TestApp) {
    let mut b = app.browser();
    b.get("/login").await;
    let csrf = b.csrf.clone().unwrap_or_default();
    for _ in 0..25 {
        let res = b
            .post_raw(
                "/login",
                &[
                    ("csrf", &csrf),
                    ("email", "x@example.com"),
                    ("password", WRONG),
                ],
                &[
                    ("origin", "https://evil.example"),
                    ("sec-fetch-site", "cross-site"),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::FORBIDDEN);
    }
    let mine = attempt_from(&app, "198.51.100.8", "x@example.com", WRONG).await;
    assert_eq!(
        mine.status,
        StatusCode::UNAUTHORIZED,
        "the budget is intact"
    );
}
throttled!(cross_site_posts_do_not_spend_the_budget);

/// Every successful sign-in gives the browser a new device token: one planted in the
/// browser beforehand never becomes trusted.
async fn device_tokens_are_new_at_every_sign_in(app: TestApp) {
    account(&app, "rot@example.com").await;
    let mut b = app.browser();
    b.get("/login").await;
    let csrf = b.csrf.clone().unwrap_or_default();
    let res = b
        .post_raw(
            "/login",
            &[
                ("csrf", &csrf),
                ("email", "rot@example.com"),
                ("password", PASSWORD),
            ],
            &[(
                "cookie",
                &format!(
                    "keyward_session={}; keyward_device=planted-token",
                    b.cookie_value(&app.base)
                ),
            )],
        )
        .await;
    assert!(signed_in(&res), "{}", res.body);
    let issued: Vec<&str> = res
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|c| c.starts_with("keyward_device="))
        .collect();
    assert_eq!(issued.len(), 1);
    assert!(!issued[0].starts_with("keyward_device=planted-token;"));
    let u = user(&app, "rot@example.com").await;
    let planted = keyward::auth::throttle::device_hash("planted-token");
    assert_eq!(
        app.store
            .sign_in_gate(
                &u,
                Some(&planted),
                keyward::auth::throttle::RULES,
                app.clock.unix()
            )
            .await
            .unwrap(),
        keyward::store::SignInGate::Account,
        "the planted token is not trusted"
    );
}
throttled!(device_tokens_are_new_at_every_sign_in);
