#![allow(clippy::unwrap_used)]
//! `cargo bench`: the cost of verification in-process.
//! - `token/parse_and_hash`: checksum + HMAC-SHA-256, the floor of every verification;
//! - `verify/cached`: the whole pipeline for a cached key (target < 5 µs);
//! - `verify/uncached_sqlite`: one indexed SQLite lookup by hash, no cache.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use keyward::{
    Store, Verifier,
    clock::SystemClock,
    config::KeyPepper,
    keys::token::{Environment, PlainKey},
    store::{KeyLimits, NewAudit, NewKey, NewUser},
};

fn pepper() -> KeyPepper {
    KeyPepper::new(vec![42u8; 32])
}

async fn setup() -> (Verifier, Store, String, Vec<u8>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("kw-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::connect(&format!("sqlite://{}/bench.db", dir.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let user = NewUser {
        email: "bench@example.com".into(),
        name: String::new(),
        password_hash: None,
        email_verified_at: None,
    };
    let (user, org) = store
        .create_user(&user, "bench", 0, NewAudit::new("user.signed_up", 0))
        .await
        .unwrap();
    let key = PlainKey::generate("kw", Environment::Live).unwrap();
    let hash = key.hash(&pepper()).0.to_vec();
    let new = NewKey {
        id: keyward::store::new_id(),
        org_id: org,
        created_by: Some(user.id),
        name: "bench".into(),
        description: String::new(),
        environment: "live".into(),
        key_hash: hash.clone(),
        display_prefix: key.display_prefix().into(),
        last4: key.last4().into(),
        scopes: "read write".into(),
        limits: KeyLimits::default(),
        created_at: 0,
        expires_at: None,
        rolled_from: None,
        credits: None,
    };
    store
        .insert_key(&new, &NewAudit::new("key.created", 0))
        .await
        .unwrap();
    let verifier = Verifier::new(store.clone(), "kw".into(), pepper(), Arc::new(SystemClock));
    (verifier, store, key.expose().to_string(), hash, dir)
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (verifier, store, key, hash, dir) = rt.block_on(setup());
    let p = pepper();
    let scopes = vec!["read".to_string()];

    c.bench_function("token/parse_and_hash", |b| {
        b.iter(|| {
            let (k, _) = PlainKey::parse("kw", std::hint::black_box(&key)).unwrap();
            k.hash(&p)
        })
    });
    rt.block_on(verifier.verify(Some(&key), &scopes)).unwrap();
    c.bench_function("verify/cached", |b| {
        b.to_async(&rt).iter(|| async {
            let v = verifier
                .verify(Some(std::hint::black_box(&key)), &scopes)
                .await
                .unwrap();
            assert!(v.valid);
        })
    });
    c.bench_function("verify/uncached_sqlite", |b| {
        b.to_async(&rt).iter(|| async {
            store
                .key_by_hash(std::hint::black_box(&hash))
                .await
                .unwrap()
                .unwrap()
        })
    });
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(verify, benches);
criterion_main!(verify);
