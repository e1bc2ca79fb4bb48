//! Credits: spent by every verification door, exact under concurrency and across nodes,
//! refilled by the clock, changed through the management API and the dashboard (audited,
//! never raised by a key acting on itself), announced once by webhooks.

use keyward::clock::Clock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::Duration;

use crate::{
    api::{allow_key_minting, call, dashboard_key},
    both,
    helpers::{Browser, TestApp},
    webhooks::{Receiver, add_endpoint},
};

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

/// An admin, a management key (`keys:write`) and a `read` key with these credits and
/// extra dashboard fields (limits). Returns (admin, management key, key id, key).
async fn setup(
    app: &TestApp,
    email: &str,
    credits: Value,
    extra: &[(&str, &str)],
) -> (Browser, String, String, String) {
    let mut admin = app.signed_up(email).await;
    let (_, mgmt) = dashboard_key(&mut admin, "automation", &["read", "keys:write"], &[]).await;
    let (id, key) = dashboard_key(&mut admin, "metered", &["read"], extra).await;
    let (s, v) = call(
        app,
        &mgmt,
        Method::PATCH,
        &format!("/api/v1/keys/{id}"),
        // Never expiring, so that the clock can run for months.
        Some(json!({ "credits": credits, "expires_at": null })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    (admin, mgmt, id, key)
}

async fn remaining(app: &TestApp, mgmt: &str, id: &str) -> Value {
    let (s, v) = call(app, mgmt, Method::GET, &format!("/api/v1/keys/{id}"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["data"]["credits"]["remaining"].clone()
}

async fn change(app: &TestApp, key: &str, id: &str, op: &str, value: i64) -> (StatusCode, Value) {
    call(
        app,
        key,
        Method::POST,
        &format!("/api/v1/keys/{id}/credits"),
        Some(json!({ "op": op, "value": value })),
    )
    .await
}

async fn a_verification_costs_one_credit_unless_told(app: TestApp) {
    let (_, mgmt, id, key) = setup(&app, "cost@example.com", json!({ "remaining": 3 }), &[]).await;
    let (_, v) = app.verify_api(json!({ "key": key })).await;
    assert_eq!((code(&v), &v["credits"]["remaining"]), ("VALID", &json!(2)));
    let (_, v) = app.verify_api(json!({ "key": key, "cost": 0 })).await;
    assert_eq!((code(&v), &v["credits"]["remaining"]), ("VALID", &json!(2)));
    let (_, v) = app.verify_api(json!({ "key": key, "cost": 2 })).await;
    assert_eq!((code(&v), &v["credits"]["remaining"]), ("VALID", &json!(0)));
    assert_eq!(remaining(&app, &mgmt, &id).await, 0);
    // Cost 0 still checks the key without spending.
    let (_, v) = app.verify_api(json!({ "key": key, "cost": 0 })).await;
    assert_eq!(code(&v), "VALID");
    let (_, v) = app.verify_api(json!({ "key": key })).await;
    assert_eq!(code(&v), "USAGE_EXCEEDED");
    assert_eq!(v["valid"], false);
    assert_eq!(v["credits"]["remaining"], 0);
    assert!(
        v.get("retry_after").is_none(),
        "no refill, no retry time: {v}"
    );
}
both!(a_verification_costs_one_credit_unless_told);

async fn a_cost_must_be_a_whole_number_from_zero(app: TestApp) {
    let (_, mgmt, id, key) = setup(&app, "neg@example.com", json!({ "remaining": 3 }), &[]).await;
    for cost in [
        json!(-1),
        json!(1.5),
        json!("1"),
        json!(1_000_000_001i64),
        json!(true),
    ] {
        let (s, v) = app.verify_api(json!({ "key": key, "cost": cost })).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{cost}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("\"cost\" must be a whole number"),
            "{v}"
        );
    }
    assert_eq!(remaining(&app, &mgmt, &id).await, 3);
}
both!(a_cost_must_be_a_whole_number_from_zero);

async fn forward_auth_answers_429_credits_exhausted(app: TestApp) {
    let (_, _, _, key) = setup(&app, "fwdc@example.com", json!({ "remaining": 1 }), &[]).await;
    let get = || {
        reqwest::Client::new()
            .get(format!("{}/v1/auth", app.base))
            .bearer_auth(&key)
            .send()
    };
    assert_eq!(get().await.unwrap().status(), StatusCode::OK);
    let res = get().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["x-keyward-error"], "credits_exhausted");
    assert!(res.headers().get("retry-after").is_none());
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "credits_exhausted");
    // In process too.
    let v = app.state.verifier.verify(Some(&key), &[]).await.unwrap();
    assert_eq!(v.code, keyward::VerifyCode::UsageExceeded);
}
both!(forward_auth_answers_429_credits_exhausted);

async fn a_daily_refill_restores_the_balance_at_midnight(app: TestApp) {
    let credits = json!({ "remaining": 1, "refill": { "interval": "daily", "amount": 5 } });
    let (_, mgmt, id, key) = setup(&app, "daily@example.com", credits, &[]).await;
    assert_eq!(
        code(&app.verify_api(json!({ "key": key })).await.1),
        "VALID"
    );
    let (_, v) = app.verify_api(json!({ "key": key })).await;
    assert_eq!(code(&v), "USAGE_EXCEEDED");
    let refill_at = v["credits"]["refill_at"].as_i64().unwrap();
    assert_eq!(refill_at % 86_400, 0);
    assert_eq!(v["retry_after"], refill_at - app.clock.unix());
    // One second before midnight: still nothing.
    app.clock
        .advance(Duration::seconds(refill_at - app.clock.unix() - 1));
    assert_eq!(
        code(&app.verify_api(json!({ "key": key })).await.1),
        "USAGE_EXCEEDED"
    );
    app.clock.advance(Duration::seconds(1));
    let (_, v) = app.verify_api(json!({ "key": key })).await;
    assert_eq!((code(&v), &v["credits"]["remaining"]), ("VALID", &json!(4)));
    // Once a day: the refill does not repeat within the day.
    app.clock.advance(Duration::hours(23));
    let (_, v) = app.verify_api(json!({ "key": key, "cost": 4 })).await;
    assert_eq!((code(&v), &v["credits"]["remaining"]), ("VALID", &json!(0)));
    assert_eq!(remaining(&app, &mgmt, &id).await, 0);
}
both!(a_daily_refill_restores_the_balance_at_midnight);

async fn a_monthly_refill_comes_on_its_day(app: TestApp) {
    let credits =
        json!({ "remaining": 0, "refill": { "interval": "monthly", "amount": 100, "day": 1 } });
    let (_, mgmt, id, key) = setup(&app, "monthly@example.com", credits, &[]).await;
    let (s, v) = call(
        &app,
        &mgmt,
        Method::GET,
        &format!("/api/v1/keys/{id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let next = v["data"]["credits"]["next_refill_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(next.contains("-01T00:00:00"), "{next}");
    let (_, v) = app.verify_api(json!({ "key": key })).await;
    assert_eq!(code(&v), "USAGE_EXCEEDED");
    let refill_at = v["credits"]["refill_at"].as_i64().unwrap();
    app.clock
        .advance(Duration::seconds(refill_at - app.clock.unix()));
    let (_, v) = app.verify_api(json!({ "key": key, "cost": 10 })).await;
    assert_eq!(
        (code(&v), &v["credits"]["remaining"]),
        ("VALID", &json!(90))
    );
    // Not again until the next month's first.
    app.clock.advance(Duration::days(20));
    let (_, v) = app.verify_api(json!({ "key": key })).await;
    assert_eq!(v["credits"]["remaining"], 89);
}
both!(a_monthly_refill_comes_on_its_day);

async fn concurrent_verifications_on_two_nodes_spend_exactly_the_credits(app: TestApp) {
    let (_, mgmt, id, key) = setup(&app, "race@example.com", json!({ "remaining": 20 }), &[]).await;
    let (_, second) = app.second_node().await;
    let client = reqwest::Client::new();
    let calls = (0..50).map(|i| {
        let base = if i % 2 == 0 { &app.base } else { &second };
        let req = client
            .post(format!("{base}/v1/keys/verify"))
            .bearer_auth(keyward::config::TEST_VERIFIER_TOKEN)
            .json(&json!({ "key": key }))
            .send();
        async move { req.await.unwrap().json::<Value>().await.unwrap() }
    });
    let results = futures_util::future::join_all(calls).await;
    let valid = results.iter().filter(|v| code(v) == "VALID").count();
    let refused = results
        .iter()
        .filter(|v| code(v) == "USAGE_EXCEEDED")
        .count();
    assert_eq!((valid, refused), (20, 30));
    assert_eq!(remaining(&app, &mgmt, &id).await, 0);
}
both!(concurrent_verifications_on_two_nodes_spend_exactly_the_credits);

async fn a_rate_limit_refusal_spends_no_credits(app: TestApp) {
    let extra = [("rate_limit", "1"), ("rate_window", "minute")];
    let (_, mgmt, id, key) =
        setup(&app, "rl@example.com", json!({ "remaining": 10 }), &extra).await;
    assert_eq!(
        code(&app.verify_api(json!({ "key": key })).await.1),
        "VALID"
    );
    for _ in 0..3 {
        assert_eq!(
            code(&app.verify_api(json!({ "key": key })).await.1),
            "RATE_LIMITED"
        );
    }
    assert_eq!(remaining(&app, &mgmt, &id).await, 9);
}
both!(a_rate_limit_refusal_spends_no_credits);

async fn a_credits_refusal_consumes_no_rate_limit_token_or_quota(app: TestApp) {
    let extra = [
        ("rate_limit", "2"),
        ("rate_window", "hour"),
        ("daily_quota", "2"),
    ];
    let (_, mgmt, id, key) =
        setup(&app, "give@example.com", json!({ "remaining": 1 }), &extra).await;
    assert_eq!(
        code(&app.verify_api(json!({ "key": key })).await.1),
        "VALID"
    );
    for _ in 0..3 {
        assert_eq!(
            code(&app.verify_api(json!({ "key": key })).await.1),
            "USAGE_EXCEEDED"
        );
    }
    // The refusals took neither the second token nor the second verification of the day.
    let (s, v) = change(&app, &mgmt, &id, "increment", 5).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = app.verify_api(json!({ "key": key })).await;
    assert_eq!(code(&v), "VALID", "{v}");
    assert_eq!(v["quota"]["remaining"], 0);
    assert_eq!(
        code(&app.verify_api(json!({ "key": key })).await.1),
        "RATE_LIMITED"
    );
}
both!(a_credits_refusal_consumes_no_rate_limit_token_or_quota);

async fn credits_are_set_incremented_and_decremented_with_an_audit_trail(app: TestApp) {
    let mut admin = app.signed_up("ops@example.com").await;
    let (_, mgmt) = dashboard_key(&mut admin, "automation", &["read", "keys:write"], &[]).await;
    allow_key_minting(&mut admin, true).await;
    let (s, v) = call(
        &app,
        &mgmt,
        Method::POST,
        "/api/v1/keys",
        Some(json!({
            "name": "metered", "environment": "live", "scopes": ["read"],
            "credits": { "refill": { "interval": "monthly", "amount": 1000, "day": 15 }, "low_threshold": 50 },
        })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        v["data"]["credits"]["remaining"], 1000,
        "starts at the refill amount"
    );
    assert_eq!(v["data"]["credits"]["low_threshold"], 50);
    assert_eq!(v["data"]["credits"]["refill"]["day"], 15);

    let (s, v) = change(&app, &mgmt, &id, "set", 10).await;
    assert_eq!(
        (s, &v["data"]["credits"]["remaining"]),
        (StatusCode::OK, &json!(10))
    );
    let (s, v) = change(&app, &mgmt, &id, "increment", 5).await;
    assert_eq!(
        (s, &v["data"]["credits"]["remaining"]),
        (StatusCode::OK, &json!(15))
    );
    let (s, v) = change(&app, &mgmt, &id, "decrement", 20).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("15 credits left")
    );
    let (s, v) = change(&app, &mgmt, &id, "decrement", 15).await;
    assert_eq!(
        (s, &v["data"]["credits"]["remaining"]),
        (StatusCode::OK, &json!(0))
    );
    for (op, value) in [("add", 1), ("set", -1)] {
        let (s, v) = change(&app, &mgmt, &id, op, value).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{op} {value}: {v}");
    }
    // Unlimited again; incrementing an unlimited key is a conflict.
    let (s, v) = call(
        &app,
        &mgmt,
        Method::PATCH,
        &format!("/api/v1/keys/{id}"),
        Some(json!({ "credits": null })),
    )
    .await;
    assert_eq!(
        (s, &v["data"]["credits"]),
        (StatusCode::OK, &Value::Null),
        "{v}"
    );
    let (s, _) = change(&app, &mgmt, &id, "increment", 1).await;
    assert_eq!(s, StatusCode::CONFLICT);

    let events = app.audit_events().await;
    let created = events
        .iter()
        .find(|(a, d)| a == "key.created" && d["credits"].is_object())
        .expect("the created key's credits are in its event");
    assert_eq!(created.1["credits"]["refill"]["amount"], 1000);
    let changes: Vec<Value> = events
        .into_iter()
        .filter(|(a, _)| a == "key.credits_changed")
        .map(|(_, d)| d)
        .collect();
    let ops: Vec<(&str, Value)> = changes
        .iter()
        .map(|d| (d["op"].as_str().unwrap(), d["remaining"].clone()))
        .collect();
    assert_eq!(
        ops,
        [
            ("set", json!(10)),
            ("increment", json!(15)),
            ("decrement", json!(0)),
            ("settings", Value::Null),
        ]
    );
    assert!(changes[0]["via"]["api_key"].is_string());
}
both!(credits_are_set_incremented_and_decremented_with_an_audit_trail);

async fn a_key_cannot_raise_its_own_credits(app: TestApp) {
    let mut admin = app.signed_up("selfc@example.com").await;
    let (id, key) = dashboard_key(&mut admin, "self", &["read", "keys:write"], &[]).await;
    let path = format!("/api/v1/keys/{id}");
    // Giving itself a limit tightens it.
    let credits = json!({ "credits": { "remaining": 10, "refill": { "interval": "monthly", "amount": 10, "day": 1 } } });
    let (s, v) = call(&app, &key, Method::PATCH, &path, Some(credits)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for body in [
        json!({ "credits": null }),
        json!({ "credits": { "remaining": 11 } }),
        json!({ "credits": { "refill": { "interval": "daily", "amount": 10 } } }),
        json!({ "credits": { "refill": { "interval": "monthly", "amount": 20, "day": 1 } } }),
    ] {
        let (s, e) = call(&app, &key, Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{body}: {e}");
        assert_eq!(e["error"]["code"], "insufficient_permissions");
    }
    for (op, value) in [("increment", 1), ("set", 11)] {
        let (s, e) = change(&app, &key, &id, op, value).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{op}: {e}");
    }
    // Spending its management calls costs nothing; lowering itself is fine.
    let (s, v) = change(&app, &key, &id, "decrement", 3).await;
    assert_eq!(
        (s, &v["data"]["credits"]["remaining"]),
        (StatusCode::OK, &json!(7))
    );
    let (s, v) = change(&app, &key, &id, "set", 5).await;
    assert_eq!(
        (s, &v["data"]["credits"]["remaining"]),
        (StatusCode::OK, &json!(5))
    );
    // The member may raise it.
    let page = admin.get(&format!("/settings/api-keys/{id}")).await;
    assert!(page.shows("Credits remaining"));
    let res = admin
        .post(
            &format!("/settings/api-keys/{id}/credits"),
            &[
                ("remaining", "500"),
                ("refill_interval", "monthly"),
                ("refill_amount", "10"),
                ("refill_day", "1"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(remaining(&app, &key, &id).await, 500);
}
both!(a_key_cannot_raise_its_own_credits);

async fn credits_are_set_from_the_key_page(app: TestApp) {
    let mut admin = app.signed_up("pagec@example.com").await;
    let (id, key) = dashboard_key(&mut admin, "paged", &["read"], &[]).await;
    let page = admin.get(&format!("/settings/api-keys/{id}")).await;
    assert!(page.shows("Unlimited"));
    let res = admin
        .post(
            &format!("/settings/api-keys/{id}/credits"),
            &[
                ("remaining", "2"),
                ("refill_interval", "daily"),
                ("refill_amount", "25"),
                ("refill_day", ""),
                ("low_threshold", ""),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let page = admin.get(&format!("/settings/api-keys/{id}")).await;
    assert!(page.shows("Saved the credits"), "{}", page.body);
    assert!(page.shows("Next refill") && page.shows("to 25 every day"));
    assert_eq!(
        code(&app.verify_api(json!({ "key": key, "cost": 2 })).await.1),
        "VALID"
    );
    assert_eq!(
        code(&app.verify_api(json!({ "key": key })).await.1),
        "USAGE_EXCEEDED"
    );
    // A mistake is named, and nothing changes.
    let res = admin
        .post(
            &format!("/settings/api-keys/{id}/credits"),
            &[
                ("remaining", "-5"),
                ("refill_interval", "daily"),
                ("refill_amount", "25"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let page = admin.get(&format!("/settings/api-keys/{id}")).await;
    assert!(page.shows("must be a whole number from 0"), "{}", page.body);
    // Unlimited again.
    let res = admin
        .post(
            &format!("/settings/api-keys/{id}/credits"),
            &[("unlimited", "1")],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(
        code(&app.verify_api(json!({ "key": key })).await.1),
        "VALID"
    );
    // Without the CSRF token the form is refused.
    let res = admin
        .post_raw(
            &format!("/settings/api-keys/{id}/credits"),
            &[("remaining", "9")],
            &[],
        )
        .await;
    assert!(res.status.is_client_error(), "{}", res.status);
}
both!(credits_are_set_from_the_key_page);

async fn low_and_exhausted_webhooks_fire_once_per_crossing(app: TestApp) {
    let rx = Receiver::start().await;
    let credits = json!({ "remaining": 4, "low_threshold": 2 });
    let (mut admin, mgmt, id, key) = setup(&app, "lowc@example.com", credits, &[]).await;
    add_endpoint(
        &mut admin,
        &rx.url,
        &["key.credits_low", "key.credits_exhausted"],
    )
    .await;
    for _ in 0..8 {
        app.verify_api(json!({ "key": key })).await;
    }
    app.state.dispatcher().deliver_due().await.unwrap();
    let types = |rx: &Receiver| -> Vec<String> {
        rx.events()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(types(&rx), ["key.credits_low", "key.credits_exhausted"]);
    let ev = &rx.events()[0];
    assert_eq!(ev["data"]["target"]["id"], id.as_str());
    assert_eq!(ev["data"]["details"]["remaining"], 2);
    // A top-up re-arms both.
    let (s, _) = change(&app, &mgmt, &id, "increment", 3).await;
    assert_eq!(s, StatusCode::OK);
    for _ in 0..5 {
        app.verify_api(json!({ "key": key })).await;
    }
    app.state.dispatcher().deliver_due().await.unwrap();
    assert_eq!(
        types(&rx),
        [
            "key.credits_low",
            "key.credits_exhausted",
            "key.credits_low",
            "key.credits_exhausted"
        ]
    );
}
both!(low_and_exhausted_webhooks_fire_once_per_crossing);

async fn a_new_refill_starts_its_schedule_now(app: TestApp) {
    let (_, mgmt, id, key) = setup(&app, "late@example.com", json!({ "remaining": 2 }), &[]).await;
    app.clock.advance(Duration::days(3));
    let refill = json!({ "credits": { "refill": { "interval": "daily", "amount": 50 } } });
    let (s, v) = call(
        &app,
        &mgmt,
        Method::PATCH,
        &format!("/api/v1/keys/{id}"),
        Some(refill),
    )
    .await;
    assert_eq!(
        (s, &v["data"]["credits"]["remaining"]),
        (StatusCode::OK, &json!(2)),
        "{v}"
    );
    // No refill for the days before the refill existed: the balance is kept until midnight.
    let (_, v) = app.verify_api(json!({ "key": key })).await;
    assert_eq!((code(&v), &v["credits"]["remaining"]), ("VALID", &json!(1)));
    let refill_at = v["credits"]["refill_at"].as_i64().unwrap();
    app.clock
        .advance(Duration::seconds(refill_at - app.clock.unix()));
    let (_, v) = app.verify_api(json!({ "key": key })).await;
    assert_eq!(v["credits"]["remaining"], 49);
}
both!(a_new_refill_starts_its_schedule_now);

async fn the_tower_layer_spends_its_configured_cost(app: TestApp) {
    use keyward::verify::layer::RequireKey;
    let (_, mgmt, id, key) = setup(&app, "layer@example.com", json!({ "remaining": 5 }), &[]).await;
    let router = axum::Router::new().route(
        "/report",
        axum::routing::get(|| async { "ok" })
            .layer(RequireKey::new(app.state.verifier.clone()).cost(2)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let client = reqwest::Client::new();
    let mut statuses = vec![];
    for _ in 0..3 {
        let res = client
            .get(format!("{base}/report"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        statuses.push(res.status());
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            let v: Value = res.json().await.unwrap();
            assert_eq!(v["error"]["code"], "credits_exhausted");
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(remaining(&app, &mgmt, &id).await, 1);
}
both!(the_tower_layer_spends_its_configured_cost);

/// With rate limits and quotas shared through Redis, a credits refusal returns its token
/// and its quota unit to this node's leases. Skipped without Redis at 127.0.0.1:6379 (unless `KEYWARD_REQUIRE_REDIS=1`).
async fn with_redis_a_credits_refusal_returns_the_shared_token_and_quota(
    backend: crate::helpers::Backend,
) {
    if std::net::TcpStream::connect(("127.0.0.1", 6379)).is_err() {
        assert!(
            !std::env::var("KEYWARD_REQUIRE_REDIS").is_ok_and(|v| v == "1"),
            "Redis is required (KEYWARD_REQUIRE_REDIS=1) at 127.0.0.1:6379"
        );
        eprintln!("SKIPPED: Redis is not running at 127.0.0.1:6379");
        return;
    }
    let prefix = format!("kwtest-credits-{}:", uuid::Uuid::new_v4().simple());
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.redis = Some(keyward::config::RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            prefix,
            rate_failure: keyward::verify::shared::FailurePolicy::Closed,
            quota_failure: keyward::verify::shared::FailurePolicy::Closed,
        });
    })
    .await
    else {
        return;
    };
    let extra = [
        ("rate_limit", "2"),
        ("rate_window", "hour"),
        ("daily_quota", "2"),
    ];
    let (_, mgmt, id, key) = setup(
        &app,
        "redisc@example.com",
        json!({ "remaining": 1 }),
        &extra,
    )
    .await;
    assert_eq!(
        code(&app.verify_api(json!({ "key": key })).await.1),
        "VALID"
    );
    for _ in 0..3 {
        assert_eq!(
            code(&app.verify_api(json!({ "key": key })).await.1),
            "USAGE_EXCEEDED"
        );
    }
    let (s, _) = change(&app, &mgmt, &id, "increment", 5).await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = app.verify_api(json!({ "key": key })).await;
    assert_eq!(code(&v), "VALID", "{v}");
    assert_eq!(v["quota"]["remaining"], 0, "{v}");
    assert_eq!(
        code(&app.verify_api(json!({ "key": key })).await.1),
        "RATE_LIMITED"
    );
    assert_eq!(remaining(&app, &mgmt, &id).await, 4);
}

mod with_redis_a_credits_refusal_returns_the_shared_token_and_quota {
    use crate::helpers::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::with_redis_a_credits_refusal_returns_the_shared_token_and_quota(Backend::Sqlite)
            .await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::with_redis_a_credits_refusal_returns_the_shared_token_and_quota(Backend::Postgres)
            .await;
    }
}
