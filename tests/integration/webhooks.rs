//! Webhooks against a real HTTP receiver on loopback, and the expiry-notice job, driven
//! with the injected clock.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode as AxumStatus},
    routing::post,
};
use keyward::{AppState, clock::Clock, webhooks};
use reqwest::StatusCode;
use serde_json::Value;

use crate::{
    both,
    helpers::{Browser, PASSWORD, TestApp},
};

/// What the receiver saw: (headers, body).
type Seen = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// An HTTP endpoint that records every request and answers with queued statuses (then 200).
pub struct Receiver {
    pub url: String,
    pub seen: Seen,
    pub answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let seen: Seen = Arc::default();
        let answers: Arc<Mutex<VecDeque<u16>>> = Arc::default();
        let app = Router::new()
            .route(
                "/hook",
                post(
                    |State((seen, answers)): State<(Seen, Arc<Mutex<VecDeque<u16>>>)>,
                     headers: HeaderMap,
                     body: Bytes| async move {
                        seen.lock()
                            .unwrap()
                            .push((headers, String::from_utf8_lossy(&body).into_owned()));
                        let code = answers.lock().unwrap().pop_front().unwrap_or(200);
                        AxumStatus::from_u16(code).unwrap()
                    },
                ),
            )
            .with_state((seen.clone(), answers.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, seen, answers }
    }

    pub fn events(&self) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| serde_json::from_str(b).unwrap())
            .collect()
    }
}

/// Adds an endpoint from Settings → Webhooks; returns (webhook id, signing secret).
pub async fn add_endpoint(b: &mut Browser, url: &str, events: &[&str]) -> (String, String) {
    let page = b.get("/settings/webhooks").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let token = page.form_token();
    let mut fields = vec![("form_token", token.as_str()), ("url", url)];
    for e in events {
        fields.push(("events", e));
    }
    let res = b.post("/settings/webhooks", &fields).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let secret = res
        .capture(r#"id="new-secret">([^<]+)<"#)
        .expect("the secret is shown once");
    let id = res
        .capture(r#"/settings/webhooks/([0-9a-f-]{36})/test"#)
        .expect("the endpoint is listed");
    (id, secret)
}

fn signature_ok(secret: &str, headers: &HeaderMap, body: &str) -> bool {
    let header = headers["keyward-signature"].to_str().unwrap();
    let t: i64 = header
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .unwrap()
        .parse()
        .unwrap();
    header == webhooks::signature(secret, t, body)
}

async fn webhook_deliveries(app: TestApp) {
    let rx = Receiver::start().await;
    let mut admin = app.signed_up("hooks@example.com").await;
    let (hook_id, secret) =
        add_endpoint(&mut admin, &rx.url, &["key.created", "key.revoked"]).await;
    assert!(secret.starts_with("whsec_"));
    // Shown once: not on the page again, not in the database in clear.
    assert!(!admin.get("/settings/webhooks").await.body.contains(&secret));
    assert!(!app.dump_database().await.contains(&secret));

    // The delivery is written with the key, before any dispatcher runs.
    let (key_id, _) = admin.new_key("hooked").await;
    let pending = app.store.deliveries(&hook_id, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].event_type, "key.created");
    assert_eq!(app.state.dispatcher().deliver_due().await.unwrap(), 1);
    {
        let seen = rx.seen.lock().unwrap();
        let (headers, body) = &seen[0];
        assert!(
            signature_ok(&secret, headers, body),
            "signed with the secret"
        );
        assert_eq!(headers["keyward-event"], "key.created");
        assert_eq!(headers["content-type"], "application/json");
        let ev: Value = serde_json::from_str(body).unwrap();
        assert_eq!(ev["type"], "key.created");
        assert_eq!(ev["data"]["target"]["id"], key_id.as_str());
        assert_eq!(ev["data"]["actor"]["email"], "hooks@example.com");
        assert!(!body.contains("kw_live_"), "no key material in events");
    }

    // Not subscribed: nothing queued.
    admin.get(&format!("/settings/api-keys/{key_id}")).await;
    admin
        .post(
            &format!("/settings/api-keys/{key_id}/enabled"),
            &[("enabled", "false")],
        )
        .await;
    assert_eq!(app.store.deliveries(&hook_id, 10).await.unwrap().len(), 1);

    // A failure is retried with backoff: 500 now, delivered 30 s later.
    rx.answers.lock().unwrap().push_back(500);
    admin.get(&format!("/settings/api-keys/{key_id}")).await;
    let res = admin
        .post(&format!("/settings/api-keys/{key_id}/revoke"), &[])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(app.state.dispatcher().deliver_due().await.unwrap(), 1);
    let d = &app.store.deliveries(&hook_id, 10).await.unwrap()[0];
    assert_eq!(
        (d.status.as_str(), d.attempts, d.last_status_code),
        ("pending", 1, Some(500))
    );
    assert_eq!(
        app.state.dispatcher().deliver_due().await.unwrap(),
        0,
        "not due yet"
    );
    app.clock.advance(time::Duration::seconds(31));
    assert_eq!(app.state.dispatcher().deliver_due().await.unwrap(), 1);
    let d = &app.store.deliveries(&hook_id, 10).await.unwrap()[0];
    assert_eq!(
        (d.status.as_str(), d.attempts, d.last_status_code),
        ("delivered", 2, Some(200))
    );
    let page = admin.get("/settings/webhooks").await;
    assert!(page.shows("key.revoked") && page.shows("delivered") && page.shows("HTTP 200"));
    assert_eq!(rx.events().len(), 3);
    let both: Vec<_> = rx.seen.lock().unwrap()[1..]
        .iter()
        .map(|(h, _)| h["keyward-delivery"].clone())
        .collect();
    assert_eq!(both[0], both[1], "a retry carries the same delivery id");

    // "Send test event".
    let res = admin
        .post(&format!("/settings/webhooks/{hook_id}/test"), &[])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(app.state.dispatcher().deliver_due().await.unwrap(), 1);
    assert_eq!(rx.events().last().unwrap()["type"], "webhook.test");

    // Gives up after MAX_ATTEMPTS.
    rx.answers
        .lock()
        .unwrap()
        .extend(std::iter::repeat_n(503, 20));
    admin.get("/settings/webhooks").await;
    admin
        .post(&format!("/settings/webhooks/{hook_id}/test"), &[])
        .await;
    for _ in 0..webhooks::MAX_ATTEMPTS {
        app.clock.advance(time::Duration::hours(7));
        app.state.dispatcher().deliver_due().await.unwrap();
    }
    let d = &app.store.deliveries(&hook_id, 10).await.unwrap()[0];
    assert_eq!(
        (d.status.as_str(), d.attempts),
        ("failed", webhooks::MAX_ATTEMPTS)
    );
    app.clock.advance(time::Duration::hours(7));
    assert_eq!(app.state.dispatcher().deliver_due().await.unwrap(), 0);

    // Another organization's admin cannot touch the endpoint.
    let mut other = app.signed_up("other@example.com").await;
    other.get("/settings/webhooks").await;
    let res = other
        .post(&format!("/settings/webhooks/{hook_id}/delete"), &[])
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);

    // Deleting stops deliveries. (Days have passed: sign in again.)
    admin.sign_in("hooks@example.com", PASSWORD).await;
    admin.get("/settings/webhooks").await;
    let res = admin
        .post(&format!("/settings/webhooks/{hook_id}/delete"), &[])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    admin.new_key("after").await;
    assert_eq!(app.state.dispatcher().deliver_due().await.unwrap(), 0);
    let audit = admin.get("/settings/audit-log").await;
    assert!(audit.shows("Webhook endpoint added") && audit.shows("Webhook endpoint deleted"));
}
both!(webhook_deliveries);

/// A delivery is claimed once, even by two dispatchers at the same moment.
async fn deliveries_are_claimed_once(app: TestApp) {
    let rx = Receiver::start().await;
    let mut admin = app.signed_up("claims@example.com").await;
    add_endpoint(&mut admin, &rx.url, &["key.created"]).await;
    admin.new_key("one").await;
    let now = app.clock.unix();
    let (a, b) = tokio::join!(
        app.store.claim_deliveries(now, 60, 10),
        app.store.claim_deliveries(now, 60, 10)
    );
    assert_eq!(a.unwrap().len() + b.unwrap().len(), 1);
    // The lease ends: it can be claimed again (a node died mid-delivery).
    assert_eq!(
        app.store
            .claim_deliveries(now + 61, 60, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}
both!(deliveries_are_claimed_once);

/// Endpoint URLs: http(s) only, events required, and private addresses refused unless the
/// operator allows them.
async fn endpoint_refusals(_app: TestApp) {
    let app = TestApp::spawn_with(_app.backend, |c| c.allow_private_networks = false)
        .await
        .unwrap();
    let mut admin = app.signed_up("refuse@example.com").await;
    for (url, events, message) in [
        (
            "ftp://example.com/x",
            vec!["key.created"],
            "Only http:// and https://",
        ),
        (
            "not a url",
            vec!["key.created"],
            "Enter the endpoint's full URL",
        ),
        (
            "http://127.0.0.1:9/hook",
            vec!["key.created"],
            "is not a public address",
        ),
        (
            "http://10.0.0.1/hook",
            vec!["key.created"],
            "is not a public address",
        ),
        (
            "https://user:pw@example.com/",
            vec!["key.created"],
            "no credentials",
        ),
        (
            "https://example.com/hook",
            vec![],
            "Choose at least one event",
        ),
        (
            "https://example.com/hook",
            vec!["key.nope"],
            "Unknown event type",
        ),
    ] {
        let page = admin.get("/settings/webhooks").await;
        let token = page.form_token();
        let mut fields = vec![("form_token", token.as_str()), ("url", url)];
        for e in &events {
            fields.push(("events", e));
        }
        let res = admin.post("/settings/webhooks", &fields).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{url}: {}", res.body);
        assert!(res.shows(message), "{url}: {message}: {}", res.body);
    }
    let org = admin.org.clone().unwrap();
    assert!(app.store.webhooks(&org).await.unwrap().is_empty());
    // A viewer cannot open the page.
    let viewer_page = app.browser().get("/settings/webhooks").await;
    assert_eq!(
        viewer_page.status,
        StatusCode::SEE_OTHER,
        "signed out → sign in"
    );
}
both!(endpoint_refusals);

/// Expiry warnings at 7 days and 1 day, then "expired": each once (also after a restart),
/// as an email to the key's creator and a webhook.
async fn expiry_notices(app: TestApp) {
    let rx = Receiver::start().await;
    let mut admin = app.signed_up("expiry@example.com").await;
    let (hook_id, _) = add_endpoint(&mut admin, &rx.url, &["key.expiring", "key.expired"]).await;
    let (key_id, _) = admin.new_key("short-lived").await; // expires in 30 days
    let (never_id, _) = {
        let page = admin
            .create_key(&[
                ("name", "forever"),
                ("environment", "live"),
                ("preset", "Read-only"),
                ("expiry", "never"),
            ])
            .await;
        (page.key_id(), ())
    };
    let run = |state: AppState| async move { state.notices().run().await.unwrap() };

    assert_eq!(run(app.state.clone()).await, 0, "30 days away: nothing yet");
    app.clock
        .advance(time::Duration::days(23) + time::Duration::hours(1));
    assert_eq!(run(app.state.clone()).await, 1, "the 7-day notice");
    assert_eq!(run(app.state.clone()).await, 0, "once");
    // A restarted node (new state, same database and time) does not send it again.
    let restarted = AppState::new(
        keyward::config::Config::for_tests(&app.base, [42u8; 32]),
        app.store.clone(),
        Arc::new(app.clock.clone()) as Arc<dyn Clock>,
    )
    .unwrap();
    assert_eq!(run(restarted.clone()).await, 0);

    app.clock.advance(time::Duration::days(6));
    assert_eq!(run(app.state.clone()).await, 1, "the 1-day notice");
    assert_eq!(run(restarted.clone()).await, 0);
    app.clock.advance(time::Duration::days(1));
    assert_eq!(run(app.state.clone()).await, 1, "expired");
    assert_eq!(run(app.state.clone()).await, 0);

    // Emails to the creator (kept in the outbox without SMTP).
    let mail = app.state.mailer.outbox(20).await.unwrap();
    let subjects: Vec<&str> = mail
        .iter()
        .filter(|m| m.recipient == "expiry@example.com" && m.subject.starts_with("API key"))
        .map(|m| m.subject.as_str())
        .collect();
    assert!(
        subjects.contains(&"API key “short-lived” expires within 7 days"),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&"API key “short-lived” expires within a day"),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&"API key “short-lived” has expired"),
        "{subjects:?}"
    );
    assert_eq!(subjects.len(), 3);
    assert!(mail.iter().all(|m| !m.subject.contains("forever")));

    // Webhooks: three events for that key, none for the key that never expires.
    assert_eq!(app.state.dispatcher().deliver_due().await.unwrap(), 3);
    let events = rx.events();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["data"]["details"]["notice"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("key.expiring", "expiring_7d"),
            ("key.expiring", "expiring_1d"),
            ("key.expired", "expired")
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e["data"]["target"]["id"] == key_id.as_str())
    );
    assert!(
        events
            .iter()
            .all(|e| e["data"]["target"]["id"] != never_id.as_str())
    );
    assert_eq!(app.store.deliveries(&hook_id, 10).await.unwrap().len(), 3);
    admin.sign_in("expiry@example.com", PASSWORD).await;
    let audit = admin.get("/settings/audit-log").await;
    assert!(audit.shows("Key expiring soon") && audit.shows("Key expired"));
}
both!(expiry_notices);

/// A key created with less than a day left gets only the 1-day notice.
async fn urgent_key_gets_one_notice(app: TestApp) {
    let mut admin = app.signed_up("urgent@example.com").await;
    admin.new_key("soon").await;
    app.clock
        .advance(time::Duration::days(29) + time::Duration::hours(12));
    assert_eq!(app.state.notices().run().await.unwrap(), 1);
    let mail = app.state.mailer.outbox(10).await.unwrap();
    let subjects: Vec<&str> = mail
        .iter()
        .map(|m| m.subject.as_str())
        .filter(|s| s.contains("soon"))
        .collect();
    assert_eq!(subjects, vec!["API key “soon” expires within a day"]);
}
both!(urgent_key_gets_one_notice);
