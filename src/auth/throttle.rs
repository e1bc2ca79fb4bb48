//! Brute-force defence for the dashboard's front door (SECURITY.md B.8, B.11, B.12):
//!
//! - **Per account**: consecutive failures are counted in the store; after
//!   [`FREE_FAILURES`] each failure pauses the account's sign-in for a growing delay (30 s
//!   doubling up to 1 h), and after [`DISABLE_AFTER`] the password stops working until it
//!   is reset. A success resets the count. A refusal during a pause runs the same argon2
//!   work and shows the same page as a wrong password.
//! - **Device cookies** (OWASP "Slow Down Online Guessing Attacks with Device Cookies"): a
//!   browser that signed in to an account before holds a random token; with it, the
//!   browser has its own failure count for that account, so an attacker's failures from
//!   elsewhere never lock the real user out of the browser they already use.
//! - **Per source**: one attempt budget per IPv4 address / IPv6 /64 for sign-in, sign-up,
//!   password reset and invitations (spraying many accounts from one address is stopped
//!   too). The address comes from the trusted-proxy header only ([`crate::net::client_ip`]).
//! - **Per node, one attempt per account at a time**: attempts on the same email are
//!   serialized while their failure is recorded, so a burst cannot run more guesses than
//!   the count allows.
//!
//! The budgets are per node (memory); the account counts are in the database and so are
//! shared by every node.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{HeaderMap, HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};
use tower_sessions::cookie::{Cookie, SameSite};

use crate::{audit::ClientMeta, error::AppError, state::AppState, store::FailureRules};

/// Failures in a row that cost nothing.
pub const FREE_FAILURES: i64 = 5;
/// Failures in a row after which the password is disabled until it is reset (NIST SP
/// 800-63B-4 §3.2.2: at most 100).
pub const DISABLE_AFTER: i64 = 100;
/// The longest pause between two attempts.
pub const MAX_DELAY_SECS: i64 = 3600;
/// At most one `auth.sign_in_failed` row per account per window, carrying the count.
pub const AUDIT_WINDOW_SECS: i64 = 15 * 60;

/// How long sign-in pauses after `failures` consecutive failures: nothing for the first
/// [`FREE_FAILURES`], then 30 s, 1 min, 2 min, … up to [`MAX_DELAY_SECS`].
pub fn delay_after(failures: i64) -> i64 {
    if failures <= FREE_FAILURES {
        return 0;
    }
    let doublings = u32::try_from(failures - FREE_FAILURES - 1).unwrap_or(u32::MAX);
    30i64
        .checked_shl(doublings.min(16))
        .map_or(MAX_DELAY_SECS, |d| d.min(MAX_DELAY_SECS))
}

/// The rules the store applies when it records a failure.
pub const RULES: FailureRules = FailureRules {
    delay_secs: delay_after,
    disable_after: DISABLE_AFTER,
    audit_window_secs: AUDIT_WINDOW_SECS,
};

/// "2 minutes", "an hour": for messages.
pub fn describe_wait(secs: u64) -> String {
    match secs {
        0..=59 => format!("{} second{}", secs.max(1), if secs == 1 { "" } else { "s" }),
        60..=3599 => {
            let m = secs.div_ceil(60);
            format!("{m} minute{}", if m == 1 { "" } else { "s" })
        }
        _ => {
            let h = secs.div_ceil(3600);
            format!("{h} hour{}", if h == 1 { "" } else { "s" })
        }
    }
}

// ------------------------------------------------------------------ per source

/// The actions with a per-source budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceAction {
    SignIn,
    SignUp,
    PasswordReset,
    Invitation,
}

impl SourceAction {
    /// (burst, seconds per further attempt).
    const fn budget(self) -> (u32, f64) {
        match self {
            // 20 at once, then one every 30 s (120 an hour).
            SourceAction::SignIn => (20, 30.0),
            // 5 at once, then one every 5 minutes.
            SourceAction::SignUp | SourceAction::PasswordReset => (5, 300.0),
            // Opening and accepting invitation links: 20 at once, then one a minute.
            SourceAction::Invitation => (20, 60.0),
        }
    }
}

/// Where attempts come from, for budgets: the IPv4 address, or the IPv6 /64 (one
/// customer's network; anyone holding a /64 can use all of it).
pub fn source_of(ip: Option<IpAddr>) -> String {
    match ip {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        None => "unknown".into(),
    }
}

/// A generic cell rate algorithm state: the theoretical arrival time of the next attempt.
#[derive(Debug, Default)]
struct Gcra {
    tat: f64,
}

impl Gcra {
    /// Spends one attempt at `now` (seconds); `Err(seconds to wait)` when the budget is
    /// spent (and then nothing is spent).
    fn spend(&mut self, now: f64, burst: u32, interval: f64) -> Result<(), u64> {
        let tolerance = f64::from(burst.saturating_sub(1)) * interval;
        let tat = self.tat.max(now);
        if tat - now > tolerance {
            let wait = (tat - now - tolerance).ceil();
            // Whole seconds, at least one.
            return Err(if wait >= 1.0 { wait as u64 } else { 1 });
        }
        self.tat = tat + interval;
        Ok(())
    }
}

/// The in-memory part of the throttle (one per node, in `AppState`).
pub struct Throttle {
    /// Multiplies each budget's burst and divides its interval.
    scale: f64,
    sources: moka::sync::Cache<(SourceAction, String), Arc<Mutex<Gcra>>>,
    turns: moka::sync::Cache<String, Arc<tokio::sync::Mutex<()>>>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle").finish_non_exhaustive()
    }
}

/// How long an attempt waits for the previous attempt on the same account.
const TURN_WAIT: Duration = Duration::from_secs(5);

impl Throttle {
    pub fn new(scale: f64) -> Self {
        Self {
            scale,
            // Bounded: a flood of addresses evicts idle entries, never grows memory
            // without end. An idle entry is a full budget anyway.
            sources: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            turns: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        }
    }

    /// Spends one attempt of `source`'s budget for `action` at `now` (Unix seconds, with
    /// fractions); `Err(AppError::TooManyAttempts)` when it is spent.
    pub fn spend(
        &self,
        action: SourceAction,
        source: &str,
        now: f64,
    ) -> Result<(), crate::error::AppError> {
        let (burst, interval) = action.budget();
        let burst = (f64::from(burst) * self.scale)
            .round()
            .clamp(1.0, f64::from(u32::MAX)) as u32;
        let interval = interval / self.scale;
        let cell = self
            .sources
            .get_with((action, source.to_string()), Default::default);
        let result = cell
            .lock()
            .map_err(|_| crate::error::AppError::internal(anyhow::anyhow!("throttle poisoned")))?
            .spend(now, burst, interval);
        result.map_err(|retry_after| {
            tracing::warn!(event = "auth.throttled", action = ?action, source = %source, retry_after, "per-source budget spent");
            crate::error::AppError::TooManyAttempts { retry_after }
        })
    }

    /// Waits for this node's previous attempt on `account` (a normalized email, or email
    /// and device) to finish, and holds the turn until the returned guard is dropped.
    pub async fn turn(
        &self,
        account: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, crate::error::AppError> {
        let lock = self.turns.get_with(account.to_string(), Default::default);
        tokio::time::timeout(TURN_WAIT, lock.lock_owned())
            .await
            .map_err(|_| crate::error::AppError::Busy)
    }
}

/// Which budget a request spends, and whether it needs the password hasher: the one list
/// of the routes behind the front door.
fn front_door(method: &Method, path: &str) -> Option<(SourceAction, bool)> {
    let post = *method == Method::POST;
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match (post, segments.as_slice()) {
        (true, ["login"]) => Some((SourceAction::SignIn, true)),
        (true, ["login", "passkey"]) => Some((SourceAction::SignIn, false)),
        // Second-step codes and step-up confirmations are guesses like passwords.
        (true, ["login", "two-step"]) => Some((SourceAction::SignIn, false)),
        (true, ["settings", "account", "confirm"]) => Some((SourceAction::SignIn, true)),
        (true, ["settings", "account", "password"]) => Some((SourceAction::SignIn, true)),
        (true, ["signup"]) => Some((SourceAction::SignUp, true)),
        (true, ["forgot-password"]) => Some((SourceAction::PasswordReset, false)),
        (true, ["reset-password", _]) => Some((SourceAction::PasswordReset, true)),
        (false, ["invitations", _]) | (true, ["invitations", _, "accept"]) => {
            Some((SourceAction::Invitation, false))
        }
        _ => None,
    }
}

/// Middleware in front of the sign-in, sign-up, reset and invitation routes, before the
/// session is read or a form parsed: spends the source's budget (`429` when spent) and,
/// for routes that hash a password, answers a quick `503` when the hasher has no room.
/// Refusals here cost no database access, so a flood of them stays cheap.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some((action, hashes)) = front_door(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    // A form posted from another site is refused by the CSRF check behind this guard; it
    // must not spend the budget of the visitor's address on the way (a page could
    // otherwise lock a whole office out of signing in).
    if req.method() == Method::POST
        && !crate::auth::csrf::same_origin(req.headers(), &state.config.base_url)
    {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let meta = match ClientMeta::from_request_parts(&mut parts, &state).await {
        Ok(m) => m,
        Err(never) => match never {},
    };
    if let Err(e) = state
        .throttle
        .spend(action, &meta.source, state.clock.unix_f64())
    {
        state
            .metrics
            .count("keyward_throttled_total", &[("surface", "dashboard")]);
        return e.into_response();
    }
    if hashes && state.passwords.saturated() {
        tracing::debug!(event = "auth.busy", source = %meta.source, "password hashing at capacity");
        return AppError::Busy.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// The per-node queue an attempt on `email` waits in: its own for a browser with a device
/// token (trusted or not, the caller decides), the account's otherwise.
pub fn lane(email: &str, device: Option<&[u8]>) -> String {
    match device {
        Some(h) => format!("{email}\n{}", hex::encode(h)),
        None => email.to_string(),
    }
}

/// The device hash a gate counts against, if any.
pub fn gate_device(gate: &crate::store::SignInGate) -> Option<&[u8]> {
    match gate {
        crate::store::SignInGate::Device(h) => Some(h),
        _ => None,
    }
}

// ------------------------------------------------------------------ device cookies

/// The device cookie's name (`__Host-` with https, like the session cookie).
pub fn device_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-keyward_device"
    } else {
        "keyward_device"
    }
}

/// The device token the browser sent, if any.
pub fn device_token(headers: &HeaderMap, secure: bool) -> Option<String> {
    let name = device_cookie_name(secure);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
        .filter(|v| v.len() <= 64 && !v.is_empty())
}

/// The stored form of a device token.
pub fn device_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The `Set-Cookie` value that keeps `token` in the browser for a year.
pub fn device_cookie(token: &str, secure: bool) -> Option<HeaderValue> {
    let cookie = Cookie::build((device_cookie_name(secure), token.to_string()))
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Strict)
        .max_age(time::Duration::days(365))
        .build();
    HeaderValue::from_str(&cookie.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_monotonically_to_an_hour() {
        assert_eq!(
            (1..=5).map(delay_after).collect::<Vec<_>>(),
            vec![0; 5],
            "five free failures"
        );
        assert_eq!(delay_after(6), 30);
        assert_eq!(delay_after(7), 60);
        assert_eq!(delay_after(8), 120);
        let mut last = 0;
        for n in 1..=200 {
            let d = delay_after(n);
            assert!(d >= last, "monotonic at {n}");
            assert!(d <= MAX_DELAY_SECS);
            last = d;
        }
        assert_eq!(delay_after(13), MAX_DELAY_SECS);
        assert_eq!(delay_after(i64::MAX), MAX_DELAY_SECS);
    }

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_64() {
        assert_eq!(
            source_of(Some("203.0.113.7".parse().unwrap())),
            "203.0.113.7"
        );
        assert_eq!(
            source_of(Some("2001:db8:1:2:aaaa::1".parse().unwrap())),
            source_of(Some("2001:db8:1:2:bbbb::9".parse().unwrap())),
        );
        assert_ne!(
            source_of(Some("2001:db8:1:2::1".parse().unwrap())),
            source_of(Some("2001:db8:1:3::1".parse().unwrap())),
        );
        assert_eq!(
            source_of(Some("::ffff:203.0.113.7".parse().unwrap())),
            "203.0.113.7"
        );
    }

    #[test]
    fn a_budget_allows_its_burst_then_one_per_interval() {
        let t = Throttle::new(1.0);
        let now = 1_000_000.0;
        for _ in 0..20 {
            t.spend(SourceAction::SignIn, "a", now).unwrap();
        }
        let Err(crate::error::AppError::TooManyAttempts { retry_after }) =
            t.spend(SourceAction::SignIn, "a", now)
        else {
            panic!("the 21st attempt is refused")
        };
        assert_eq!(retry_after, 30);
        // Another source and another action have budgets of their own.
        t.spend(SourceAction::SignIn, "b", now).unwrap();
        t.spend(SourceAction::SignUp, "a", now).unwrap();
        // A refusal spends nothing; after the interval one more goes through.
        assert!(t.spend(SourceAction::SignIn, "a", now + 29.0).is_err());
        t.spend(SourceAction::SignIn, "a", now + 30.0).unwrap();
        assert!(t.spend(SourceAction::SignIn, "a", now + 30.0).is_err());
    }

    #[test]
    fn the_front_door_routes_are_the_budgeted_ones() {
        let post = Method::POST;
        assert_eq!(
            front_door(&post, "/login"),
            Some((SourceAction::SignIn, true))
        );
        assert_eq!(front_door(&Method::GET, "/login"), None);
        assert_eq!(
            front_door(&post, "/signup"),
            Some((SourceAction::SignUp, true))
        );
        assert_eq!(
            front_door(&post, "/reset-password/abc"),
            Some((SourceAction::PasswordReset, true))
        );
        assert_eq!(
            front_door(&Method::GET, "/invitations/abc"),
            Some((SourceAction::Invitation, false))
        );
        assert_eq!(
            front_door(&post, "/invitations/abc/accept"),
            Some((SourceAction::Invitation, false))
        );
        assert_eq!(front_door(&post, "/settings/api-keys"), None);
        assert_eq!(
            front_door(&post, "/login/two-step"),
            Some((SourceAction::SignIn, false))
        );
        assert_eq!(front_door(&post, "/login/two-step/passkey"), None);
    }

    #[test]
    fn device_cookies_round_trip() {
        let v = device_cookie("tok123", true).unwrap();
        let s = v.to_str().unwrap();
        assert!(s.starts_with("__Host-keyward_device=tok123"), "{s}");
        assert!(s.contains("HttpOnly") && s.contains("Secure") && s.contains("SameSite=Strict"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; __Host-keyward_device=tok123; c=d"),
        );
        assert_eq!(device_token(&h, true).as_deref(), Some("tok123"));
        assert_eq!(device_token(&h, false), None);
    }
}
