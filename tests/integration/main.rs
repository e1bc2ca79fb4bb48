#![allow(clippy::unwrap_used)]
//! One integration-test binary. Every test that touches the store runs on SQLite and on
//! Postgres (`both!`); Postgres tests are skipped when it is unreachable unless
//! `KEYWARD_REQUIRE_POSTGRES=1` (CI sets it).

mod helpers;

mod accounts;
mod api;
mod api_keys;
mod audit;
mod audit_chain;
mod backup;
mod branding;
mod cli;
mod credits;
mod email;
mod first_visit;
mod import;
mod in_process;
mod key_policy;
mod key_rules;
mod leaks;
mod metrics;
mod nginx;
mod nodes;
mod outage;
mod perf;
mod portal;
mod schemathesis;
mod security;
mod sessions;
mod smtp;
mod sso;
mod teams;
mod throttle;
mod two_step;
mod upgrade;
mod verify;
mod webhooks;
