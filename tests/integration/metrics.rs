//! `GET /metrics`: Prometheus text, counts that follow known traffic, bounded labels, and
//! the optional bearer token.

use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::json;

use crate::helpers::{Backend, PASSWORD, TestApp};

/// The value of the sample `name{labels}` (labels in the exporter's order), or 0 when the
/// series is not there yet.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

async fn scrape(app: &TestApp) -> String {
    let res = reqwest::get(format!("{}/metrics", app.base)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    res.text().await.unwrap()
}

async fn counts_follow_known_traffic(app: TestApp) {
    let mut b = app.signed_up("metrics@example.com").await;
    let (key_id, key) = b.new_key("scraped").await;
    let before = scrape(&app).await;
    let valid = r#"keyward_verifications_total{door="verify_api",code="VALID"}"#;
    let not_found = r#"keyward_verifications_total{door="verify_api",code="NOT_FOUND"}"#;
    let fwd_valid = r#"keyward_verifications_total{door="forward_auth",code="VALID"}"#;
    let fwd_missing = r#"keyward_verifications_total{door="forward_auth",code="MISSING"}"#;

    for _ in 0..3 {
        let (s, v) = app.verify_api(json!({ "key": key })).await;
        assert_eq!((s, v["code"].as_str()), (StatusCode::OK, Some("VALID")));
    }
    let unknown = format!("{}x", &key[..key.len() - 1]);
    let (_, v) = app.verify_api(json!({ "key": unknown })).await;
    assert_ne!(v["code"], "VALID");
    let client = reqwest::Client::new();
    for auth in [Some(key.as_str()), Some(key.as_str()), None] {
        let mut req = client.get(format!("{}/v1/auth", app.base));
        if let Some(k) = auth {
            req = req.bearer_auth(k);
        }
        req.send().await.unwrap();
    }
    // One failed and one good sign-in.
    let mut other = app.browser();
    other
        .sign_in("metrics@example.com", "not the password")
        .await;
    other.sign_in("metrics@example.com", PASSWORD).await;

    let after = scrape(&app).await;
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(delta(valid), 3.0, "{after}");
    // A wrong checksum is INVALID_FORMAT, an unknown key NOT_FOUND: one of the two.
    assert_eq!(
        delta(not_found)
            + delta(r#"keyward_verifications_total{door="verify_api",code="INVALID_FORMAT"}"#),
        1.0
    );
    assert_eq!(delta(fwd_valid), 2.0);
    assert_eq!(delta(fwd_missing), 1.0);
    assert_eq!(
        delta(r#"keyward_verification_duration_seconds_count{door="forward_auth"}"#),
        3.0
    );
    assert_eq!(
        delta(r#"keyward_sign_ins_total{method="password",outcome="failure"}"#),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(r#"keyward_sign_ins_total{method="password",outcome="success"}"#),
        1.0
    );
    // The cache answered the repeated verifications.
    assert!(delta("keyward_key_cache_hits_total") >= 4.0, "{after}");
    // HTTP requests by route template (the template, not the path), method and status.
    assert_eq!(
        delta(
            r#"http_server_request_duration_seconds_count{http_route="/v1/keys/verify",http_request_method="POST",http_response_status_code="200"}"#
        ),
        4.0,
        "{after}"
    );
    assert!(
        after.contains(r#"http_route="/settings/api-keys/{id}"#)
            || after.contains(r#"http_route="/settings/api-keys""#)
    );
    assert!(after.contains("keyward_build_info{version="));
    assert!(after.contains("keyward_db_pool_connections "));
    assert!(after.contains("keyward_webhook_outbox_pending 0"));
    assert!(after.contains("# HELP keyward_verifications_total"));
    // Bounded labels: no key, key id, organization id or email ever appears.
    let user = app
        .store
        .user_by_email("metrics@example.com")
        .await
        .unwrap()
        .unwrap();
    let orgs = app.store.memberships(&user.id).await.unwrap();
    let mut never = vec![key.clone(), key_id, user.id.clone(), user.email.clone()];
    never.extend(orgs.iter().map(|m| m.org_id.clone()));
    for secret in never {
        assert!(!after.contains(&secret), "{secret} leaked into /metrics");
    }
}
crate::both!(counts_follow_known_traffic);

async fn a_metrics_token_is_required_when_configured(app: TestApp) {
    let url = format!("{}/metrics", app.base);
    let client = reqwest::Client::new();
    let res = client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.text().await.unwrap().contains("KEYWARD_METRICS_TOKEN"));
    let res = client.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = client
        .get(&url)
        .bearer_auth("scrape-me")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("keyward_build_info"));
    // No session cookie is handed out on the way.
    let res = client
        .get(&url)
        .bearer_auth("scrape-me")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("set-cookie").is_none());
}

mod metrics_token {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let app = TestApp::spawn_with(Backend::Sqlite, |c| {
            c.metrics_token = Some(SecretString::from("scrape-me"));
        })
        .await
        .unwrap();
        a_metrics_token_is_required_when_configured(app).await;
    }
}
