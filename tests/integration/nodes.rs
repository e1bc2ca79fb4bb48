//! Several nodes: three `keyward` OS processes on one Postgres database and one Redis.
//! Rate limits hold across them (within the published bound), revocation is seen
//! everywhere within a second, and a Redis outage degrades rate limits to each node's own
//! bucket (or 503 with `KEYWARD_REDIS_FAILURE=closed`) and heals without a restart.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine;
use serde_json::{Value, json};

use crate::{
    api::dashboard_key as key_with,
    helpers::{Backend, TestApp},
};

const VERIFIER_TOKEN: &str = "nodes-test-verifier-token";

/// Whether Redis (at 6379, and `redis-server` for the test's own) is here; without it the
/// tests are skipped with a notice, unless `KEYWARD_REQUIRE_REDIS=1` (CI sets it).
fn redis_here() -> bool {
    let here = std::net::TcpStream::connect(("127.0.0.1", 6379)).is_ok()
        && Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !here {
        assert!(
            !std::env::var("KEYWARD_REQUIRE_REDIS").is_ok_and(|v| v == "1"),
            "Redis is required (KEYWARD_REQUIRE_REDIS=1) at 127.0.0.1:6379, with redis-server installed"
        );
        eprintln!(
            "SKIPPED: Redis is not running at 127.0.0.1:6379 (apt-get install -y redis-server)"
        );
    }
    here
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `redis-server` of the test's own (nothing on disk), so that it can be killed.
fn own_redis(port: u16) -> Proc {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (apt-get install -y redis-server)");
    // Ready when it accepts connections.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

struct Node {
    _proc: Proc,
    base: String,
}

/// Starts a `keyward` process on the test app's database, with the same pepper.
async fn node(app: &TestApp, redis: &str, prefix: &str, failure: &str) -> Node {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("kw-node-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let pepper =
        base64::engine::general_purpose::STANDARD.encode(app.state.config.key_pepper.expose());
    let child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .env("DATABASE_URL", &app.db_url)
        .env("KEYWARD_SECRETS_FILE", dir.join("secrets"))
        .env("KEYWARD_KEY_PEPPER", pepper)
        .env("KEYWARD_VERIFIER_TOKENS", VERIFIER_TOKEN)
        .env("KEYWARD_BIND", format!("127.0.0.1:{port}"))
        .env("KEYWARD_REDIS_URL", redis)
        .env("KEYWARD_REDIS_PREFIX", prefix)
        .env("KEYWARD_REDIS_FAILURE", failure)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "keyward node did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Node {
        _proc: Proc(child),
        base,
    }
}

/// Verifies `key` at `node`: (HTTP status, body).
async fn verify(client: &reqwest::Client, node: &str, key: &str) -> (u16, Value) {
    let res = client
        .post(format!("{node}/v1/keys/verify"))
        .bearer_auth(VERIFIER_TOKEN)
        .json(&json!({ "key": key }))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Sends `n` verifications of `key`, 24 at a time, round-robin over the nodes; returns
/// how many were valid and every status seen.
async fn load(nodes: &[String], key: &str, n: usize) -> (usize, Vec<u16>) {
    let client = reqwest::Client::new();
    let mut valid = 0;
    let mut statuses = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(24) {
        let answers = futures_util::future::join_all(chunk.iter().map(|i| {
            let node = nodes[i % nodes.len()].clone();
            let client = client.clone();
            let key = key.to_string();
            async move { verify(&client, &node, &key).await }
        }))
        .await;
        for (status, body) in answers {
            statuses.push(status);
            if body["valid"] == true {
                valid += 1;
            }
        }
    }
    (valid, statuses)
}

/// The published bound: a bucket of `burst` refilled at `rate`/s, spent for `secs`, plus one
/// lease TTL of refill.
fn bound(burst: usize, per_minute: usize, secs: f64) -> usize {
    burst + (per_minute as f64 / 60.0 * (secs + keyward::verify::shared::LEASE_TTL)).ceil() as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_rate_limits_and_see_revocations() {
    if !redis_here() {
        return;
    }
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    // The machine's Redis, with a prefix of this test's own.
    let prefix = format!("kwtest:{}:", uuid::Uuid::new_v4().simple());
    let redis = "redis://127.0.0.1:6379";
    let mut b = app.signed_up("nodes@example.com").await;
    let (limited_id, limited) = key_with(
        &mut b,
        "limited",
        &["read"],
        &[("rate_limit", "60"), ("rate_window", "minute")],
    )
    .await;
    let (revoked_id, doomed) = key_with(&mut b, "doomed", &["read"], &[]).await;
    let (_, quota) = key_with(&mut b, "quota", &["read"], &[("daily_quota", "1000")]).await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(node(&app, redis, &prefix, "local").await);
    }
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();

    // 300 verifications spread over three nodes: at most the limit plus the bound, not
    // three times the limit (each node alone would allow 60).
    let started = Instant::now();
    let (valid, statuses) = load(&bases, &limited, 300).await;
    let secs = started.elapsed().as_secs_f64();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let most = bound(60, 60, secs);
    assert!(
        valid <= most,
        "{valid} passed in {secs:.1} s over three nodes; the bound is {most}"
    );
    assert!(valid >= 55, "only {valid} of the 60 passed");
    eprintln!(
        "three nodes, limit 60/min + burst 60: {valid} of 300 passed in {secs:.2} s (bound {most})"
    );

    // Raising the exhausted key's limit applies at once on every node (the bucket stored
    // under the old limit does not hold it back).
    b.get(&format!("/settings/api-keys/{limited_id}")).await;
    let res = b
        .post(
            &format!("/settings/api-keys/{limited_id}"),
            &[
                ("name", "limited"),
                ("scopes", "read"),
                ("expiry", "keep"),
                ("rate_limit", "100000"),
                ("rate_window", "minute"),
            ],
        )
        .await;
    assert_eq!(res.status, reqwest::StatusCode::SEE_OTHER, "{}", res.body);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::new();
    for n in &bases {
        let (_, body) = verify(&client, n, &limited).await;
        assert_eq!(body["valid"], true, "{n}: {body}");
    }

    // A daily quota is one counter for all nodes: 1,500 verifications pass 1,000, not 3,000.
    let (valid, statuses) = load(&bases, &quota, 1500).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(valid <= 1000, "{valid} passed a daily quota of 1,000");
    assert!(valid >= 990, "only {valid} of the quota's 1,000 passed");
    eprintln!("three nodes, daily quota 1,000: {valid} of 1,500 passed");

    // Credits are exact across the three processes: 60 simultaneous verifications against
    // 20 credits pass exactly 20.
    let (credited_id, credited) = key_with(&mut b, "credited", &["read"], &[]).await;
    b.get(&format!("/settings/api-keys/{credited_id}")).await;
    let res = b
        .post(
            &format!("/settings/api-keys/{credited_id}/credits"),
            &[
                ("remaining", "20"),
                ("refill_interval", ""),
                ("refill_amount", ""),
                ("refill_day", ""),
                ("low_threshold", ""),
            ],
        )
        .await;
    assert_eq!(res.status, reqwest::StatusCode::SEE_OTHER, "{}", res.body);
    let answers = futures_util::future::join_all((0..60).map(|i| {
        let node = bases[i % bases.len()].clone();
        let client = client.clone();
        let key = credited.clone();
        async move { verify(&client, &node, &key).await.1 }
    }))
    .await;
    let passed = answers.iter().filter(|v| v["valid"] == true).count();
    let exhausted = answers
        .iter()
        .filter(|v| v["code"] == "USAGE_EXCEEDED")
        .count();
    assert_eq!((passed, exhausted), (20, 40), "{answers:?}");

    // A revocation on one node is seen by every node within a second.
    for n in &bases {
        assert_eq!(verify(&client, n, &doomed).await.1["valid"], true);
    }
    b.get(&format!("/settings/api-keys/{revoked_id}")).await;
    let res = b
        .post(&format!("/settings/api-keys/{revoked_id}/revoke"), &[])
        .await;
    assert_eq!(res.status, reqwest::StatusCode::SEE_OTHER, "{}", res.body);
    let revoked_at = Instant::now();
    for n in &bases {
        loop {
            let (_, body) = verify(&client, n, &doomed).await;
            if body["code"] == "REVOKED" {
                break;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "{n} still answers {body} a second after the revocation"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_degrades_to_local_limits_and_heals() {
    if !redis_here() {
        return;
    }
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let port = free_port();
    let mut redis = Some(own_redis(port));
    let url = format!("redis://127.0.0.1:{port}");
    let prefix = "outage:";
    let mut b = app.signed_up("outage@example.com").await;
    let (_, first) = key_with(
        &mut b,
        "first",
        &["read"],
        &[("rate_limit", "30"), ("rate_window", "minute")],
    )
    .await;
    let (_, second) = key_with(
        &mut b,
        "second",
        &["read"],
        &[("rate_limit", "30"), ("rate_window", "minute")],
    )
    .await;
    let (_, unlimited) = key_with(&mut b, "unlimited", &["read"], &[]).await;
    let (_, quota) = key_with(&mut b, "quota", &["read"], &[("daily_quota", "1000")]).await;
    let local = [
        node(&app, &url, prefix, "local").await,
        node(&app, &url, prefix, "local").await,
    ];
    let closed = node(&app, &url, prefix, "closed").await;
    let bases: Vec<String> = local.iter().map(|n| n.base.clone()).collect();
    let client = reqwest::Client::new();
    assert_eq!(verify(&client, &bases[0], &first).await.1["valid"], true);

    // Redis goes away mid-run.
    drop(redis.take());
    // Rate limits fall back to each node's own bucket: every answer is a decision (no
    // error, no crash), and each node lets its own 30 through.
    let (valid, statuses) = load(&bases, &first, 100).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        valid > 30,
        "each node enforces its own bucket: {valid} passed"
    );
    // (Plus what was left of a lease taken before the outage.)
    let lease =
        keyward::verify::shared::SharedLimits::lease_size(keyward::verify::ratelimit::Limit {
            limit: 30,
            window_secs: 60,
            burst: 30,
        }) as usize;
    assert!(
        valid <= 60 + lease,
        "two local buckets of 30: {valid} passed"
    );
    // Quotas fail closed by default (KEYWARD_REDIS_QUOTA_FAILURE=closed): 503, not a guess.
    let (status, body) = verify(&client, &bases[0], &quota).await;
    assert_eq!(status, 503, "{body}");
    // The node that fails closed refuses rate-limited keys (503), not the others.
    let (status, body) = verify(&client, &closed.base, &first).await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = verify(&client, &closed.base, &unlimited).await;
    assert_eq!((status, &body["valid"]), (200, &json!(true)), "{body}");

    // Redis comes back: limits are shared again, without a restart.
    redis = Some(own_redis(port));
    tokio::time::sleep(keyward::verify::shared::RETRY_AFTER_FAILURE + Duration::from_millis(500))
        .await;
    let mut all = bases.clone();
    all.push(closed.base.clone());
    // Wake every node's connection before measuring.
    for n in &all {
        verify(&client, n, &unlimited).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = verify(&client, &closed.base, &second).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the closed node never healed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = Instant::now();
    let (valid, statuses) = load(&all, &second, 150).await;
    let secs = started.elapsed().as_secs_f64();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let most = bound(30, 30, secs);
    assert!(
        valid <= most,
        "{valid} passed after healing; the bound is {most}"
    );
    drop(redis);
}

/// Offers `rate` verifications per second of `key` for `secs`, round-robin over `nodes`;
/// returns (offered, valid).
async fn offer(nodes: &[String], key: &str, rate: u64, secs: u64) -> (u64, u64) {
    let client = reqwest::Client::new();
    let total = rate * secs;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tick.tick().await;
        let node = nodes[i as usize % nodes.len()].clone();
        let client = client.clone();
        let key = key.to_string();
        tasks.push(tokio::spawn(async move {
            verify(&client, &node, &key).await.1["valid"] == true
        }));
    }
    let mut valid = 0;
    for t in tasks {
        if t.await.unwrap() {
            valid += 1;
        }
    }
    (total, valid)
}

/// The accuracy table the README publishes (by hand: `scripts/accuracy.sh`): a key limited
/// to 6,000/minute (100/s, burst 100), offered 100 %, 200 % and 1,000 % of that for
/// `ACCURACY_SECS` (default 10) seconds, spread over 1, 3 and 5 nodes, with Redis and
/// without. "Allowed by the limit" is min(offered, burst + rate × duration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by scripts/accuracy.sh"]
async fn accuracy_table() {
    if !redis_here() {
        return;
    }
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let secs: u64 = std::env::var("ACCURACY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let prefix = format!("kwacc:{}:", uuid::Uuid::new_v4().simple());
    let mut with = Vec::new();
    let mut without = Vec::new();
    for _ in 0..5 {
        with.push(node(&app, "redis://127.0.0.1:6379", &prefix, "local").await);
        without.push(node(&app, "", &prefix, "local").await);
    }
    let mut b = app.signed_up("accuracy@example.com").await;
    let (rate, burst) = (100u64, 100u64);
    println!(
        "\n| nodes | offered | offered requests | allowed by the limit | allowed, Redis | overshoot, Redis | allowed, no Redis | overshoot, no Redis |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in [1usize, 3, 5] {
        for load in [100u64, 200, 1000] {
            let mut row = Vec::new();
            for nodes in [&with, &without] {
                let (_, key) = key_with(
                    &mut b,
                    &format!("acc-{n}-{load}-{}", row.len()),
                    &["read"],
                    &[
                        ("rate_limit", "6000"),
                        ("rate_window", "minute"),
                        ("rate_burst", "100"),
                    ],
                )
                .await;
                let bases: Vec<String> = nodes[..n].iter().map(|x| x.base.clone()).collect();
                row.push(offer(&bases, &key, rate * load / 100, secs).await);
            }
            let offered = row[0].0;
            let limit = offered.min(burst + rate * secs);
            let pct = |v: u64| format!("{:+.1} %", (v as f64 / limit as f64 - 1.0) * 100.0);
            println!(
                "| {n} | {load} % | {offered} | {limit} | {} | {} | {} | {} |",
                row[0].1,
                pct(row[0].1),
                row[1].1,
                pct(row[1].1)
            );
        }
    }
}
