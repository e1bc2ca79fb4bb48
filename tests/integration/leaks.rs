//! Leaked-key reports in GitHub's secret-scanning format, signed with a P-256 key pair the
//! test generates.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use keyward::{leaks::LeakAction, verify::VerifyCode};
use p256::{
    ecdsa::{Signature, SigningKey, signature::Signer},
    pkcs8::{EncodePublicKey, LineEnding},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{Backend, TestApp},
    webhooks::{Receiver, add_endpoint},
};

struct Reporter {
    key: SigningKey,
}

impl Reporter {
    fn new() -> Self {
        Self {
            key: SigningKey::random(&mut rsa::rand_core::OsRng),
        }
    }

    /// GitHub's `public_keys` document for this key.
    fn keys_json(&self, id: &str) -> String {
        let pem = self
            .key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        json!({ "public_keys": [{ "key_identifier": id, "key": pem, "is_current": true }] })
            .to_string()
    }

    async fn send(
        &self,
        app: &TestApp,
        key_id: &str,
        body: &str,
        sign_body: &str,
    ) -> (StatusCode, Value) {
        let sig: Signature = self.key.sign(sign_body.as_bytes());
        let res = reqwest::Client::new()
            .post(format!("{}/v1/leaks/github", app.base))
            .header("content-type", "application/json")
            .header("github-public-key-identifier", key_id)
            .header("github-public-key-signature", B64.encode(sig.to_der()))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

fn report(tokens: &[&str]) -> String {
    Value::from(
        tokens
            .iter()
            .map(|t| json!({ "token": t, "type": "keyward_api_key", "url": "https://github.com/acme/app/blob/main/.env", "source": "content" }))
            .collect::<Vec<_>>(),
    )
    .to_string()
}

async fn leaked_keys_are_revoked(backend: Backend) {
    let reporter = Reporter::new();
    let keys = keyward::leaks::parse_keys(&reporter.keys_json("kid-1")).unwrap();
    let Some(app) = TestApp::spawn_with(backend, |c| c.leak_report_keys = keys).await else {
        return;
    };
    let rx = Receiver::start().await;
    let mut admin = app.signed_up("leaks@example.com").await;
    add_endpoint(&mut admin, &rx.url, &["key.leaked", "key.revoked"]).await;
    let (key_id, key) = admin.new_key("leaky").await;

    // Unsigned, wrongly signed, or signed by an unknown key: refused, nothing happens.
    let body = report(&[&key]);
    let res = reqwest::Client::new()
        .post(format!("{}/v1/leaks/github", app.base))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = reporter.send(&app, "kid-1", &body, "something else").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, err) = reporter.send(&app, "kid-2", &body, &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"]["code"], "invalid_signature");
    let v = app.state.verifier.verify(Some(&key), &[]).await.unwrap();
    assert_eq!(v.code, VerifyCode::Valid);

    // A signed report: ours is revoked; the rest are false positives.
    let unknown =
        keyward::keys::token::PlainKey::generate("kw", keyward::keys::token::Environment::Live)
            .unwrap();
    let body = report(&[&key, "not-a-key", unknown.expose()]);
    let (status, answer) = reporter.send(&app, "kid-1", &body, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let labels: Vec<&str> = answer
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["true_positive", "false_positive", "false_positive"]
    );
    assert_eq!(answer[0]["token_raw"], key.as_str());
    let v = app.state.verifier.verify(Some(&key), &[]).await.unwrap();
    assert_ne!(v.code, VerifyCode::Valid, "revoked");
    let page = admin.get(&format!("/settings/api-keys/{key_id}")).await;
    assert!(page.shows("Key reported as leaked"), "{}", page.body);
    let mail = app.state.mailer.outbox(10).await.unwrap();
    assert!(
        mail.iter().any(
            |m| m.recipient == "leaks@example.com" && m.subject.contains("was found in public")
        )
    );
    app.state.dispatcher().deliver_due().await.unwrap();
    let types: Vec<String> = rx
        .events()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert!(
        types.contains(&"key.leaked".to_string()) && types.contains(&"key.revoked".to_string()),
        "{types:?}"
    );

    // Malformed JSON is a clean 422.
    let (status, err) = reporter
        .send(&app, "kid-1", "{\"nope\":1}", "{\"nope\":1}")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"]["code"], "invalid_body");
}

async fn notify_only_keeps_the_key(backend: Backend) {
    let reporter = Reporter::new();
    let keys = keyward::leaks::parse_keys(&reporter.keys_json("kid-1")).unwrap();
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.leak_report_keys = keys;
        c.leak_action = LeakAction::Notify;
    })
    .await
    else {
        return;
    };
    let mut admin = app.signed_up("notify@example.com").await;
    let (_, key) = admin.new_key("watched").await;
    let body = report(&[&key]);
    let (status, answer) = reporter.send(&app, "kid-1", &body, &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer[0]["label"], "true_positive");
    let v = app.state.verifier.verify(Some(&key), &[]).await.unwrap();
    assert_eq!(v.code, VerifyCode::Valid, "only reported");
    let events = app.audit_events().await;
    assert!(
        events
            .iter()
            .any(|(a, d)| a == "key.leaked" && d["action"] == "notified")
    );
}

async fn not_configured(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let res = reqwest::Client::new()
        .post(format!("{}/v1/leaks/github", app.base))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

macro_rules! backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::helpers::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(crate::helpers::Backend::Postgres).await;
            }
        }
    };
}
backends!(leaked_keys_are_revoked);
backends!(notify_only_keeps_the_key);
backends!(not_configured);
