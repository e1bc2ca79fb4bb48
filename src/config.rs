//! Configuration: command-line flags, each with an environment variable (see `.env.sample`),
//! resolved once at start-up into a [`Config`].
//!
//! Secrets that are not given (today: the key pepper) are generated on first start and
//! persisted to the secrets file with mode 0600, never hard-coded, so that keys created
//! before a restart still verify after it.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use clap::{Args, ValueEnum};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{
    audit::chain::AuditSigningKey,
    branding::{BrandSettings, Branding},
    keys::scopes::ScopeCatalog,
};

/// Who may create an account from the sign-up page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignupMode {
    /// Anyone can sign up.
    Open,
    /// Only people holding an invitation can sign up (invitations: see the Members page).
    Invite,
    /// Nobody can sign up; operators create users with `keyward user create`.
    Closed,
}

/// Settings shared by every sub-command that opens the store.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Database URL: `sqlite://path/to/file.db` (created when missing) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://keyward.db")]
    pub database_url: String,

    /// Where generated secrets are kept (created with mode 0600 on first start).
    #[arg(long, env = "KEYWARD_SECRETS_FILE", default_value = "keyward.secrets")]
    pub secrets_file: PathBuf,

    /// Pepper for API-key hashes (HMAC-SHA-256 key), base64, at least 32 bytes.
    /// Generated and stored in the secrets file when not given. Changing it makes every
    /// existing key unverifiable.
    #[arg(long, env = "KEYWARD_KEY_PEPPER", hide_env_values = true)]
    pub key_pepper: Option<SecretString>,

    /// Minimum password length in Unicode characters. NIST SP 800-63B-4 requires 15 for a
    /// password used as the only factor.
    #[arg(long, env = "KEYWARD_MIN_PASSWORD_LENGTH", default_value_t = 15)]
    pub min_password_length: usize,

    /// Minimum password length for an account with a second factor (an authenticator app
    /// or a passkey): NIST's floor within multi-factor authentication is 8. At most the
    /// single-factor minimum.
    #[arg(
        long,
        env = "KEYWARD_MIN_PASSWORD_LENGTH_TWO_STEP",
        default_value_t = 8
    )]
    pub min_password_length_two_step: usize,

    /// Seconds a request waits for a database connection (on SQLite: for a busy writer)
    /// before it answers 503 "database unavailable" instead of hanging.
    #[arg(long, env = "KEYWARD_DB_TIMEOUT_SECONDS", default_value_t = 5)]
    pub db_timeout_seconds: u64,

    /// The product's name, shown in page titles, the header, sign-in pages and emails; a
    /// password may not be built from it (here, beside the password rules, so that
    /// `keyward user create` applies them too).
    #[arg(long, env = "KEYWARD_PRODUCT_NAME", default_value = crate::branding::DEFAULT_PRODUCT_NAME)]
    pub product_name: String,
}

impl StoreArgs {
    /// The pool settings these flags ask for.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            db_timeout: Duration::from_secs(self.db_timeout_seconds.max(1)),
        }
    }
}

/// `keyward serve` flags.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "KEYWARD_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Also send the IETF draft's `RateLimit-Policy` and `RateLimit` headers
    /// (draft-ietf-httpapi-ratelimit-headers) from the verification doors, beside
    /// `X-RateLimit-*`.
    #[arg(long, env = "KEYWARD_IETF_RATELIMIT_HEADERS", default_value_t = false)]
    pub ietf_ratelimit_headers: bool,

    /// Public URL of the dashboard (used in links and snippets). With an `https://` URL,
    /// cookies get the `Secure` flag and the `__Host-` prefix. Default: `http://<bind>`.
    #[arg(long, env = "KEYWARD_BASE_URL")]
    pub base_url: Option<String>,

    /// Prefix of every API key (`kw` → `kw_live_…`): lowercase letters and digits, 1–16.
    /// Never change it once keys exist: keys are parsed by it.
    #[arg(long, env = "KEYWARD_KEY_PREFIX", default_value = "kw")]
    pub key_prefix: String,

    /// Base URL of the deploying team's own API, used in the snippets shown with a new key.
    #[arg(
        long,
        env = "KEYWARD_API_BASE_URL",
        default_value = "https://api.example.com"
    )]
    pub api_base_url: String,

    /// Credentials of the servers that may call `POST /v1/keys/verify`, comma-separated
    /// (`Authorization: Bearer <token>`). When none is given, one is generated and stored in
    /// the secrets file.
    #[arg(
        long,
        env = "KEYWARD_VERIFIER_TOKENS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub verifier_tokens: Vec<SecretString>,

    /// Credentials of the team's own backend for the operator endpoints (portal sign-in
    /// hand-offs, organizations' external ids, key import), comma-separated, each
    /// `name=token` or a bare token (named `default`). The name is the namespace of the
    /// team's user ids: keep it when rotating a token. When none is given, one is generated
    /// and stored in the secrets file (`operator_token`).
    #[arg(
        long,
        env = "KEYWARD_OPERATOR_TOKENS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub operator_tokens: Vec<SecretString>,

    /// Origins a sign-in hand-off's `return_url` may lead back to ("Back to <product>"),
    /// comma-separated, e.g. `https://app.example.com`. Unset: hand-offs carry no
    /// `return_url`.
    #[arg(long, env = "KEYWARD_PORTAL_RETURN_ORIGINS", value_delimiter = ',')]
    pub portal_return_origins: Vec<String>,

    /// Bearer token Prometheus must send to read `GET /metrics`. Unset: the endpoint is
    /// open (keep it off the public network then).
    #[arg(long, env = "KEYWARD_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<SecretString>,

    /// Extra header the forward-auth endpoint reads the key from (besides
    /// `Authorization: Bearer` and `X-API-Key`), e.g. `X-Acme-API-Key`.
    #[arg(long, env = "KEYWARD_KEY_HEADER")]
    pub key_header: Option<String>,

    /// Header carrying the end user's IP, set by a trusted reverse proxy in front of
    /// Keyward (e.g. `X-Real-IP`). Only set this when such a proxy exists: otherwise
    /// clients could choose their own IP. Unset: the connection's peer address.
    #[arg(long, env = "KEYWARD_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,

    /// SMTP server for invitations and password resets, e.g. `smtp://127.0.0.1:25`,
    /// `smtp://user:pass@mail.example.com:587?tls=required`. Unset: emails are logged and
    /// kept in the outbox (`keyward mail outbox`).
    #[arg(long, env = "KEYWARD_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// Sender of Keyward's emails. Its display name is `KEYWARD_MAIL_SENDER_NAME` when set,
    /// else the name given here, else the product name.
    #[arg(long, env = "KEYWARD_MAIL_FROM", default_value = "keyward@localhost")]
    pub mail_from: String,

    /// Display name of the sender of emails (`Acme API <keys@acme.com>`). Default: the name
    /// in `KEYWARD_MAIL_FROM`, else the product name.
    #[arg(long, env = "KEYWARD_MAIL_SENDER_NAME")]
    pub mail_sender_name: Option<String>,

    /// The logo shown in the header and on sign-in pages: the path of an .svg, .png, .jpg,
    /// .webp, .gif or .ico file (Keyward serves it, and uses it as the favicon), or a URL on
    /// Keyward's own origin. Default: the product name as text.
    #[arg(long, env = "KEYWARD_LOGO")]
    pub logo: Option<String>,

    /// Accent colour of buttons and links, as hex (`#1967d2`). Refused at start-up unless
    /// white text on it and it on the page background reach WCAG AA contrast (4.5:1).
    #[arg(long, env = "KEYWARD_ACCENT_COLOR")]
    pub accent_color: Option<String>,

    /// Where your customers get help (shown at the foot of every page and in emails).
    #[arg(long, env = "KEYWARD_SUPPORT_URL")]
    pub support_url: Option<String>,

    /// Support email address (shown at the foot of every page and in emails).
    #[arg(long, env = "KEYWARD_SUPPORT_EMAIL")]
    pub support_email: Option<String>,

    /// Invalid keys one source may present per minute before being throttled.
    #[arg(
        long,
        env = "KEYWARD_INVALID_ATTEMPTS_PER_MINUTE",
        default_value_t = 60
    )]
    pub invalid_attempts_per_minute: i64,

    /// Redis shared by every node (`redis://127.0.0.1:6379`): per-key rate limits then hold
    /// across nodes instead of per node. Without it each node keeps its own buckets.
    #[arg(long, env = "KEYWARD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of Keyward's keys in Redis (several deployments can share one Redis).
    #[arg(long, env = "KEYWARD_REDIS_PREFIX", default_value = "keyward:")]
    pub redis_prefix: String,

    /// What rate limits do while Redis is unreachable: `local` (each node enforces its own
    /// bucket, logged) or `closed` (verification answers 503).
    #[arg(
        long,
        env = "KEYWARD_REDIS_FAILURE",
        value_enum,
        default_value = "local"
    )]
    pub redis_failure: crate::verify::shared::FailurePolicy,

    /// What daily quotas do while Redis is unreachable: `closed` (verification of keys with
    /// a quota answers 503) or `local` (each node counts as without Redis).
    #[arg(
        long,
        env = "KEYWARD_REDIS_QUOTA_FAILURE",
        value_enum,
        default_value = "closed"
    )]
    pub redis_quota_failure: crate::verify::shared::FailurePolicy,

    /// Multiplies every per-source attempt budget (sign-in, sign-up, password reset,
    /// invitations): raise it when many people share one address (a large office NAT).
    #[arg(long, env = "KEYWARD_SOURCE_BUDGET_SCALE", default_value_t = 1.0)]
    pub source_budget_scale: f64,

    /// Who may sign up.
    #[arg(long, env = "KEYWARD_SIGNUP", value_enum, default_value = "open")]
    pub signup: SignupMode,

    /// Keep accounts whose email address is not verified out of every dashboard page (they
    /// see a "verify your email" page). Off: they can use their personal organization.
    #[arg(
        long,
        env = "KEYWARD_REQUIRE_EMAIL_VERIFICATION",
        default_value_t = false
    )]
    pub require_email_verification: bool,

    /// TOML file with the scope catalog (`[[scopes]]` and `[[presets]]`); default catalog:
    /// read, write, admin.
    #[arg(long, env = "KEYWARD_SCOPES_FILE")]
    pub scopes_file: Option<PathBuf>,

    /// TOML file with operator-wide SSO providers (`[[providers]]`: id, name, issuer,
    /// client_id, client_secret or client_secret_env); each is discovered at start-up.
    #[arg(long, env = "KEYWARD_SSO_PROVIDERS_FILE")]
    pub sso_providers_file: Option<PathBuf>,

    /// Let organizations' SSO issuers be on loopback or private addresses (by default
    /// only public addresses are contacted, so the dashboard cannot probe your network).
    #[arg(long, env = "KEYWARD_ALLOW_PRIVATE_NETWORKS", default_value_t = false)]
    pub allow_private_networks: bool,

    /// GitHub secret scanning's public keys (the JSON at
    /// https://api.github.com/meta/public_keys/secret_scanning); enables `/v1/leaks/github`.
    #[arg(long, env = "KEYWARD_LEAK_REPORT_KEYS_FILE")]
    pub leak_report_keys_file: Option<PathBuf>,

    /// What a leak report does to a matching key: `revoke` it, or only `notify`.
    #[arg(
        long,
        env = "KEYWARD_LEAK_ACTION",
        value_enum,
        default_value = "revoke"
    )]
    pub leak_action: crate::leaks::LeakAction,

    /// Sign out after this many minutes without activity.
    #[arg(long, env = "KEYWARD_SESSION_IDLE_MINUTES", default_value_t = 60)]
    pub session_idle_minutes: u64,

    /// Sign out this many hours after sign-in, whatever the activity.
    #[arg(long, env = "KEYWARD_SESSION_ABSOLUTE_HOURS", default_value_t = 24)]
    pub session_absolute_hours: u64,

    /// Seconds one request may take, from its headers to its answer (reading the body,
    /// database work, outbound calls). Then the dashboard shows a "took too long" page, the
    /// JSON APIs answer `{"error":{"code":"timed_out"}}`: 408 when the client had not finished
    /// sending its body, else 503. Must exceed `KEYWARD_DB_TIMEOUT_SECONDS`.
    #[arg(long, env = "KEYWARD_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    pub request_timeout_seconds: u64,

    /// Log format: `text` for people, `json` for log shippers.
    #[arg(long, env = "KEYWARD_LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    #[command(flatten)]
    pub store: StoreArgs,
}

/// Redis for limits shared across nodes (`KEYWARD_REDIS_*`).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: String,
    pub prefix: String,
    pub rate_failure: crate::verify::shared::FailurePolicy,
    pub quota_failure: crate::verify::shared::FailurePolicy,
}

/// The resolved configuration the application runs with.
#[derive(Debug)]
pub struct Config {
    pub base_url: String,
    pub api_base_url: String,
    pub key_prefix: String,
    pub signup: SignupMode,
    pub require_email_verification: bool,
    pub scopes: ScopeCatalog,
    pub session_idle: Duration,
    pub session_absolute: Duration,
    /// Minimum password length of an account without a second factor.
    pub min_password_length: usize,
    /// Minimum password length of an account with a second factor (≤ the one above).
    pub min_password_length_two_step: usize,
    pub key_pepper: KeyPepper,
    /// Accepted verifier credentials (never empty when built from args).
    pub verifier_tokens: VerifierTokens,
    /// Accepted operator credentials, by name (never empty when built from args).
    pub operator_tokens: OperatorTokens,
    /// Origins (`scheme://host[:port]`) a hand-off's `return_url` may point to.
    pub portal_return_origins: Vec<String>,
    /// Required to read `/metrics` when set.
    pub metrics_token: Option<SecretString>,
    pub key_header: Option<axum::http::HeaderName>,
    /// Send the IETF draft's `RateLimit-Policy` / `RateLimit` headers too.
    pub ietf_ratelimit_headers: bool,
    pub client_ip_header: Option<axum::http::HeaderName>,
    pub invalid_attempts_per_minute: i64,
    /// Redis for limits shared across nodes.
    pub redis: Option<RedisConfig>,
    /// Multiplies the per-source attempt budgets (`auth::throttle`).
    pub source_budget_scale: f64,
    pub smtp_url: Option<String>,
    pub mail_from: String,
    pub sso_providers: Vec<crate::sso::OperatorProvider>,
    pub allow_private_networks: bool,
    pub leak_report_keys: Vec<crate::leaks::ReportKey>,
    pub leak_action: crate::leaks::LeakAction,
    /// Signs the audit log's checkpoints (kept in the secrets file beside the pepper).
    pub audit_signing_key: AuditSigningKey,
    /// The longest one request may take (`KEYWARD_REQUEST_TIMEOUT_SECONDS`).
    pub request_timeout: Duration,
    /// Product name, logo, accent colour, support contacts, email sender name.
    pub branding: Arc<Branding>,
}

impl Config {
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Self> {
        validate_prefix(&args.key_prefix)?;
        let scopes = match &args.scopes_file {
            Some(path) => ScopeCatalog::from_file(path)?,
            None => ScopeCatalog::default(),
        };
        let base_url = args
            .base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", args.bind))
            .trim_end_matches('/')
            .to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            bail!("KEYWARD_BASE_URL must start with http:// or https://, got {base_url:?}");
        }
        let db_timeout = args.store.store_options().db_timeout;
        let request_timeout = Duration::from_secs(args.request_timeout_seconds);
        if request_timeout <= db_timeout {
            bail!(
                "KEYWARD_REQUEST_TIMEOUT_SECONDS ({}) must be larger than KEYWARD_DB_TIMEOUT_SECONDS ({}): \
                 otherwise a database outage is reported as a slow request",
                request_timeout.as_secs(),
                db_timeout.as_secs()
            );
        }
        let mail_from = args.mail_from.trim().to_string();
        let mailbox: lettre::message::Mailbox = mail_from
            .parse()
            .map_err(|e| anyhow::anyhow!("KEYWARD_MAIL_FROM {mail_from:?}: {e}"))?;
        let branding = Branding::resolve(
            &BrandSettings {
                product_name: Some(args.store.product_name.clone()),
                logo: args.logo.clone(),
                accent_color: args.accent_color.clone(),
                support_url: args.support_url.clone(),
                support_email: args.support_email.clone(),
                mail_sender_name: args
                    .mail_sender_name
                    .clone()
                    .filter(|n| !n.trim().is_empty())
                    .or(mailbox.name),
            },
            &base_url,
        )?;
        Ok(Self {
            base_url,
            api_base_url: args.api_base_url.trim_end_matches('/').to_string(),
            key_prefix: args.key_prefix.clone(),
            signup: args.signup,
            require_email_verification: args.require_email_verification,
            scopes,
            session_idle: Duration::from_secs(args.session_idle_minutes.max(1) * 60),
            session_absolute: Duration::from_secs(args.session_absolute_hours.max(1) * 3600),
            min_password_length: args.store.min_password_length.max(MIN_PASSWORD_FLOOR),
            min_password_length_two_step: args.store.min_password_length_two_step.clamp(
                MIN_PASSWORD_FLOOR,
                args.store.min_password_length.max(MIN_PASSWORD_FLOOR),
            ),
            key_pepper: load_pepper(&args.store)?,
            verifier_tokens: VerifierTokens::new(if args.verifier_tokens.is_empty() {
                vec![load_verifier_token(&args.store)?]
            } else {
                args.verifier_tokens.clone()
            }),
            operator_tokens: if args.operator_tokens.is_empty() {
                OperatorTokens::new(vec![(
                    DEFAULT_OPERATOR.to_string(),
                    load_operator_token(&args.store)?,
                )])
            } else {
                OperatorTokens::parse(&args.operator_tokens)?
            },
            portal_return_origins: args
                .portal_return_origins
                .iter()
                .filter(|o| !o.trim().is_empty())
                .map(|o| return_origin(o.trim()))
                .collect::<anyhow::Result<_>>()?,
            key_header: header_name(args.key_header.as_deref(), "KEYWARD_KEY_HEADER")?,
            ietf_ratelimit_headers: args.ietf_ratelimit_headers,
            metrics_token: args
                .metrics_token
                .clone()
                .filter(|t| !t.expose_secret().is_empty()),
            client_ip_header: header_name(
                args.client_ip_header.as_deref(),
                "KEYWARD_CLIENT_IP_HEADER",
            )?,
            invalid_attempts_per_minute: args.invalid_attempts_per_minute.max(1),
            redis: args
                .redis_url
                .clone()
                .filter(|u| !u.trim().is_empty())
                .map(|url| RedisConfig {
                    url,
                    prefix: args.redis_prefix.clone(),
                    rate_failure: args.redis_failure,
                    quota_failure: args.redis_quota_failure,
                }),
            source_budget_scale: if args.source_budget_scale.is_finite()
                && args.source_budget_scale > 0.0
            {
                args.source_budget_scale
            } else {
                bail!(
                    "KEYWARD_SOURCE_BUDGET_SCALE must be a positive number, got {}",
                    args.source_budget_scale
                )
            },
            smtp_url: args.smtp_url.clone(),
            mail_from,
            sso_providers: match &args.sso_providers_file {
                Some(path) => crate::sso::load_providers(path)?,
                None => Vec::new(),
            },
            allow_private_networks: args.allow_private_networks,
            leak_report_keys: match &args.leak_report_keys_file {
                Some(path) => crate::leaks::load_keys(path)?,
                None => Vec::new(),
            },
            leak_action: args.leak_action,
            audit_signing_key: load_audit_signing_key(&args.store)?,
            request_timeout,
            branding: Arc::new(branding),
        })
    }

    /// A configuration for tests and embedding: default catalog, open sign-up.
    pub fn for_tests(base_url: &str, pepper: [u8; 32]) -> Self {
        Self {
            base_url: base_url.to_string(),
            api_base_url: "https://api.example.com".into(),
            key_prefix: "kw".into(),
            signup: SignupMode::Open,
            require_email_verification: false,
            scopes: ScopeCatalog::default(),
            session_idle: Duration::from_secs(3600),
            session_absolute: Duration::from_secs(24 * 3600),
            min_password_length: 15,
            min_password_length_two_step: 8,
            key_pepper: KeyPepper::new(pepper.to_vec()),
            verifier_tokens: VerifierTokens::new(vec![SecretString::from(TEST_VERIFIER_TOKEN)]),
            operator_tokens: OperatorTokens::new(vec![(
                DEFAULT_OPERATOR.to_string(),
                SecretString::from(TEST_OPERATOR_TOKEN),
            )]),
            portal_return_origins: vec!["http://127.0.0.1:9".into()],
            key_header: None,
            ietf_ratelimit_headers: false,
            metrics_token: None,
            client_ip_header: None,
            invalid_attempts_per_minute: 60,
            redis: None,
            // Tests sign many people up from 127.0.0.1; the throttle's own tests use 1.0.
            source_budget_scale: 100.0,
            smtp_url: None,
            mail_from: "keyward@localhost".into(),
            sso_providers: Vec::new(),
            // The tests' identity provider runs on loopback.
            allow_private_networks: true,
            leak_report_keys: Vec::new(),
            leak_action: crate::leaks::LeakAction::Revoke,
            audit_signing_key: AuditSigningKey::from_seed(TEST_AUDIT_SIGNING_SEED),
            request_timeout: Duration::from_secs(30),
            branding: Arc::new(Branding::default()),
        }
    }

    /// The minimum password length for an account with (or without) a second factor.
    pub fn password_min_for(&self, two_step: bool) -> usize {
        if two_step {
            self.min_password_length_two_step
        } else {
            self.min_password_length
        }
    }

    /// Whether cookies must be `Secure` (and may use the `__Host-` prefix).
    pub fn secure_cookies(&self) -> bool {
        self.base_url.starts_with("https://")
    }
}

/// No configuration may allow passwords shorter than this.
pub const MIN_PASSWORD_FLOOR: usize = 8;

/// The verifier credential of [`Config::for_tests`].
pub const TEST_VERIFIER_TOKEN: &str = "test-verifier-token";
/// The operator credential of [`Config::for_tests`] (named [`DEFAULT_OPERATOR`]).
pub const TEST_OPERATOR_TOKEN: &str = "test-operator-token";
/// The name of an operator credential given without one.
pub const DEFAULT_OPERATOR: &str = "default";

/// The audit signing key of [`Config::for_tests`] (its seed).
pub const TEST_AUDIT_SIGNING_SEED: [u8; 32] = [24; 32];

fn header_name(value: Option<&str>, what: &str) -> anyhow::Result<Option<axum::http::HeaderName>> {
    value
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            axum::http::HeaderName::from_bytes(v.trim().as_bytes())
                .with_context(|| format!("{what} is not a valid header name: {v:?}"))
        })
        .transpose()
}

fn validate_prefix(prefix: &str) -> anyhow::Result<()> {
    let ok = (1..=16).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !ok {
        bail!("key prefix must be 1–16 lowercase letters or digits, got {prefix:?}");
    }
    Ok(())
}

/// The HMAC key that API-key hashes are computed with. Never printed.
pub struct KeyPepper {
    bytes: SecretBox<Vec<u8>>,
    /// HMAC-SHA-256 with the pepper already absorbed: keying an HMAC hashes the key's
    /// inner and outer pad blocks (two of the five SHA-256 blocks of a key's hash), so
    /// that is done once here and every hash starts from a copy. As secret as the pepper;
    /// boxed, so that moving a `KeyPepper` does not copy it (the hmac crate does not wipe
    /// its state on drop, as `SecretBox` does the bytes).
    keyed: Box<Hmac<Sha256>>,
}

impl KeyPepper {
    pub fn new(bytes: Vec<u8>) -> Self {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(&bytes)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Self {
            bytes: SecretBox::new(Box::new(bytes)),
            keyed: Box::new(keyed),
        }
    }
    pub fn expose(&self) -> &[u8] {
        self.bytes.expose_secret()
    }
    /// A fresh HMAC-SHA-256 keyed with the pepper (a copy of the keyed state).
    pub fn mac(&self) -> Hmac<Sha256> {
        Hmac::clone(&self.keyed)
    }

    /// A value that identifies this pepper without revealing it (stored in the database to
    /// catch a lost or swapped pepper at start-up).
    pub fn check_value(&self) -> String {
        hex::encode(crate::keys::token::KeyHash::of("keyward-pepper-check", self).0)
    }
}

impl std::fmt::Debug for KeyPepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPepper([redacted])")
    }
}

#[derive(Serialize, Deserialize, Default)]
struct SecretsFile {
    key_pepper: Option<String>,
    verifier_token: Option<String>,
    /// The operator credential named `default`, when `KEYWARD_OPERATOR_TOKENS` is unset.
    operator_token: Option<String>,
    /// Base64 Ed25519 seed that signs audit checkpoints.
    audit_signing_key: Option<String>,
}

fn read_secrets(path: &std::path::Path) -> anyhow::Result<SecretsFile> {
    if !path.exists() {
        return Ok(SecretsFile::default());
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading secrets file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing secrets file {}", path.display()))
}

/// The verifier credential from the secrets file, generated and stored when absent.
pub fn load_verifier_token(args: &StoreArgs) -> anyhow::Result<SecretString> {
    let path = &args.secrets_file;
    let mut file = read_secrets(path)?;
    if let Some(t) = &file.verifier_token {
        return Ok(SecretString::from(t.clone()));
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("OS random generator: {e}"))?;
    let token = format!("kwv_{}", hex::encode(bytes));
    file.verifier_token = Some(token.clone());
    write_private(path, &toml::to_string(&file)?)?;
    tracing::warn!(
        path = %path.display(),
        "generated a verifier credential for POST /v1/keys/verify and saved it to the secrets file (verifier_token)"
    );
    Ok(SecretString::from(token))
}

/// One `KEYWARD_PORTAL_RETURN_ORIGINS` entry as an origin (`scheme://host[:port]`).
fn return_origin(given: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(given).with_context(|| {
        format!(
            "KEYWARD_PORTAL_RETURN_ORIGINS: {given:?} is not an origin like https://app.example.com"
        )
    })?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        bail!(
            "KEYWARD_PORTAL_RETURN_ORIGINS: {given:?} must be an origin (http:// or https://, a host, an optional port, no path), like https://app.example.com"
        );
    }
    Ok(url.origin().ascii_serialization())
}

/// The operator credential from the secrets file, generated and stored when absent.
pub fn load_operator_token(args: &StoreArgs) -> anyhow::Result<SecretString> {
    let path = &args.secrets_file;
    let mut file = read_secrets(path)?;
    if let Some(t) = &file.operator_token {
        return Ok(SecretString::from(t.clone()));
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("OS random generator: {e}"))?;
    let token = format!("kwo_{}", hex::encode(bytes));
    file.operator_token = Some(token.clone());
    write_private(path, &toml::to_string(&file)?)?;
    tracing::warn!(
        path = %path.display(),
        "generated an operator credential for the operator endpoints (/api/v1/portal/…, /api/v1/orgs/…, /api/v1/keys/import) and saved it to the secrets file (operator_token)"
    );
    Ok(SecretString::from(token))
}

/// Reads the pepper from the flag/env, else from the secrets file, else generates one and
/// writes it to the secrets file.
pub fn load_pepper(args: &StoreArgs) -> anyhow::Result<KeyPepper> {
    if let Some(given) = &args.key_pepper {
        return decode_pepper(given.expose_secret()).context("KEYWARD_KEY_PEPPER");
    }
    let path = &args.secrets_file;
    let mut file = read_secrets(path)?;
    if let Some(p) = &file.key_pepper {
        return decode_pepper(p).with_context(|| format!("key_pepper in {}", path.display()));
    }
    let mut bytes = vec![0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("OS random generator: {e}"))?;
    file.key_pepper = Some(B64.encode(&bytes));
    write_private(path, &toml::to_string(&file)?)?;
    tracing::warn!(
        path = %path.display(),
        "generated a new API-key pepper and saved it to the secrets file; keep this file (or set KEYWARD_KEY_PEPPER): without it existing keys cannot be verified"
    );
    Ok(KeyPepper::new(bytes))
}

/// The audit checkpoint key from the secrets file, generated and stored when absent.
pub fn load_audit_signing_key(args: &StoreArgs) -> anyhow::Result<AuditSigningKey> {
    if let Some(key) = read_audit_signing_key(args)? {
        return Ok(key);
    }
    let path = &args.secrets_file;
    let mut file = read_secrets(path)?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("OS random generator: {e}"))?;
    file.audit_signing_key = Some(B64.encode(seed));
    write_private(path, &toml::to_string(&file)?)?;
    let key = AuditSigningKey::from_seed(seed);
    tracing::warn!(
        path = %path.display(),
        key_id = %key.public().id(),
        "generated an audit signing key and saved it to the secrets file (audit_signing_key); keep this file: checkpoints signed with it verify only with it"
    );
    Ok(key)
}

/// The audit checkpoint key from the secrets file, if there is one (never generates one).
pub fn read_audit_signing_key(args: &StoreArgs) -> anyhow::Result<Option<AuditSigningKey>> {
    let path = &args.secrets_file;
    let Some(text) = read_secrets(path)?.audit_signing_key else {
        return Ok(None);
    };
    let seed: [u8; 32] = B64
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| {
            format!(
                "audit_signing_key in {} must be 32 bytes of base64",
                path.display()
            )
        })?;
    Ok(Some(AuditSigningKey::from_seed(seed)))
}

fn decode_pepper(text: &str) -> anyhow::Result<KeyPepper> {
    let bytes = B64
        .decode(text.trim())
        .context("the pepper must be base64")?;
    if bytes.len() < 32 {
        bail!("the pepper must be at least 32 bytes, got {}", bytes.len());
    }
    Ok(KeyPepper::new(bytes))
}

fn write_private(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating secrets file {}", path.display()))?;
    f.write_all(
        b"# Keyward secrets, generated on first start. Keep private; back it up with the database.\n",
    )?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rules() {
        assert!(validate_prefix("kw").is_ok());
        assert!(validate_prefix("acme2").is_ok());
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("Acme").is_err());
        assert!(validate_prefix("ac_me").is_err());
    }

    #[test]
    fn pepper_is_generated_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("kw-secrets-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let args = StoreArgs {
            database_url: String::new(),
            secrets_file: dir.join("s"),
            key_pepper: None,
            min_password_length: 15,
            min_password_length_two_step: 8,
            db_timeout_seconds: 5,
            product_name: "Keyward".into(),
        };
        let a = load_pepper(&args).unwrap();
        let b = load_pepper(&args).unwrap();
        assert_eq!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 32);
        assert!(!format!("{a:?}").contains(&B64.encode(a.expose())));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_audit_signing_key_is_generated_once_beside_the_pepper() {
        let dir = std::env::temp_dir().join(format!("kw-secrets-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let args = StoreArgs {
            database_url: String::new(),
            secrets_file: dir.join("s"),
            key_pepper: None,
            min_password_length: 15,
            min_password_length_two_step: 8,
            db_timeout_seconds: 5,
            product_name: "Keyward".into(),
        };
        assert!(read_audit_signing_key(&args).unwrap().is_none());
        let pepper = load_pepper(&args).unwrap();
        let a = load_audit_signing_key(&args).unwrap();
        let b = load_audit_signing_key(&args).unwrap();
        assert_eq!(a.public(), b.public());
        assert_eq!(
            read_audit_signing_key(&args).unwrap().unwrap().public(),
            a.public()
        );
        // Adding the key kept the pepper.
        assert_eq!(load_pepper(&args).unwrap().expose(), pepper.expose());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// The verifier credentials, kept as SHA-256 digests (computed once, not per request) and
/// compared in constant time, so neither a token nor its length leaks through timing.
#[derive(Clone)]
pub struct VerifierTokens(Vec<[u8; 32]>);

impl VerifierTokens {
    pub fn new(tokens: Vec<SecretString>) -> Self {
        use sha2::{Digest, Sha256};
        Self(
            tokens
                .iter()
                .map(|t| Sha256::digest(t.expose_secret().as_bytes()).into())
                .collect(),
        )
    }

    /// Whether `presented` is one of the credentials (every one is compared).
    pub fn accepts(&self, presented: &str) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let p: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0
            .iter()
            .fold(false, |ok, t| ok | bool::from(t.ct_eq(&p)))
    }
}

impl std::fmt::Debug for VerifierTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifierTokens({} configured)", self.0.len())
    }
}

/// The operator credentials: each a name (the namespace of the team's user ids) and the
/// token's SHA-256, compared in constant time like [`VerifierTokens`].
#[derive(Clone)]
pub struct OperatorTokens(Vec<(String, [u8; 32])>);

impl OperatorTokens {
    pub fn new(tokens: Vec<(String, SecretString)>) -> Self {
        use sha2::{Digest, Sha256};
        Self(
            tokens
                .into_iter()
                .map(|(name, t)| (name, Sha256::digest(t.expose_secret().as_bytes()).into()))
                .collect(),
        )
    }

    /// `KEYWARD_OPERATOR_TOKENS` entries: `name=token` or a bare token (named `default`).
    pub fn parse(entries: &[SecretString]) -> anyhow::Result<Self> {
        let mut tokens = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let entry = entry.expose_secret().trim();
            let (name, token) = match entry.split_once('=') {
                Some((name, token)) => (name.trim(), token.trim()),
                None => (DEFAULT_OPERATOR, entry),
            };
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                bail!(
                    "KEYWARD_OPERATOR_TOKENS entry {}: the name before `=` must be 1–64 letters, digits, `-` or `_`",
                    i + 1
                );
            }
            if token.len() < 16 {
                bail!(
                    "KEYWARD_OPERATOR_TOKENS entry {} ({name}): the token must be at least 16 characters",
                    i + 1
                );
            }
            tokens.push((name.to_string(), SecretString::from(token.to_string())));
        }
        Ok(Self::new(tokens))
    }

    /// The name of the credential `presented` is, if any (every one is compared).
    pub fn accepts(&self, presented: &str) -> Option<&str> {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let p: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (name, t) in &self.0 {
            if bool::from(t.ct_eq(&p)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

impl std::fmt::Debug for OperatorTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
        write!(f, "OperatorTokens({names:?})")
    }
}

#[cfg(test)]
mod operator_tests {
    use super::*;

    #[test]
    fn return_origins_are_origins() {
        assert_eq!(
            return_origin("https://App.Example.com").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            return_origin("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "app.example.com",
            "https://a.example/path",
            "ftp://a.example",
            "javascript:alert(1)",
        ] {
            assert!(return_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn operator_tokens_are_named_and_checked() {
        let t = OperatorTokens::parse(&[
            SecretString::from("app=0123456789abcdef0123"),
            SecretString::from("fedcba9876543210fedcba"),
        ])
        .unwrap();
        assert_eq!(t.accepts("0123456789abcdef0123"), Some("app"));
        assert_eq!(t.accepts("fedcba9876543210fedcba"), Some(DEFAULT_OPERATOR));
        assert_eq!(t.accepts("0123456789abcdef012"), None);
        assert_eq!(t.accepts(""), None);
        let short = OperatorTokens::parse(&[SecretString::from("app=short")]).unwrap_err();
        assert!(short.to_string().contains("at least 16"), "{short}");
        let bad =
            OperatorTokens::parse(&[SecretString::from("a b=0123456789abcdef0123")]).unwrap_err();
        assert!(bad.to_string().contains("the name"), "{bad}");
    }
}
