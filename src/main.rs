//! The `keyward` command: `serve` (the default), `migrate`, `user create`, `mail outbox`,
//! `audit verify|checkpoint|public-key`.

use keyward::audit::AuditAction;
use std::{io::Read, net::SocketAddr, sync::Arc};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use keyward::{
    AppState, Store,
    auth::{normalize_email, password, valid_email},
    clock::{Clock, SystemClock},
    config::{Config, ServeArgs, StoreArgs},
    orgs::Role,
    store::{NewAudit, NewUser, StoreError},
};
use secrecy::{ExposeSecret, SecretString};
use tower_sessions::session_store::ExpiredDeletion;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "keyward", version, about = "Self-hosted API key management")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `serve` flags, also accepted without the sub-command (`keyward --bind …`).
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the dashboard (the default).
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(StoreArgs),
    /// Write a consistent copy of a live SQLite database to PATH (`VACUUM INTO`); the
    /// server keeps running. For Postgres use `pg_dump` (README "Backups").
    Backup {
        /// The new file (must not exist yet).
        path: std::path::PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Outgoing email.
    #[command(subcommand)]
    Mail(MailCommand),
    /// The audit log's integrity: verify its hash chain and signed checkpoints.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the audit chains and their checkpoints; exits non-zero naming the first row
    /// that was changed, removed or inserted.
    Verify {
        /// Only this organization's chain (`""`: account events without an organization).
        #[arg(long)]
        org: Option<String>,
        /// Also accept checkpoints signed with this Ed25519 public key (base64, as
        /// `keyward audit public-key` prints it); e.g. a previous key. Repeatable.
        #[arg(long = "public-key")]
        public_keys: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Sign the head of every chain (or `--org`'s) that advanced since its last checkpoint
    /// (the server does this hourly).
    Checkpoint {
        #[arg(long)]
        org: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print the public key that verifies this installation's checkpoints (for verifying
    /// elsewhere with `--public-key`).
    PublicKey {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Set the team's own id for an organization (its customer), which every verification
    /// door returns with the organization's keys; `--clear` removes it.
    ExternalId {
        /// The organization's id (Settings → Organization shows it).
        org: String,
        /// The team's id for this customer (1–200 printable ASCII characters, unique).
        #[arg(required_unless_present = "clear")]
        external_id: Option<String>,
        #[arg(long, conflicts_with = "external_id")]
        clear: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Import keys issued before Keyward from a JSON Lines file, one record per line
    /// (README: "Importing keys you already issued"). All or nothing: if any record is
    /// wrong, each is reported with its line number and nothing is imported. Keys already
    /// imported are skipped. Takes the same settings as `serve` (pepper, key prefix, scope
    /// catalog).
    Import {
        /// The JSON Lines file (`-`: standard input).
        file: std::path::PathBuf,
        #[command(flatten)]
        serve: Box<ServeArgs>,
    },
}

#[derive(Subcommand)]
enum MailCommand {
    /// Print the most recent emails (with their bodies when no SMTP server is configured).
    Outbox {
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input.
    Create {
        #[arg(long)]
        email: String,
        /// Also add the user to this organization: an existing organization's id, or the
        /// name of a new organization to create (with `--role owner`).
        #[arg(long)]
        org: Option<String>,
        /// Role in `--org`.
        #[arg(long, default_value = "owner")]
        role: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info,sqlx=warn,tower_sessions=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// mimalloc instead of glibc's malloc: under load glibc's per-arena locks are contended
/// whenever a buffer made on one worker thread is freed on another (tokio moves tasks
/// between workers), which showed in profiles as futex waits and context switches on
/// every door (see README, Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(*args).await,
        Some(Command::Migrate(args)) => {
            init_tracing(false);
            let store = Store::connect_with(&args.database_url, args.store_options()).await?;
            store.migrate().await?;
            store.session_store().await?;
            tracing::info!(backend = store.backend(), "migrations applied");
            Ok(())
        }
        Some(Command::Backup { path, store }) => {
            init_tracing(false);
            backup(&path, &store).await
        }
        Some(Command::Mail(MailCommand::Outbox { limit, store })) => {
            init_tracing(false);
            // Kept bodies are sealed with a key derived from the pepper.
            let seal = keyward::mail::outbox_box(&keyward::config::load_pepper(&store)?);
            let store = Store::connect_with(&store.database_url, store.store_options()).await?;
            store.migrate().await?;
            for e in keyward::mail::open_outbox(&store, &seal, limit.clamp(1, 1000)).await? {
                let when = keyward::templates::exact_utc(keyward::clock::from_unix(e.created_at));
                println!(
                    "#{} {when} to {} [{}] {}",
                    e.id, e.recipient, e.status, e.subject
                );
                if !e.error.is_empty() {
                    println!("  error: {}", e.error);
                }
                for line in e.body.lines() {
                    println!("  | {line}");
                }
            }
            Ok(())
        }
        Some(Command::Audit(cmd)) => {
            init_tracing(false);
            audit_command(cmd).await
        }
        Some(Command::Org(OrgCommand::ExternalId {
            org,
            external_id,
            clear: _,
            store,
        })) => {
            init_tracing(false);
            let db = Store::connect_with(&store.database_url, store.store_options()).await?;
            db.migrate().await?;
            let audit = NewAudit::new(AuditAction::OrgExternalIdChanged, SystemClock.unix())
                .actor(None, "operator:cli");
            let org = keyward::orgs::external::set(&db, &org, external_id.as_deref(), audit)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            match &org.external_id {
                Some(ext) => println!("{} ({}) now has the external id {ext:?}", org.id, org.name),
                None => println!("{} ({}) now has no external id", org.id, org.name),
            }
            Ok(())
        }
        Some(Command::Keys(KeysCommand::Import { file, serve })) => {
            init_tracing(false);
            import_keys(&file, &serve).await
        }
        Some(Command::User(UserCommand::Create {
            email,
            org,
            role,
            store,
        })) => {
            init_tracing(false);
            create_user(&email, org.as_deref(), &role, &store).await
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format == "json");
    let config = Config::from_args(&args)?;
    let store = Store::connect_with(&args.store.database_url, args.store.store_options())
        .await
        .with_context(|| {
            format!(
                "opening the database ({})",
                redact(&args.store.database_url)
            )
        })?;
    store.migrate().await.context("applying migrations")?;
    store.check_pepper(&config.key_pepper.check_value()).await?;
    let sessions = store.session_store().await?;
    let cleanup = tokio::spawn(
        sessions
            .clone()
            .continuously_delete_expired(tokio::time::Duration::from_secs(300)),
    );
    let base_url = config.base_url.clone();
    let backend = store.backend();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = AppState::new(config, store.clone(), clock)?;
    let sealed = state.mailer.seal_kept_bodies().await?;
    if sealed > 0 {
        tracing::info!(emails = sealed, "sealed kept email bodies in the outbox");
    }
    state
        .check_sso_providers()
        .await
        .context("checking the SSO providers (KEYWARD_SSO_PROVIDERS_FILE)")?;
    let flusher = state.verifier.spawn_flusher();
    let checkpoints = state.audit_checkpoints().spawn();
    let dispatcher = state.dispatcher().spawn();
    let notices = state.notices().spawn();
    let listener_task = store.spawn_invalidation_listener();
    let verifier = state.verifier.clone();
    let app = keyward::router(state, sessions);

    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("listening on {}", args.bind))?;
    tracing::info!(
        backend,
        "Keyward is running at {base_url} (listening on {})",
        listener.local_addr()?
    );
    println!("Keyward dashboard: {base_url}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    cleanup.abort();
    // Deliveries and notices are claimed in the database; one cut short is retried (a
    // claimed delivery after its lease, a notice was either committed or not).
    dispatcher.abort();
    notices.abort();
    checkpoints.abort();
    // Usage counted since the last tick is written before the pool closes. The periodic
    // flusher is left running (aborting it mid-write could drop a batch); it stops by
    // itself once the store is closed. A failed write is kept and retried.
    let mut flushed = false;
    for attempt in 1..=3 {
        match tokio::time::timeout(std::time::Duration::from_secs(5), verifier.flush()).await {
            Ok(Ok(n)) => {
                tracing::info!(keys = n, "flushed key usage");
                flushed = true;
                break;
            }
            Ok(Err(e)) => tracing::warn!(attempt, error = %e, "could not flush key usage"),
            Err(_) => tracing::warn!(attempt, "flushing key usage timed out"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    if !flushed {
        tracing::error!("key usage since the last flush is lost (last-used times and counts)");
    }
    store.close().await;
    let _ = flusher.await;
    if let Some(t) = listener_task {
        t.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}

async fn audit_command(cmd: AuditCommand) -> anyhow::Result<()> {
    use keyward::audit::{chain::AuditPublicKey, integrity};
    match cmd {
        AuditCommand::Verify {
            org,
            public_keys,
            store: args,
        } => {
            let mut keys = public_keys
                .iter()
                .map(|k| AuditPublicKey::parse(k).context("--public-key"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if let Some(key) = keyward::config::read_audit_signing_key(&args)? {
                keys.push(key.public());
            }
            let store = Store::connect(&args.database_url).await?;
            store.migrate().await?;
            let started = std::time::Instant::now();
            let report = integrity::verify(&store, &keys, org.as_deref()).await?;
            let took = started.elapsed();
            for f in &report.findings {
                eprintln!("{}", f.message);
            }
            if let Some(first) = report.first() {
                match first.row_id {
                    Some(id) => bail!(
                        "the audit log was tampered with: first bad row {id}: {}",
                        first.message
                    ),
                    None => bail!("the audit log was tampered with: {}", first.message),
                }
            }
            println!(
                "audit log intact: {} rows in {} chains, {} signed checkpoints ({:.2} s)",
                report.rows,
                report.chains,
                report.checkpoints,
                took.as_secs_f64()
            );
            if report.checkpoints == 0 && report.rows > 0 {
                println!(
                    "note: no checkpoint yet; without one, rows are consistent but not proven unaltered (keyward audit checkpoint)"
                );
            }
            Ok(())
        }
        AuditCommand::Checkpoint { org, store: args } => {
            let key = keyward::config::load_audit_signing_key(&args)?;
            let store = Store::connect(&args.database_url).await?;
            store.migrate().await?;
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let n = integrity::Checkpoints::new(store, clock, key)
                .checkpoint_now(org.as_deref())
                .await?;
            println!("signed {n} checkpoints");
            Ok(())
        }
        AuditCommand::PublicKey { store: args } => {
            let key = keyward::config::load_audit_signing_key(&args)?;
            // The key alone on the first line, for scripts.
            println!("{}", key.public().to_base64());
            println!("key id {}", key.public().id());
            Ok(())
        }
    }
}

/// `keyward keys import FILE`: the CLI door onto `keyward::keys::import`.
async fn import_keys(file: &std::path::Path, args: &ServeArgs) -> anyhow::Result<()> {
    use keyward::keys::{
        import::{ImportError, read_json_lines},
        service::Keys,
    };
    let text = if file == std::path::Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the records from stdin")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let config = Config::from_args(args)?;
    let store = Store::connect_with(&args.store.database_url, args.store.store_options())
        .await
        .with_context(|| {
            format!(
                "opening the database ({})",
                redact(&args.store.database_url)
            )
        })?;
    store.migrate().await.context("applying migrations")?;
    // Keys hashed with another pepper than the server's would never verify.
    store.check_pepper(&config.key_pepper.check_value()).await?;
    let records = read_json_lines(&text);
    if records.is_empty() {
        bail!("{} holds no records", file.display());
    }
    let clock = SystemClock;
    let now = clock.unix();
    let keys = Keys::new(&store, &clock, &config);
    let audit = || NewAudit::new(AuditAction::KeyImported, now).actor(None, "operator:cli");
    let report = match keys.import(records, audit).await {
        Ok(report) => report,
        Err(ImportError::Invalid(lines)) => {
            for l in &lines {
                eprintln!("line {}: {}: {}", l.line, l.field, l.message);
            }
            store.close().await;
            bail!(
                "nothing was imported: {} problem(s) in {}; fix them and run the import again",
                lines.len(),
                file.display()
            );
        }
        Err(ImportError::Store(e)) => return Err(e.into()),
    };
    for r in &report.records {
        match &r.reason {
            Some(why) => println!("line {}: {} {} ({why})", r.line, r.status, r.key_id),
            None => println!("line {}: {} {}", r.line, r.status, r.key_id),
        }
    }
    println!(
        "imported {} key(s), skipped {} already imported",
        report.imported, report.skipped
    );
    store.close().await;
    Ok(())
}

async fn backup(path: &std::path::Path, args: &StoreArgs) -> anyhow::Result<()> {
    // Never create an empty database where the operator meant an existing one.
    if let Some(file) = args
        .database_url
        .strip_prefix("sqlite://")
        .or_else(|| args.database_url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or(rest))
        && !file.is_empty()
        && file != ":memory:"
        && !std::path::Path::new(file).exists()
    {
        bail!("there is no database at {file} (DATABASE_URL); nothing to back up");
    }
    let store = Store::connect_with(&args.database_url, args.store_options())
        .await
        .with_context(|| format!("opening the database ({})", redact(&args.database_url)))?;
    let bytes = store.backup_to(path).await;
    store.close().await;
    let bytes = bytes?;
    println!(
        "backed up {} ({bytes} bytes) to {}",
        store.backend(),
        path.display()
    );
    println!(
        "keep the secrets file ({}) or KEYWARD_KEY_PEPPER with it: without the same pepper no key in the backup verifies",
        args.secrets_file.display()
    );
    Ok(())
}

/// Hides a password in a database URL for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

async fn create_user(
    email: &str,
    org: Option<&str>,
    role: &str,
    args: &StoreArgs,
) -> anyhow::Result<()> {
    let email = normalize_email(email);
    if !valid_email(&email) {
        bail!("{email:?} is not a valid email address");
    }
    let role = Role::parse(role)
        .with_context(|| format!("unknown role {role:?} (owner, admin, developer, viewer)"))?;
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the password from stdin")?;
    // One trailing newline is the terminator of `echo`/a here-string, not part of the password.
    let pw = input.strip_suffix('\n').unwrap_or(&input);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    let password = SecretString::from(pw.to_string());
    let min_len = args
        .min_password_length
        .max(keyward::config::MIN_PASSWORD_FLOOR);
    if let Err(why) = password::check_policy(
        password.expose_secret(),
        &email,
        min_len,
        &args.product_name,
    ) {
        bail!("password refused: {why}");
    }
    let store = Store::connect_with(&args.database_url, args.store_options()).await?;
    store.migrate().await?;
    let hash = password::Passwords::new()?.hash(&password).await?;
    let now = SystemClock.unix();
    let local = email.split('@').next().unwrap_or("my");
    let new = NewUser {
        email: email.clone(),
        name: String::new(),
        password_hash: Some(hash),
        // The operator vouches for the address.
        email_verified_at: Some(now),
    };
    let audit = NewAudit::new(AuditAction::UserCreatedByOperator, now);
    let (user, _) = match store
        .create_user(&new, &format!("{local}'s organization"), now, audit)
        .await
    {
        Err(StoreError::Conflict) => bail!("a user with email {email} already exists"),
        other => other?,
    };
    println!("created user {email} ({})", user.id);
    if let Some(org) = org {
        // An existing organization is named by id only: names are not unique, and joining
        // "whichever org is called Acme" could hand the user to a stranger's org.
        let (org_id, org_name) = match store.org(org).await? {
            Some(o) => (o.id, o.name),
            None => {
                if role != Role::Owner {
                    bail!(
                        "no organization has id {org:?}; to create an organization named {org:?}, use --role owner"
                    );
                }
                let audit =
                    NewAudit::new(AuditAction::OrgCreated, now).actor(Some(&user.id), &email);
                let o = store.create_org(&user.id, org, now, audit).await?;
                (o.id, o.name)
            }
        };
        let audit = NewAudit::new(AuditAction::MemberAdded, now)
            .actor(None, "operator (CLI)")
            .target("user", &user.id, &email)
            .details(serde_json::json!({ "role": role.as_str() }));
        store
            .add_member(&org_id, &user.id, role.as_str(), audit)
            .await?;
        println!("added {email} to {org_name} ({org_id}) as {role}");
    }
    Ok(())
}
