//! The in-process door: the example service in `examples/protected_api.rs`, guarded by
//! `RequireKey`, verifying keys created in the dashboard on the same database.

use reqwest::StatusCode;
use serde_json::Value;

use crate::{both, helpers::TestApp};

#[allow(dead_code)]
#[path = "../../examples/protected_api.rs"]
mod example;

async fn example_api_is_protected(app: TestApp) {
    let mut b = app.signed_up("inproc@example.com").await;
    let page = b
        .create_key(&[
            ("name", "reader"),
            ("environment", "live"),
            ("preset", "Read-only"),
            ("expiry", "30d"),
        ])
        .await;
    let key = page.new_key().unwrap();

    // The example service opens its own verifier on the same database.
    let verifier = keyward::Verifier::open(
        &app.db_url,
        "kw",
        keyward::config::KeyPepper::new(vec![42u8; 32]),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, example::app(verifier)).await.unwrap() });

    let client = reqwest::Client::new();
    let res = client
        .get(format!("{base}/reports"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["key"], "reader");
    assert!(v["org"].is_string());
    // Missing key, bad key, missing scope.
    let res = client.get(format!("{base}/reports")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "missing_authorization"
    );
    let res = client
        .get(format!("{base}/reports"))
        .bearer_auth("kw_live_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = client
        .post(format!("{base}/reports"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "insufficient_permissions"
    );
    assert_eq!(
        client
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}
both!(example_api_is_protected);
