//! The verification doors: the HTTP verify API, forward-auth, and the pipeline's codes,
//! limits, quotas, allowlists, caching and failure behaviour.

use std::time::{Duration as StdDuration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use time::Duration;

use crate::{
    both,
    helpers::{Backend, Browser, TestApp},
};

/// Creates a key with extra form fields (limits etc.) and returns (id, key).
async fn key_with(b: &mut Browser, name: &str, extra: &[(&str, &str)]) -> (String, String) {
    let mut fields = vec![
        ("name", name),
        ("environment", "live"),
        ("preset", "Read-only"),
        ("expiry", "30d"),
    ];
    fields.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    fields.extend_from_slice(extra);
    let page = b.create_key(&fields).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    (page.key_id(), page.new_key().unwrap())
}

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

async fn every_code_over_the_verify_api(app: TestApp) {
    let mut b = app.signed_up("codes@example.com").await;
    let (id, good) = key_with(&mut b, "good", &[("metadata", r#"{"plan":"pro"}"#)]).await;
    let (rid, revoked) = key_with(&mut b, "revoked", &[]).await;
    b.post(&format!("/settings/api-keys/{rid}/revoke"), &[])
        .await;
    let (_, week) = key_with(&mut b, "week", &[("expiry", "7d")]).await;
    let (did, disabled) = key_with(&mut b, "disabled", &[]).await;
    // Pause it from its page (immediate, audited); resuming is tested below.
    b.get(&format!("/settings/api-keys/{did}")).await;
    let res = b
        .post(
            &format!("/settings/api-keys/{did}/enabled"),
            &[("enabled", "false")],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let (_, fenced) = key_with(
        &mut b,
        "fenced",
        &[("ip_allowlist", "10.0.0.0/8\n2001:db8::/32")],
    )
    .await;
    let (_, limited) = key_with(
        &mut b,
        "limited",
        &[("rate_limit", "3"), ("rate_window", "minute")],
    )
    .await;
    let (_, quota) = key_with(&mut b, "quota", &[("daily_quota", "2")]).await;
    let unknown =
        keyward::keys::token::PlainKey::generate("kw", keyward::keys::token::Environment::Live)
            .unwrap();

    let (s, v) = app
        .verify_api(json!({ "key": good, "scopes": ["read"] }))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((v["valid"].as_bool(), code(&v)), (Some(true), "VALID"));
    assert_eq!(v["key_id"], id);
    assert_eq!(v["scopes"], json!(["read"]));
    assert_eq!(v["metadata"], json!({ "plan": "pro" }));
    assert_eq!(v["environment"], "live");
    assert!(v["org_id"].is_string() && v["expires_at"].is_i64());

    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "MISSING"),
        (json!({ "key": "" }), "MISSING"),
        // Starts like one of our keys but is not one: malformed, no lookup.
        (json!({ "key": "kw_live_not-a-key" }), "INVALID_FORMAT"),
        // Another format could be an imported key: looked up, unknown.
        (json!({ "key": "not-a-key" }), "NOT_FOUND"),
        (json!({ "key": "not a key" }), "INVALID_FORMAT"),
        (json!({ "key": "k".repeat(10_000) }), "INVALID_FORMAT"),
        (json!({ "key": unknown.expose() }), "NOT_FOUND"),
        (json!({ "key": revoked }), "REVOKED"),
        (json!({ "key": disabled }), "DISABLED"),
        (
            json!({ "key": good, "scopes": ["admin"] }),
            "INSUFFICIENT_SCOPE",
        ),
        (json!({ "key": fenced }), "IP_NOT_ALLOWED"),
        (
            json!({ "key": fenced, "ip": "192.168.1.1" }),
            "IP_NOT_ALLOWED",
        ),
        (json!({ "key": fenced, "ip": "10.20.30.40" }), "VALID"),
        (json!({ "key": fenced, "ip": "2001:db8::7" }), "VALID"),
    ];
    for (body, expected) in cases {
        let (s, v) = app.verify_api(body.clone()).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(code(&v), expected, "{body} → {v}");
        assert_eq!(v["valid"].as_bool(), Some(expected == "VALID"));
    }
    let res = b
        .post(
            &format!("/settings/api-keys/{did}/enabled"),
            &[("enabled", "true")],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(
        code(&app.verify_api(json!({ "key": disabled })).await.1),
        "VALID"
    );
    let audit = b.get(&format!("/settings/audit-log?key={did}")).await;
    assert!(audit.body.contains("key.disabled") && audit.body.contains("key.enabled"));
    // Unknown and malformed keys disclose nothing about any key.
    let (_, v) = app.verify_api(json!({ "key": unknown.expose() })).await;
    assert!(v.get("key_id").is_none() && v.get("org_id").is_none());

    // Rate limit: 3 per minute, then RATE_LIMITED with the state; one token every 20 s.
    for i in 0..3 {
        let (_, v) = app.verify_api(json!({ "key": limited })).await;
        assert_eq!(code(&v), "VALID");
        assert_eq!(v["ratelimit"]["remaining"], 2 - i);
        assert_eq!(v["ratelimit"]["limit"], 3);
    }
    let (_, v) = app.verify_api(json!({ "key": limited })).await;
    assert_eq!(code(&v), "RATE_LIMITED");
    assert_eq!(v["retry_after"], 20);
    app.clock.advance(Duration::seconds(20));
    let (_, v) = app.verify_api(json!({ "key": limited })).await;
    assert_eq!(code(&v), "VALID");

    // Daily quota: 2, then QUOTA_EXCEEDED until the next UTC midnight.
    for _ in 0..2 {
        assert_eq!(
            code(&app.verify_api(json!({ "key": quota })).await.1),
            "VALID"
        );
    }
    let (_, v) = app.verify_api(json!({ "key": quota })).await;
    assert_eq!(code(&v), "QUOTA_EXCEEDED");
    assert_eq!(v["quota"]["remaining"], 0);
    let reset = v["quota"]["reset"].as_i64().unwrap();
    assert_eq!(reset % 86_400, 0);
    {
        use keyward::clock::Clock;
        let now = app.clock.unix();
        app.clock.advance(Duration::seconds(reset - now));
    }
    assert_eq!(
        code(&app.verify_api(json!({ "key": quota })).await.1),
        "VALID"
    );

    // Expiry, judged by the clock even for a cached key.
    assert_eq!(
        code(&app.verify_api(json!({ "key": week })).await.1),
        "VALID"
    );
    app.clock.advance(Duration::days(8));
    assert_eq!(
        code(&app.verify_api(json!({ "key": week })).await.1),
        "EXPIRED"
    );
}
both!(every_code_over_the_verify_api);

async fn verify_api_requires_its_credential_and_sane_input(app: TestApp) {
    let mut b = app.signed_up("cred@example.com").await;
    let (_, key) = key_with(&mut b, "k", &[]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/keys/verify", app.base);
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic dGVzdA=="),
        Some("Bearer "),
    ] {
        let mut req = client.post(&url).json(&json!({ "key": key }));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let body = res.text().await.unwrap();
        assert!(body.contains("missing_authorization"));
        assert!(!body.contains("key_id") && !body.contains("VALID"));
    }
    let send = |body: Vec<u8>, ct: &'static str| {
        client
            .post(&url)
            .bearer_auth(keyward::config::TEST_VERIFIER_TOKEN)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let res = send(b"{not json".to_vec(), "application/json")
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "bad_request");
    let res = send(br#"{"key": 5}"#.to_vec(), "application/json")
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // The message names the field that is wrong.
    let v: Value = res.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("key:"),
        "{v}"
    );
    // A JSON media type with parameters is JSON too.
    let res = send(
        serde_json::to_vec(&json!({ "key": key })).unwrap(),
        "application/json; charset=utf-8",
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(code(&res.json::<Value>().await.unwrap()), "VALID");
    let res = send(
        br#"{"key": "x", "org_id": "y"}"#.to_vec(),
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = send(
        br#"{"key": "x", "ip": "999.1.1.1"}"#.to_vec(),
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // Over the 16 KiB limit: 413. With 10 MB the server answers 413 without reading the
    // rest, and may close the connection while the client is still sending.
    let res = send(vec![b' '; 20 * 1024], "application/json")
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "payload_too_large"
    );
    match send(vec![b' '; 10 * 1024 * 1024], "application/json").await {
        Ok(res) => assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE),
        Err(e) => assert!(!e.is_timeout(), "{e}"),
    }
    // Exactly at the limit is fine.
    let mut exact = serde_json::to_vec(&json!({ "key": key })).unwrap();
    exact.resize(16 * 1024, b' ');
    let res = send(exact, "application/json").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(code(&res.json::<Value>().await.unwrap()), "VALID");
    // A chunked body (no Content-Length to refuse at once) one byte over the limit: 413.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut request = format!(
        "POST /v1/keys/verify HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n",
        keyward::config::TEST_VERIFIER_TOKEN
    );
    for _ in 0..4 {
        request.push_str(&format!("1000\r\n{}\r\n", " ".repeat(4096)));
    }
    request.push_str("1\r\n \r\n0\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    // The door stops reading at the body's declared end: the connection stays usable.
    // Two calls written back to back on one connection, both answered in order:
    let call = |body: &str, last: bool| {
        format!(
            "POST /v1/keys/verify HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
            keyward::config::TEST_VERIFIER_TOKEN,
            body.len(),
            if last { "connection: close\r\n" } else { "" },
        )
    };
    let first = json!({ "key": key }).to_string();
    let second = json!({ "key": key, "scopes": ["no-such-scope"] }).to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(format!("{}{}", call(&first, false), call(&second, true)).as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    let (valid, refused) = (
        answer.find(r#""code":"VALID""#),
        answer.find(r#""code":"INSUFFICIENT_SCOPE""#),
    );
    assert!(valid.is_some() && valid < refused, "{answer}");
    // `Expect: 100-continue`: the body is asked for, then read.
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = call(&first, true);
    let (head, body) = head.split_at(head.len() - first.len());
    conn.write_all(
        head.replacen("\r\n\r\n", "\r\nexpect: 100-continue\r\n\r\n", 1)
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut interim = [0u8; 25];
    conn.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    conn.write_all(body.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""code":"VALID""#), "{answer}");
    // A chunked body in pieces, with a trailer, then another call on the connection.
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (a, b) = first.split_at(5);
    let chunked = format!(
        "POST /v1/keys/verify HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
         {:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nx-trailer: 1\r\n\r\n",
        keyward::config::TEST_VERIFIER_TOKEN,
        a.len(),
        b.len(),
    );
    conn.write_all(format!("{chunked}{}", call(&first, true)).as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(answer.matches(r#""code":"VALID""#).count(), 2, "{answer}");
    let res = send(br#"{"key": "x"}"#.to_vec(), "text/plain")
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // The service is still fine.
    assert_eq!(
        code(&app.verify_api(json!({ "key": key })).await.1),
        "VALID"
    );
}
both!(verify_api_requires_its_credential_and_sane_input);

async fn rate_limit_holds_under_concurrency(app: TestApp) {
    let mut b = app.signed_up("burst@example.com").await;
    let (_, key) = key_with(
        &mut b,
        "burst",
        &[("rate_limit", "10"), ("rate_window", "hour")],
    )
    .await;
    let calls = (0..20).map(|_| app.verify_api(json!({ "key": key })));
    let results = futures_util::future::join_all(calls).await;
    let valid = results.iter().filter(|(_, v)| code(v) == "VALID").count();
    let limited = results
        .iter()
        .filter(|(_, v)| code(v) == "RATE_LIMITED")
        .count();
    assert_eq!((valid, limited), (10, 10));
}
both!(rate_limit_holds_under_concurrency);

async fn forward_auth_answers_like_the_reference_docs(app: TestApp) {
    let mut b = app.signed_up("fwd@example.com").await;
    let (id, good) = key_with(&mut b, "good", &[("preset", "Read-write")]).await;
    let (rid, revoked) = key_with(&mut b, "revoked", &[]).await;
    b.post(&format!("/settings/api-keys/{rid}/revoke"), &[])
        .await;
    let (_, week) = key_with(&mut b, "week", &[("expiry", "7d")]).await;
    let (_, limited) = key_with(
        &mut b,
        "limited",
        &[("rate_limit", "1"), ("rate_window", "minute")],
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/auth", app.base);
    let get = |headers: Vec<(&'static str, String)>| {
        let mut req = client.get(&url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };

    let res = get(vec![]).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "missing_authorization"
    );

    let res = get(vec![
        ("authorization", format!("Bearer {good}")),
        ("x-keyward-require-scopes", "read, write".into()),
    ])
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-keyward-key-id"], id.as_str());
    assert_eq!(res.headers()["x-keyward-scopes"], "read write");
    assert!(res.headers().contains_key("x-keyward-org-id"));
    let res = get(vec![("x-api-key", good.clone())]).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let res = get(vec![
        ("authorization", format!("Bearer {good}")),
        ("x-keyward-require-scopes", "admin".into()),
    ])
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "insufficient_permissions"
    );

    // Revoked, unknown and malformed keys look exactly alike to the end user.
    let unknown =
        keyward::keys::token::PlainKey::generate("kw", keyward::keys::token::Environment::Live)
            .unwrap();
    let mut bodies = vec![];
    for k in [
        revoked.clone(),
        unknown.expose().to_string(),
        "garbage".to_string(),
    ] {
        let res = get(vec![("authorization", format!("Bearer {k}"))])
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        bodies.push(res.text().await.unwrap());
    }
    assert!(bodies[0].contains("invalid_api_key"));
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));

    // A key in the URL is refused, even a valid one.
    let res = client
        .get(format!("{url}?api_key={good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = get(vec![
        ("x-original-uri", format!("/things?token={good}")),
        ("x-api-key", good.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    // Rate limits: headers on success, 429 + Retry-After + retry_after when exceeded.
    let res = get(vec![("authorization", format!("Bearer {limited}"))])
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-ratelimit-limit"], "1");
    assert_eq!(res.headers()["x-ratelimit-remaining"], "0");
    assert!(
        res.headers()["x-ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 1_700_000_000
    );
    let res = get(vec![("authorization", format!("Bearer {limited}"))])
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "60");
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["retry_after"], 60);
    // For nginx (auth_request passes only 2xx/401/403) the 429 travels as a marked 403.
    let res = get(vec![
        ("authorization", format!("Bearer {limited}")),
        ("x-keyward-proxy", "nginx".into()),
    ])
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(res.headers()["x-keyward-status"], "429");

    // Expired keys are named as such (they really existed).
    app.clock.advance(Duration::days(8));
    let res = get(vec![("authorization", format!("Bearer {week}"))])
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "expired_api_key"
    );

    // Headers that are not UTF-8 are a clean 401, not a crash.
    let res = client
        .get(&url)
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
both!(forward_auth_answers_like_the_reference_docs);

async fn guessing_floods_are_throttled(app: TestApp) {
    let mut b = app.signed_up("flood@example.com").await;
    let (_, warm) = key_with(&mut b, "warm", &[]).await;
    let (_, cold) = key_with(&mut b, "cold", &[]).await;
    let ip = "203.0.113.9";
    assert_eq!(
        code(&app.verify_api(json!({ "key": warm, "ip": ip })).await.1),
        "VALID"
    );
    // 60 invalid keys per minute per source; then no more lookups from that source.
    for i in 0..60 {
        let (_, v) = app
            .verify_api(json!({ "key": format!("kw_live_guess{i}"), "ip": ip }))
            .await;
        assert_eq!(code(&v), "INVALID_FORMAT");
    }
    let (_, v) = app
        .verify_api(json!({ "key": "kw_live_guess", "ip": ip }))
        .await;
    assert_eq!(code(&v), "RATE_LIMITED");
    let unknown =
        keyward::keys::token::PlainKey::generate("kw", keyward::keys::token::Environment::Live)
            .unwrap();
    assert_eq!(
        code(
            &app.verify_api(json!({ "key": unknown.expose(), "ip": ip }))
                .await
                .1
        ),
        "RATE_LIMITED"
    );
    // Keys already in the cache keep working for that source; others wait.
    assert_eq!(
        code(&app.verify_api(json!({ "key": warm, "ip": ip })).await.1),
        "VALID"
    );
    assert_eq!(
        code(&app.verify_api(json!({ "key": cold, "ip": ip })).await.1),
        "RATE_LIMITED"
    );
    // Another source is unaffected; an IPv6 /64 counts as one source.
    let (_, v) = app
        .verify_api(json!({ "key": "kw_live_guess", "ip": "203.0.113.10" }))
        .await;
    assert_eq!(code(&v), "INVALID_FORMAT");
    for i in 0..60 {
        let ip6 = format!("2001:db8:1:2::{:x}", i + 1);
        app.verify_api(json!({ "key": "kw_live_guess", "ip": ip6 }))
            .await;
    }
    let (_, v) = app
        .verify_api(json!({ "key": "kw_live_guess", "ip": "2001:db8:1:2::ffff" }))
        .await;
    assert_eq!(code(&v), "RATE_LIMITED");
    app.clock.advance(Duration::seconds(61));
    let (_, v) = app
        .verify_api(json!({ "key": "kw_live_guess", "ip": ip }))
        .await;
    assert_eq!(code(&v), "INVALID_FORMAT");
}
both!(guessing_floods_are_throttled);

async fn revoking_a_warm_key_takes_effect_at_once(app: TestApp) {
    let mut b = app.signed_up("warm@example.com").await;
    let (id, key) = key_with(&mut b, "warm", &[]).await;
    // Warm the cache, then change the key through the dashboard: every write invalidates.
    assert_eq!(
        code(
            &app.verify_api(json!({ "key": key, "scopes": ["read"] }))
                .await
                .1
        ),
        "VALID"
    );
    b.get(&format!("/settings/api-keys/{id}")).await;
    let res = b
        .post(
            &format!("/settings/api-keys/{id}"),
            &[
                ("name", "warm"),
                ("scopes", "read"),
                ("ip_allowlist", "10.0.0.0/8"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(
        code(
            &app.verify_api(json!({ "key": key, "ip": "192.0.2.1" }))
                .await
                .1
        ),
        "IP_NOT_ALLOWED"
    );
    b.get(&format!("/settings/api-keys/{id}")).await;
    let res = b
        .post(&format!("/settings/api-keys/{id}/revoke"), &[])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(
        code(
            &app.verify_api(json!({ "key": key, "ip": "10.0.0.1" }))
                .await
                .1
        ),
        "REVOKED"
    );
}
both!(revoking_a_warm_key_takes_effect_at_once);

async fn usage_is_batched_and_shown(app: TestApp) {
    let mut b = app.signed_up("usage@example.com").await;
    let (id, key) = key_with(&mut b, "used", &[]).await;
    for _ in 0..5 {
        assert_eq!(
            code(&app.verify_api(json!({ "key": key })).await.1),
            "VALID"
        );
    }
    // Nothing is written per verification…
    let list = b.get("/settings/api-keys").await;
    assert!(list.body.contains("Never"));
    // …until the flush (every second in the server).
    assert_eq!(app.state.verifier.flush().await.unwrap(), 1);
    let list = b.get("/settings/api-keys").await;
    assert!(list.body.contains("just now"), "{}", list.body);
    let detail = b.get(&format!("/settings/api-keys/{id}")).await;
    assert!(detail.body.contains("Key used for the first time"));
    assert!(detail.body.contains("<svg"), "usage chart");
    assert!(detail.body.contains("5 verifications"));
    let day = keyward::verify::usage::day_of({
        use keyward::clock::Clock;
        app.clock.unix()
    });
    assert_eq!(app.store.usage_count(&id, day).await.unwrap(), 5);
}
both!(usage_is_batched_and_shown);

async fn store_failure_fails_closed(app: TestApp) {
    let mut b = app.signed_up("down@example.com").await;
    let (_, key) = key_with(&mut b, "k", &[]).await;
    app.store.close().await;
    let (s, v) = app.verify_api(json!({ "key": key })).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["error"]["code"], "unavailable");
    assert!(v.get("valid").is_none());
    let res = reqwest::Client::new()
        .get(format!("{}/v1/auth", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    let ready = reqwest::get(format!("{}/readyz", app.base)).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let live = reqwest::get(format!("{}/healthz", app.base)).await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
}
both!(store_failure_fails_closed);

/// Two nodes on one Postgres database: a revocation through one reaches the other's warm
/// cache within a second (LISTEN/NOTIFY). SQLite is single-node by design.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_other_nodes_within_a_second() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let (node2, _) = app.second_node().await;
    let mut b = app.signed_up("nodes@example.com").await;
    let (id, key) = key_with(&mut b, "shared", &[]).await;
    // Warm both caches.
    for node in [&app.state, &node2] {
        assert_eq!(
            node.verifier.verify(Some(&key), &[]).await.unwrap().code,
            keyward::VerifyCode::Valid
        );
    }
    // Let node 2's listener settle, then revoke through node 1.
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    let res = b
        .post(&format!("/settings/api-keys/{id}/revoke"), &[])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let start = Instant::now();
    // Both nodes' manual clocks started at (nearly) the same real time; node 2's started
    // later, so the revocation time (node 1's clock) is already in node 2's past.
    loop {
        let code = node2.verifier.verify(Some(&key), &[]).await.unwrap().code;
        if code == keyward::VerifyCode::Revoked {
            break;
        }
        assert!(
            start.elapsed() < StdDuration::from_secs(1),
            "node 2 still answers {code:?}"
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    eprintln!("revocation reached node 2 after {:?}", start.elapsed());
}

async fn simultaneous_guesses_cannot_outrun_the_source_limit(app: TestApp) {
    // 200 well-formed unknown keys at once from one source: each database lookup is paid
    // for before it runs, so exactly the source's 60 are looked up (the clock stands
    // still, so nothing refills meanwhile) and the rest are refused without a lookup.
    let calls = (0..200).map(|_| {
        let unknown =
            keyward::keys::token::PlainKey::generate("kw", keyward::keys::token::Environment::Live)
                .unwrap();
        let app = &app;
        async move {
            let (_, v) = app
                .verify_api(json!({ "key": unknown.expose(), "ip": "198.51.100.7" }))
                .await;
            code(&v).to_string()
        }
    });
    let codes = futures_util::future::join_all(calls).await;
    let looked_up = codes.iter().filter(|c| *c == "NOT_FOUND").count();
    let refused = codes.iter().filter(|c| *c == "RATE_LIMITED").count();
    assert_eq!((looked_up, refused), (60, 140), "{codes:?}");
}
both!(simultaneous_guesses_cannot_outrun_the_source_limit);

async fn a_working_key_does_not_spend_the_source_budget(app: TestApp) {
    let mut b = app.signed_up("budget@example.com").await;
    let ip = "198.51.100.8";
    // 70 different keys, each seen for the first time (a lookup each): all valid, so the
    // 60 invalid keys a minute the source may send are all still there.
    for i in 0..70 {
        let (_, key) = key_with(&mut b, &format!("k{i}"), &[]).await;
        let (_, v) = app.verify_api(json!({ "key": key, "ip": ip })).await;
        assert_eq!(code(&v), "VALID", "key {i}");
    }
    for i in 0..60 {
        let (_, v) = app
            .verify_api(json!({ "key": format!("kw_live_guess{i}"), "ip": ip }))
            .await;
        assert_eq!(code(&v), "INVALID_FORMAT", "guess {i}");
    }
    let (_, v) = app
        .verify_api(json!({ "key": "kw_live_guess", "ip": ip }))
        .await;
    assert_eq!(code(&v), "RATE_LIMITED");
}
both!(a_working_key_does_not_spend_the_source_budget);

async fn verification_answers_are_never_cached(app: TestApp) {
    let mut b = app.signed_up("nostore@example.com").await;
    let (_, key) = key_with(
        &mut b,
        "k",
        &[("rate_limit", "5"), ("rate_window", "minute")],
    )
    .await;
    let client = reqwest::Client::new();
    let verify_body = |body: String| {
        client
            .post(format!("{}/v1/keys/verify", app.base))
            .bearer_auth(keyward::config::TEST_VERIFIER_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let verify = |key: &str| verify_body(json!({ "key": key }).to_string());
    let auth = |key: &str| {
        client
            .get(format!("{}/v1/auth", app.base))
            .bearer_auth(key)
            .send()
    };
    // Another method than POST: 405, which says what is allowed.
    let wrong_method = client
        .get(format!("{}/v1/keys/verify", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.headers()["allow"], "POST");
    // The verify API's answer is put together by hand: its media type, its length and the
    // app's security headers are all there.
    for res in [
        verify(&key).await.unwrap(),
        verify("kw_live_nope").await.unwrap(),
    ] {
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(res.headers()["x-frame-options"], "DENY");
        let length: usize = res.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = res.bytes().await.unwrap();
        assert_eq!(body.len(), length);
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(answer["code"].is_string(), "{answer}");
    }
    for res in [
        verify(&key).await.unwrap(),
        verify("kw_live_nope").await.unwrap(),
        auth(&key).await.unwrap(),
        auth("kw_live_nope").await.unwrap(),
        client
            .get(format!("{}/v1/auth", app.base))
            .send()
            .await
            .unwrap(),
        // Refusals of the call itself too: no credential, a broken body, one too large.
        client
            .post(format!("{}/v1/keys/verify", app.base))
            .json(&json!({ "key": key }))
            .send()
            .await
            .unwrap(),
        verify_body("{".into()).await.unwrap(),
        verify_body(json!({ "key": "x".repeat(20_000) }).to_string())
            .await
            .unwrap(),
        wrong_method,
    ] {
        assert_eq!(res.headers()["cache-control"], "no-store", "{}", res.url());
        assert_eq!(
            res.headers()["x-content-type-options"],
            "nosniff",
            "{}",
            res.url()
        );
        // The IETF draft's fields only when the operator turns them on.
        assert!(res.headers().get("ratelimit-policy").is_none());
    }
}
both!(verification_answers_are_never_cached);

async fn ietf_rate_limit_fields_when_turned_on(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.ietf_ratelimit_headers = true).await else {
        return;
    };
    let mut b = app.signed_up("ietf@example.com").await;
    let (_, key) = key_with(
        &mut b,
        "k",
        &[
            ("rate_limit", "5"),
            ("rate_window", "minute"),
            ("daily_quota", "1000"),
        ],
    )
    .await;
    let res = reqwest::Client::new()
        .get(format!("{}/v1/auth", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["ratelimit-policy"],
        r#""key";q=5;w=60, "daily";q=1000;w=86400"#
    );
    let state = res.headers()["ratelimit"].to_str().unwrap().to_string();
    assert!(state.starts_with(r#""key";r=4;t="#), "{state}");
    assert!(state.contains(r#", "daily";r=999;t="#), "{state}");
    // Beside the X- fields, which stay.
    assert_eq!(res.headers()["x-ratelimit-limit"], "5");
    // A key without limits: none.
    let (_, free) = key_with(&mut b, "free", &[]).await;
    let (status, _) = app.verify_api(json!({ "key": free })).await;
    assert_eq!(status, StatusCode::OK);
    let res = reqwest::Client::new()
        .get(format!("{}/v1/auth", app.base))
        .bearer_auth(&free)
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("ratelimit-policy").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ietf_rate_limit_fields_when_turned_on_sqlite() {
    ietf_rate_limit_fields_when_turned_on(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ietf_rate_limit_fields_when_turned_on_postgres() {
    ietf_rate_limit_fields_when_turned_on(Backend::Postgres).await;
}

async fn encoded_keys_in_the_url_are_refused(app: TestApp) {
    let client = reqwest::Client::new();
    for uri in [
        "/things?t=kw%5Flive%5Fabc",
        "/things?a=1;api_key=x",
        "/things?api%5Fkey=x",
    ] {
        let res = client
            .get(format!("{}/v1/auth", app.base))
            .header("x-original-uri", uri)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["error"]["code"],
            "key_in_query"
        );
    }
}
both!(encoded_keys_in_the_url_are_refused);
