//! The management API (`/api/v1`) with API keys and with a session, and its OpenAPI
//! document.

use keyward::clock::Clock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    both,
    helpers::{Browser, TestApp},
};

/// Calls the API with an API key.
pub async fn call(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A key with custom scopes (and optional limits) created in the dashboard.
pub async fn dashboard_key(
    b: &mut Browser,
    name: &str,
    scopes: &[&str],
    extra: &[(&str, &str)],
) -> (String, String) {
    let mut fields: Vec<(&str, &str)> = vec![
        ("name", name),
        ("environment", "live"),
        ("preset", "custom"),
        ("expiry", "30d"),
    ];
    for s in scopes {
        fields.push(("scopes", s));
    }
    fields.extend_from_slice(extra);
    let page = b.create_key(&fields).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    (page.key_id(), page.new_key().unwrap())
}

pub async fn allow_key_minting(b: &mut Browser, on: bool) {
    b.get("/settings/organization").await;
    let fields: &[(&str, &str)] = if on {
        &[("api_keys_can_create_keys", "1")]
    } else {
        &[]
    };
    let res = b.post("/settings/organization/api-access", fields).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
}

async fn management_with_a_key(app: TestApp) {
    let mut admin = app.signed_up("api@example.com").await;
    let (mgmt_id, mgmt) =
        dashboard_key(&mut admin, "automation", &["read", "keys:write"], &[]).await;
    let (_, reader) = dashboard_key(&mut admin, "reader", &["keys:read"], &[]).await;
    let (_, plain) = dashboard_key(&mut admin, "plain", &["read"], &[]).await;

    // Reads.
    let (s, list) = call(&app, &mgmt, Method::GET, "/api/v1/keys", None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    assert!(
        list["data"].to_string().find("kw_live_").is_some(),
        "prefixes are shown"
    );
    assert!(!list.to_string().contains(&mgmt), "never a secret");
    let (s, one) = call(
        &app,
        &reader,
        Method::GET,
        &format!("/api/v1/keys/{mgmt_id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["data"]["name"], "automation");
    assert_eq!(one["data"]["scopes"], json!(["read", "keys:write"]));

    // Authentication and scopes.
    let (s, e) = call(&app, &plain, Method::GET, "/api/v1/keys", None).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("insufficient_permissions"))
    );
    let (s, e) = call(&app, "kw_live_nope", Method::GET, "/api/v1/keys", None).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_api_key"))
    );
    let res = reqwest::get(format!("{}/api/v1/keys", app.base))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let new_key = json!({ "name": "from ci", "environment": "live", "scopes": ["read"] });

    // Minting by key is off by default.
    let (s, e) = call(
        &app,
        &mgmt,
        Method::POST,
        "/api/v1/keys",
        Some(new_key.clone()),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("insufficient_permissions")),
        "{e}"
    );
    allow_key_minting(&mut admin, true).await;
    let (s, e) = call(
        &app,
        &reader,
        Method::POST,
        "/api/v1/keys",
        Some(new_key.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "keys:read cannot write: {e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lacks the scope keys:write"),
        "{e}"
    );
    // A key cannot change (pause, un-restrict, rename) or roll a key broader than itself.
    let (broad_id, broad) =
        dashboard_key(&mut admin, "broad", &["read", "write", "admin"], &[]).await;
    for body in [
        json!({ "enabled": false }),
        json!({ "expires_at": null }),
        json!({ "name": "mine now" }),
    ] {
        let (s, e) = call(
            &app,
            &mgmt,
            Method::PATCH,
            &format!("/api/v1/keys/{broad_id}"),
            Some(body),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    }
    let (s, _) = call(
        &app,
        &mgmt,
        Method::POST,
        &format!("/api/v1/keys/{broad_id}/roll"),
        Some(json!({})),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "nor roll it (the successor would hold admin)"
    );
    assert!(
        app.state
            .verifier
            .verify(Some(&broad), &[])
            .await
            .unwrap()
            .valid
    );
    // A key never grants a scope it does not hold.
    let (s, e) = call(
        &app,
        &mgmt,
        Method::POST,
        "/api/v1/keys",
        Some(json!({ "name": "x", "environment": "live", "scopes": ["admin"] })),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    let expires = (time::OffsetDateTime::from_unix_timestamp(app.state.clock.unix()).unwrap()
        + time::Duration::days(30))
    .format(&time::format_description::well_known::Rfc3339)
    .unwrap();
    let (s, created) = call(
        &app,
        &mgmt,
        Method::POST,
        "/api/v1/keys",
        Some(json!({ "name": "from ci", "environment": "live", "scopes": ["read"], "expires_at": expires, "rate_limit": 100, "rate_window_seconds": 60, "metadata": {"plan": "pro"} })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let secret = created["data"]["secret"].as_str().unwrap().to_string();
    let new_id = created["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(created["data"]["rate_limit"], 100);
    assert_eq!(created["data"]["metadata"]["plan"], "pro");
    let v = app.state.verifier.verify(Some(&secret), &[]).await.unwrap();
    assert_eq!(v.key_id(), Some(new_id.as_str()));
    let (_, got) = call(
        &app,
        &mgmt,
        Method::GET,
        &format!("/api/v1/keys/{new_id}"),
        None,
    )
    .await;
    assert!(got["data"].get("secret").is_none(), "shown once");

    // Validation: 422 naming the field; malformed JSON: 400.
    for (body, field) in [
        (
            json!({ "name": "", "environment": "live", "scopes": ["read"] }),
            "name",
        ),
        (
            json!({ "name": "x", "environment": "prod", "scopes": ["read"] }),
            "environment",
        ),
        (
            json!({ "name": "x", "environment": "live", "scopes": [] }),
            "scopes",
        ),
        (
            json!({ "name": "x", "environment": "live", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z" }),
            "expires_at",
        ),
        (
            json!({ "name": "x", "environment": "live", "scopes": ["read"], "ip_allowlist": ["nope"] }),
            "ip_allowlist",
        ),
        (
            json!({ "name": "x", "environment": "live", "scopes": ["read"], "rate_window_seconds": 7 }),
            "rate_window_seconds",
        ),
    ] {
        let (s, e) = call(&app, &mgmt, Method::POST, "/api/v1/keys", Some(body)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {e}");
        assert_eq!(e["error"]["code"], "validation_failed");
        assert!(e["error"]["fields"][field].is_string(), "{field}: {e}");
    }
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/keys", app.base))
        .bearer_auth(&mgmt)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    // Update, pause.
    let (s, upd) = call(
        &app,
        &mgmt,
        Method::PATCH,
        &format!("/api/v1/keys/{new_id}"),
        Some(json!({ "name": "renamed", "rate_limit": null, "enabled": false })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{upd}");
    assert_eq!(upd["data"]["name"], "renamed");
    assert_eq!(upd["data"]["rate_limit"], Value::Null);
    assert_eq!(upd["data"]["status"], "disabled");
    let (_, upd) = call(
        &app,
        &mgmt,
        Method::PATCH,
        &format!("/api/v1/keys/{new_id}"),
        Some(json!({ "ip_allowlist": ["10.0.0.0/8"] })),
    )
    .await;
    assert_eq!(upd["data"]["ip_allowlist"], json!(["10.0.0.0/8"]));
    let (_, upd) = call(
        &app,
        &mgmt,
        Method::PATCH,
        &format!("/api/v1/keys/{new_id}"),
        Some(json!({ "ip_allowlist": [] })),
    )
    .await;
    assert_eq!(upd["data"]["ip_allowlist"], json!([]));
    let (s, _) = call(
        &app,
        &mgmt,
        Method::PATCH,
        &format!("/api/v1/keys/{new_id}"),
        Some(json!({ "scopes": ["read", "admin"] })),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "cannot grant admin");
    call(
        &app,
        &mgmt,
        Method::PATCH,
        &format!("/api/v1/keys/{new_id}"),
        Some(json!({ "enabled": true })),
    )
    .await;

    // Roll with a grace period: both work; the old one until the grace ends.
    let (s, rolled) = call(
        &app,
        &mgmt,
        Method::POST,
        &format!("/api/v1/keys/{new_id}/roll"),
        Some(json!({ "grace": "1h" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{rolled}");
    let new_secret = rolled["data"]["key"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(rolled["data"]["replaces"], new_id.as_str());
    for k in [&secret, &new_secret] {
        assert!(app.state.verifier.verify(Some(k), &[]).await.unwrap().valid);
    }

    // Revoke: once.
    let rolled_id = rolled["data"]["key"]["id"].as_str().unwrap().to_string();
    let (s, r) = call(
        &app,
        &mgmt,
        Method::POST,
        &format!("/api/v1/keys/{rolled_id}/revoke"),
        None,
    )
    .await;
    assert_eq!(
        (s, r["data"]["status"].as_str()),
        (StatusCode::OK, Some("revoked"))
    );
    let (s, _) = call(
        &app,
        &mgmt,
        Method::POST,
        &format!("/api/v1/keys/{rolled_id}/revoke"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        !app.state
            .verifier
            .verify(Some(&new_secret), &[])
            .await
            .unwrap()
            .valid
    );

    // Another organization's key is a 404.
    let mut other = app.signed_up("other-api@example.com").await;
    let (other_id, _) = other.new_key("theirs").await;
    for (m, p) in [
        (Method::GET, format!("/api/v1/keys/{other_id}")),
        (Method::PATCH, format!("/api/v1/keys/{other_id}")),
        (Method::POST, format!("/api/v1/keys/{other_id}/revoke")),
        (Method::POST, format!("/api/v1/keys/{other_id}/roll")),
    ] {
        let (s, _) = call(&app, &mgmt, m, &p, Some(json!({}))).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{p}");
    }

    // Cursor pagination.
    let (_, p1) = call(&app, &mgmt, Method::GET, "/api/v1/keys?limit=2", None).await;
    assert_eq!(p1["data"].as_array().unwrap().len(), 2);
    let cursor = p1["next_cursor"].as_str().unwrap().to_string();
    let (_, p2) = call(
        &app,
        &mgmt,
        Method::GET,
        &format!("/api/v1/keys?limit=2&cursor={cursor}"),
        None,
    )
    .await;
    let ids = |p: &Value| {
        p["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert!(ids(&p2).iter().all(|id| !ids(&p1).contains(id)));
    let (s, _) = call(&app, &mgmt, Method::GET, "/api/v1/keys?limit=0", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, revoked) = call(
        &app,
        &mgmt,
        Method::GET,
        "/api/v1/keys?status=revoked",
        None,
    )
    .await;
    assert_eq!(ids(&revoked), vec![rolled_id.clone()]);

    // Audit events, and their export.
    let (s, events) = call(
        &app,
        &mgmt,
        Method::GET,
        &format!("/api/v1/audit-events?key_id={new_id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let actions: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"key.created")
            && actions.contains(&"key.rolled")
            && actions.contains(&"key.updated"),
        "{actions:?}"
    );
    let created_ev = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "key.created")
        .unwrap();
    assert_eq!(created_ev["details"]["via"]["api_key"], mgmt_id.as_str());
    let (_, page1) = call(
        &app,
        &mgmt,
        Method::GET,
        "/api/v1/audit-events?limit=1",
        None,
    )
    .await;
    let c = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = call(
        &app,
        &mgmt,
        Method::GET,
        &format!("/api/v1/audit-events?limit=1&cursor={c}"),
        None,
    )
    .await;
    assert!(page2["data"][0]["id"].as_i64().unwrap() < page1["data"][0]["id"].as_i64().unwrap());
    let res = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/audit-events/export?format=csv&key_id={new_id}",
            app.base
        ))
        .bearer_auth(&mgmt)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(res.text().await.unwrap().contains("key.rolled"));

    // Switching minting off again stops creation and rolls by key.
    allow_key_minting(&mut admin, false).await;
    let (s, _) = call(&app, &mgmt, Method::POST, "/api/v1/keys", Some(new_key)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &app,
        &mgmt,
        Method::POST,
        &format!("/api/v1/keys/{new_id}/roll"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}
both!(management_with_a_key);

/// A key acts with its creator's role; a rate-limited management key gets 429.
async fn roles_and_limits(app: TestApp) {
    let mut owner = app.signed_up("owner-api@example.com").await;
    owner.get("/orgs/new").await;
    owner.post("/orgs", &[("name", "Team")]).await;
    let (owners_key, _) = owner.new_key("owner's").await;
    let org = {
        owner.get("/settings/api-keys").await;
        owner.org.clone().unwrap()
    };
    let mut dev = app.signed_up("dev-api@example.com").await;
    let dev_user = app
        .store
        .user_by_email("dev-api@example.com")
        .await
        .unwrap()
        .unwrap();
    app.store
        .add_member(
            &org,
            &dev_user.id,
            "developer",
            keyward::store::NewAudit::new("member.added", app.clock.unix()),
        )
        .await
        .unwrap();
    dev.get("/settings/api-keys").await;
    dev.post("/orgs/switch", &[("org_id", &org)]).await;
    let (_, dev_mgmt) = dashboard_key(
        &mut dev,
        "dev automation",
        &["keys:write"],
        &[("rate_limit", "3"), ("rate_window", "minute")],
    )
    .await;

    // A developer's key cannot revoke the owner's key.
    let (s, e) = call(
        &app,
        &dev_mgmt,
        Method::POST,
        &format!("/api/v1/keys/{owners_key}/revoke"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    // Rate limit: 3 per minute, this is the 2nd and 3rd; the 4th is refused.
    call(&app, &dev_mgmt, Method::GET, "/api/v1/keys", None).await;
    call(&app, &dev_mgmt, Method::GET, "/api/v1/keys", None).await;
    let res = reqwest::Client::new()
        .get(format!("{}/api/v1/keys", app.base))
        .bearer_auth(&dev_mgmt)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(
        body["error"]["retry_after"].as_i64().is_some() || body["retry_after"].as_i64().is_some(),
        "{body}"
    );

    // Once its creator leaves the organization, the key manages nothing.
    app.clock.advance(time::Duration::minutes(2));
    app.store
        .remove_member(
            &org,
            &dev_user.id,
            &keyward::store::NewAudit::new("member.removed", app.clock.unix()).org(&org),
        )
        .await
        .unwrap();
    let (s, e) = call(&app, &dev_mgmt, Method::GET, "/api/v1/keys", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
}
both!(roles_and_limits);

/// The dashboard session works too; writes need the CSRF token in a header.
async fn management_with_a_session(app: TestApp) {
    let mut b = app.signed_up("session-api@example.com").await;
    let page = b.get("/settings/api-keys").await;
    let token = page
        .capture(r#"<meta name="csrf-token" content="([^"]+)">"#)
        .expect("the CSRF token in a meta tag");
    let res = b
        .client
        .get(format!("{}/api/v1/keys", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = json!({ "name": "by session", "environment": "test", "scopes": ["read"] });
    let res = b
        .client
        .post(format!("{}/api/v1/keys", app.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let e: Value = res.json().await.unwrap();
    assert_eq!(e["error"]["code"], "csrf_failed");
    let res = b
        .client
        .post(format!("{}/api/v1/keys", app.base))
        .header("x-csrf-token", &token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    assert!(
        created["data"]["secret"]
            .as_str()
            .unwrap()
            .starts_with("kw_test_")
    );
    // Session callers are not limited by the "API keys may create keys" switch.
    assert_eq!(res_status_of_list(&app, &mut b).await, StatusCode::OK);
}
both!(management_with_a_session);

async fn res_status_of_list(app: &TestApp, b: &mut Browser) -> StatusCode {
    b.client
        .get(format!("{}/api/v1/keys", app.base))
        .send()
        .await
        .unwrap()
        .status()
}

/// Every route is in the OpenAPI document, and every documented operation is served.
async fn openapi_covers_every_route(app: TestApp) {
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", app.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let routes = [
        ("get", "/api/v1/keys"),
        ("post", "/api/v1/keys"),
        ("get", "/api/v1/keys/{id}"),
        ("patch", "/api/v1/keys/{id}"),
        ("post", "/api/v1/keys/{id}/roll"),
        ("post", "/api/v1/keys/{id}/revoke"),
        ("post", "/api/v1/keys/{id}/credits"),
        ("delete", "/api/v1/keys/current"),
        ("get", "/api/v1/audit-events"),
        ("get", "/api/v1/audit-events/export"),
        ("post", "/v1/keys/verify"),
        ("get", "/v1/auth"),
        ("post", "/v1/auth"),
        ("get", "/api/v1/orgs/by-external-id/{external_id}"),
        ("put", "/api/v1/orgs/{id}/external-id"),
        ("post", "/api/v1/portal/sessions"),
        ("patch", "/api/v1/portal/users/{external_user_id}"),
        ("post", "/api/v1/keys/import"),
    ];
    for (m, p) in routes {
        assert!(doc["paths"][p][m].is_object(), "{m} {p} is documented");
    }
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|ops| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "patch", "put", "delete"].contains(&k.as_str()))
                .count()
        })
        .sum();
    assert_eq!(
        documented,
        routes.len(),
        "nothing documented that is not a route"
    );
    // Each documented operation exists: without credentials it is refused, not missing.
    for (m, p) in routes {
        let url = format!(
            "{}{}",
            app.base,
            p.replace("{id}", "00000000-0000-0000-0000-000000000000")
                .replace("{external_id}", "cus_1")
        );
        let res = reqwest::Client::new()
            .request(m.to_uppercase().parse().unwrap(), url)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::BAD_REQUEST].contains(&res.status()),
            "{m} {p}: {}",
            res.status()
        );
    }
}
both!(openapi_covers_every_route);
