//! How fast the key list renders for an organization with 1,000 keys (the UI issue's
//! budget: under 5 ms server-side). Prints the figures the README quotes:
//! `cargo test --test integration list_of_1000_keys -- --nocapture`.

use std::time::{Duration, Instant};

use keyward::{
    clock::Clock,
    store::{KeyLimits, NewAudit, NewKey},
};
use reqwest::StatusCode;

use crate::helpers::{Backend, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_of_1000_keys() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let mut b = app.signed_up("many@example.com").await;
    b.get("/settings/api-keys").await;
    let org = app
        .store
        .memberships(
            &app.store
                .user_by_email("many@example.com")
                .await
                .unwrap()
                .unwrap()
                .id,
        )
        .await
        .unwrap()[0]
        .org_id
        .clone();
    let now = app.clock.unix();
    for i in 0..1000 {
        let id = keyward::store::new_id();
        let key = NewKey {
            id: id.clone(),
            org_id: org.clone(),
            created_by: None,
            name: format!("service {i:04}"),
            description: String::new(),
            environment: if i % 3 == 0 { "test" } else { "live" }.into(),
            key_hash: uuid::Uuid::new_v4().as_bytes().repeat(2),
            display_prefix: "kw_live_abcd".into(),
            last4: format!("{:04}", i),
            scopes: "read write".into(),
            limits: KeyLimits::default(),
            created_at: now - i,
            expires_at: (i % 2 == 0).then_some(now + 86_400 * (i % 60)),
            rolled_from: None,
            credits: None,
        };
        let audit = NewAudit::new("key.created", now)
            .org(&org)
            .target("api_key", &id, &key.name);
        app.store.insert_key(&key, &audit).await.unwrap();
    }
    let mut times = Vec::new();
    for path in [
        "/settings/api-keys",
        "/settings/api-keys?q=service+09",
        "/settings/api-keys?page=40",
    ] {
        for _ in 0..20 {
            let t = Instant::now();
            let page = b.get(path).await;
            times.push((path, t.elapsed()));
            assert_eq!(page.status, StatusCode::OK);
        }
    }
    for path in [
        "/settings/api-keys",
        "/settings/api-keys?q=service+09",
        "/settings/api-keys?page=40",
    ] {
        let mut t: Vec<Duration> = times
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, d)| *d)
            .collect();
        t.sort();
        println!(
            "GET {path} with 1,000 keys: median {:.2} ms, p90 {:.2} ms (whole request over loopback)",
            t[t.len() / 2].as_secs_f64() * 1e3,
            t[t.len() * 9 / 10].as_secs_f64() * 1e3
        );
        // A loose bound that also holds for unoptimized test builds.
        assert!(t[t.len() / 2] < Duration::from_millis(250), "{path}");
    }
    let last = b.get("/settings/api-keys?page=40").await;
    assert!(
        last.shows("service 0999") || last.shows("service 0975"),
        "the last page lists the oldest keys"
    );
}
