//! Keyward: self-hosted API key management.
//!
//! The binary (`keyward serve`) runs the dashboard; the library exposes the same pieces so
//! that tests — and Rust services sharing the store — can build the app or verify keys
//! in-process with [`verify::Verifier`].

pub mod account;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod branding;
pub mod clock;
pub mod config;
pub mod deadline;
pub mod error;
pub mod keys;
pub mod leaks;
pub mod mail;
pub mod members;
pub mod metrics;
pub mod net;
pub mod orgs;
pub mod portal;
pub mod secretbox;
pub mod sso;
pub mod state;
pub mod store;
pub mod templates;
pub mod two_step;
pub mod verify;
pub mod webhooks;

pub use app::router;
pub use state::AppState;
pub use store::Store;
pub use verify::{Verification, Verifier, VerifyCode};
#[cfg(test)]
mod properties;
