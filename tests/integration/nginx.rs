//! Forward-auth through a real nginx (Debian's package): `docs/nginx/keyward-forward-auth.conf`
//! in front of a tiny upstream, with Keyward answering the `auth_request` subrequests.
//! Skipped with a notice when nginx is not installed, unless `KEYWARD_REQUIRE_NGINX=1`
//! (set by CI, which installs it).

use std::{path::PathBuf, process::Stdio, time::Duration};

use axum::{Json, Router, http::HeaderMap, routing::get};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{both, helpers::TestApp};

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn forward_auth_through_real_nginx(app: TestApp) {
    let Some(nginx) = nginx_binary() else {
        if std::env::var("KEYWARD_REQUIRE_NGINX").is_ok_and(|v| v == "1") {
            panic!("nginx is required (KEYWARD_REQUIRE_NGINX=1) but not installed");
        }
        eprintln!("SKIPPED: nginx is not installed (apt-get install -y nginx)");
        return;
    };

    // The upstream API echoes what nginx told it about the key.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_port = upstream.local_addr().unwrap().port();
    let api = Router::new().fallback(get(|h: HeaderMap| async move {
        let get = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        Json(json!({
            "reached": true,
            "key_id": get("x-keyward-key-id"),
            "org_id": get("x-keyward-org-id"),
            "org_external_id": get("x-keyward-org-external-id"),
        }))
    }));
    tokio::spawn(async move { axum::serve(upstream, api).await.unwrap() });

    // nginx, configured with the documented file.
    let dir = std::env::temp_dir().join(format!("kw-nginx-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port().await;
    let keyward_addr = app.base.trim_start_matches("http://").to_string();
    let site = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/nginx/keyward-forward-auth.conf"
    ))
    .unwrap()
    .replace("127.0.0.1:8080", &keyward_addr)
    .replace("127.0.0.1:9000", &format!("127.0.0.1:{upstream_port}"))
    .replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"));
    let d = dir.display();
    // One process (`master_process off`): killing it leaves no orphaned worker behind
    // (a worker outlives a killed master, holding the test's inherited file descriptors).
    let conf = format!(
        "worker_processes 1;\nmaster_process off;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\nevents {{ worker_connections 64; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n{site}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut child = tokio::process::Command::new(nginx)
        .args([
            "-p",
            &dir.display().to_string(),
            "-c",
            &dir.join("nginx.conf").display().to_string(),
            "-g",
            "daemon off;",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if client.get(format!("{base}/")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        up,
        "nginx did not start: {}",
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );

    let mut b = app.signed_up("nginx@example.com").await;
    let good = b
        .create_key(&[
            ("name", "good"),
            ("environment", "live"),
            ("preset", "Read-only"),
            ("expiry", "30d"),
        ])
        .await;
    let (good_id, good_key) = (good.key_id(), good.new_key().unwrap());
    // The organization is the team's customer `cus_nginx`.
    let user = app
        .store
        .user_by_email("nginx@example.com")
        .await
        .unwrap()
        .unwrap();
    let org_id = app.store.memberships(&user.id).await.unwrap()[0]
        .org_id
        .clone();
    keyward::orgs::external::set(
        &app.store,
        &org_id,
        Some("cus_nginx"),
        keyward::store::NewAudit::new(keyward::audit::AuditAction::OrgExternalIdChanged, 0),
    )
    .await
    .unwrap();
    let limited = b
        .create_key(&[
            ("name", "limited"),
            ("environment", "live"),
            ("preset", "Read-only"),
            ("expiry", "30d"),
            ("rate_limit", "1"),
            ("rate_window", "hour"),
        ])
        .await
        .new_key()
        .unwrap();

    // No key → 401 with the reference body.
    let res = client.get(format!("{base}/things")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "missing_authorization"
    );

    // A good key → the upstream is reached and told the key id.
    let res = client
        .get(format!("{base}/things"))
        .bearer_auth(&good_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["reached"], true);
    assert_eq!(v["key_id"], good_id.as_str());
    assert_eq!(v["org_external_id"], "cus_nginx", "passed upstream: {v}");

    // A key without limits: no rate-limit headers.
    let res = client
        .get(format!("{base}/things"))
        .bearer_auth(&good_key)
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("x-ratelimit-limit").is_none());

    // The client sees its limit through nginx on success…
    let res = client
        .get(format!("{base}/x"))
        .bearer_auth(&limited)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-ratelimit-limit"], "1");
    assert_eq!(res.headers()["x-ratelimit-remaining"], "0");
    assert!(res.headers().contains_key("x-ratelimit-reset"));
    // …and over the limit → 429 with Retry-After.
    let res = client
        .get(format!("{base}/x"))
        .bearer_auth(&limited)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "3600");
    assert_eq!(res.headers()["x-ratelimit-remaining"], "0");
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["retry_after"], 3600);

    // Revoked → 401 invalid_api_key, immediately.
    b.get(&format!("/settings/api-keys/{good_id}")).await;
    b.post(&format!("/settings/api-keys/{good_id}/revoke"), &[])
        .await;
    let res = client
        .get(format!("{base}/things"))
        .bearer_auth(&good_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_api_key"
    );

    child.start_kill().ok();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(dir);
}
both!(forward_auth_through_real_nginx);
