//! A sign-in flood for `scripts/login-flood.sh`: wrong passwords for random and real
//! emails, from many source addresses at once. Loopback only: every source address is in
//! 127.0.0.0/8 (all of it is loopback on Linux), and the target must be a loopback URL.
//! Bounded in time and in requests; prints what the server answered.
//!
//! ```text
//! cargo run --release --example login_flood -- http://127.0.0.1:18080 \
//!     [--sources 1000] [--connections 128] [--seconds 10] [--max-requests 200000] [--email a@b.c]
//! ```

// A benchmark tool: a poisoned counter lock may end it.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

struct Args {
    base: String,
    sources: u32,
    connections: u32,
    seconds: u64,
    max_requests: u64,
    emails: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let base = it
        .next()
        .ok_or("usage: login_flood BASE_URL [--sources N] [--connections N] [--seconds N] [--max-requests N] [--email E]…")?;
    let url = reqwest::Url::parse(&base).map_err(|e| format!("{base}: {e}"))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!(
            "{base} is not a loopback address: this tool only floods 127.0.0.0/8"
        ));
    }
    let mut args = Args {
        base: base.trim_end_matches('/').to_string(),
        sources: 1000,
        connections: 128,
        seconds: 10,
        max_requests: 200_000,
        emails: Vec::new(),
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: {value} is not a number"))
        };
        match flag.as_str() {
            "--sources" => args.sources = num()?.clamp(1, 60_000) as u32,
            "--connections" => args.connections = num()?.clamp(1, 4096) as u32,
            "--seconds" => args.seconds = num()?.clamp(1, 600),
            "--max-requests" => args.max_requests = num()?.max(1),
            "--email" => args.emails.push(value),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// The `n`th source address: 127.1.0.1, 127.1.0.2, … (never 127.0.0.1, the measurer's).
fn source(n: u32) -> IpAddr {
    let n = n + 1;
    IpAddr::V4(Ipv4Addr::new(
        127,
        1 + (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8,
    ))
}

/// A browser-like client from one source address: its session cookie and CSRF token.
async fn open(base: &str, from: IpAddr) -> Option<(reqwest::Client, String)> {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .local_address(from)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
    let page = client
        .get(format!("{base}/login"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let start = page.find(r#"name="csrf" value=""#)? + r#"name="csrf" value=""#.len();
    let csrf = page[start..].split('"').next()?.to_string();
    Some((client, csrf))
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let sent = Arc::new(AtomicU64::new(0));
    let statuses: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (args, sent, statuses) = (args.clone(), sent.clone(), statuses.clone());
        tasks.push(tokio::spawn(async move {
            // Each connection walks through its share of the source addresses.
            let mut n = c;
            while Instant::now() < deadline {
                let from = source(n % args.sources);
                n += args.connections;
                let Some((client, csrf)) = open(&args.base, from).await else {
                    *statuses
                        .lock()
                        .unwrap()
                        .entry("connect-error".into())
                        .or_default() += 1;
                    continue;
                };
                // A few attempts from this address, then the next one.
                for i in 0..5u64 {
                    if Instant::now() >= deadline
                        || sent.fetch_add(1, Ordering::Relaxed) >= args.max_requests
                    {
                        return;
                    }
                    let email = if args.emails.is_empty() || i % 2 == 0 {
                        format!(
                            "flood-{}-{i}@example.com",
                            u32::from(match from {
                                IpAddr::V4(v4) => v4,
                                IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
                            })
                        )
                    } else {
                        args.emails[(n as usize + i as usize) % args.emails.len()].clone()
                    };
                    let res = client
                        .post(format!("{}/login", args.base))
                        .form(&[
                            ("csrf", csrf.as_str()),
                            ("email", email.as_str()),
                            ("password", "not the password, a flood"),
                        ])
                        .send()
                        .await;
                    let key = match res {
                        Ok(r) => r.status().as_u16().to_string(),
                        Err(_) => "error".into(),
                    };
                    *statuses.lock().unwrap().entry(key).or_default() += 1;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let statuses = statuses.lock().unwrap();
    let total: u64 = statuses.values().sum();
    let summary: Vec<String> = statuses.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!(
        "flood: {total} sign-in requests in {} s from up to {} addresses ({})",
        args.seconds,
        args.sources,
        summary.join(", ")
    );
}
