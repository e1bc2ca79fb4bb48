//! The `keyward user create` command bootstraps a closed instance.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use reqwest::StatusCode;

use crate::{
    both,
    helpers::{PASSWORD, TestApp},
};

pub(crate) fn keyward(args: &[&str], db_url: &str, stdin: &str) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("kw-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .env("DATABASE_URL", db_url)
        .env("KEYWARD_SECRETS_FILE", dir.join("secrets"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(dir);
    out
}

async fn user_create_bootstraps_an_account(app: TestApp) {
    let out = keyward(
        &[
            "user",
            "create",
            "--email",
            "Ops@Example.com",
            "--org",
            "Acme",
            "--role",
            "owner",
        ],
        &app.db_url,
        &format!("{PASSWORD}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("added ops@example.com to Acme ("));
    let user = app
        .store
        .user_by_email("ops@example.com")
        .await
        .unwrap()
        .unwrap();
    let orgs = app.store.memberships(&user.id).await.unwrap();
    assert!(
        orgs.iter()
            .any(|m| m.org_name == "Acme" && m.role == "owner")
    );
    let acme = orgs
        .iter()
        .find(|m| m.org_name == "Acme")
        .unwrap()
        .org_id
        .clone();

    // A teammate joins the existing organization by id; a name never picks an existing org.
    let out = keyward(
        &[
            "user",
            "create",
            "--email",
            "dev@example.com",
            "--org",
            &acme,
            "--role",
            "developer",
        ],
        &app.db_url,
        PASSWORD,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = app
        .store
        .user_by_email("dev@example.com")
        .await
        .unwrap()
        .unwrap();
    let m = app.store.membership(&dev.id, &acme).await.unwrap().unwrap();
    assert_eq!(m.role, "developer");
    let out = keyward(
        &[
            "user",
            "create",
            "--email",
            "x@example.com",
            "--org",
            "Acme",
            "--role",
            "admin",
        ],
        &app.db_url,
        PASSWORD,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("use --role owner"));

    // The password (without the newline) signs in.
    let mut b = app.browser();
    assert_eq!(
        b.sign_in("ops@example.com", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );

    // Refusals are explained and leave nothing behind.
    let weak = keyward(
        &["user", "create", "--email", "weak@example.com"],
        &app.db_url,
        "short\n",
    );
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 15 characters"));
    let dup = keyward(
        &["user", "create", "--email", "ops@example.com"],
        &app.db_url,
        PASSWORD,
    );
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let role = keyward(
        &[
            "user",
            "create",
            "--email",
            "r@example.com",
            "--role",
            "root",
        ],
        &app.db_url,
        PASSWORD,
    );
    assert!(String::from_utf8_lossy(&role.stderr).contains("unknown role"));
    assert!(
        app.store
            .user_by_email("weak@example.com")
            .await
            .unwrap()
            .is_none()
    );
}
both!(user_create_bootstraps_an_account);
