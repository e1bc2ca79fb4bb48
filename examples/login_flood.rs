//! A sign-in flood for `scripts/login-flood.sh`: wrong passwords for random and real
//! emails, from many source addresses at once, at a fixed offered rate (open loop: the
//! flood does not slow down when the server answers slowly, and does not speed up when
//! it answers quickly). Loopback only: every source address is in 127.0.0.0/8 (all of it
//! is loopback on Linux), and the target must be a loopback URL. Bounded in time and in
//! requests; prints what the server answered.
//!
//! ```text
//! cargo run --release --example login_flood -- http://127.0.0.1:18080 \
//!     [--sources 1000] [--rate 1000] [--seconds 10] [--max-requests 200000] [--email a@b.c]
//!     [--path /login]
//! ```
//!
//! `--path /healthz` sends the same traffic to a trivial endpoint instead: the cost of that
//! many requests as such, to compare with.

// A benchmark tool: a poisoned counter lock may end it.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

struct Args {
    base: String,
    sources: u32,
    /// Sign-in attempts offered per second.
    rate: u32,
    seconds: u64,
    max_requests: u64,
    emails: Vec<String>,
    /// Where the attempts are posted (`/login`; `/healthz` for the comparison).
    path: String,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let base = it
        .next()
        .ok_or("usage: login_flood BASE_URL [--sources N] [--rate N] [--seconds N] [--max-requests N] [--email E]…")?;
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
        rate: 1000,
        seconds: 10,
        max_requests: 200_000,
        emails: Vec::new(),
        path: "/login".into(),
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
            "--rate" => args.rate = num()?.clamp(1, 100_000) as u32,
            "--seconds" => args.seconds = num()?.clamp(1, 600),
            "--max-requests" => args.max_requests = num()?.max(1),
            "--email" => args.emails.push(value),
            "--path" if value.starts_with('/') => args.path = value,
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

/// At most this many attempts in flight; beyond it an attempt is counted as "skipped".
const MAX_IN_FLIGHT: usize = 1024;

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    // One browser-like client per source address, each with its session and CSRF token.
    let mut opening = Vec::new();
    for n in 0..args.sources {
        let base = args.base.clone();
        opening.push(tokio::spawn(async move { open(&base, source(n)).await }));
    }
    let mut clients = Vec::new();
    for o in opening {
        if let Ok(Some(c)) = o.await {
            clients.push(c);
        }
    }
    if clients.is_empty() {
        eprintln!("could not open a single sign-in page at {}", args.base);
        std::process::exit(1);
    }
    let clients = Arc::new(clients);
    let statuses: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent: u64 = 0;
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < deadline && sent < args.max_requests {
        tick.tick().await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            *statuses
                .lock()
                .unwrap()
                .entry("skipped".into())
                .or_default() += 1;
            continue;
        };
        let n = sent as usize;
        sent += 1;
        let (args, clients, statuses) = (args.clone(), clients.clone(), statuses.clone());
        tasks.spawn(async move {
            let (client, csrf) = &clients[n % clients.len()];
            let email = if args.emails.is_empty() || n.is_multiple_of(2) {
                format!("flood-{n}@example.com")
            } else {
                args.emails[n % args.emails.len()].clone()
            };
            let res = client
                .post(format!("{}{}", args.base, args.path))
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
            drop(slot);
        });
        // Reap finished attempts as we go.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let statuses = statuses.lock().unwrap();
    let summary: Vec<String> = statuses.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!(
        "flood: {sent} sign-in attempts offered at {}/s for {:.0} s from {} addresses ({})",
        args.rate,
        started.elapsed().as_secs_f64(),
        clients.len(),
        summary.join(", ")
    );
}
