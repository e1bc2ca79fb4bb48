//! Settings → Audit log: contents, filters, exports, append-only storage.

use reqwest::StatusCode;

use crate::{
    both,
    helpers::{PASSWORD, TestApp},
};

async fn audit_page_filters_and_exports(app: TestApp) {
    let mut b = app.signed_up("aud@example.com").await;
    let (key_id, _) = b.new_key("alpha").await;
    let (other_id, _) = b.new_key("beta").await;
    b.post(&format!("/settings/api-keys/{key_id}/revoke"), &[])
        .await;
    b.post("/logout", &[]).await;
    b.sign_in("aud@example.com", "wrong password entirely")
        .await;
    b.sign_in("aud@example.com", PASSWORD).await;

    let page = b.get("/settings/audit-log").await;
    assert_eq!(page.status, StatusCode::OK);
    for action in [
        "user.signed_up",
        "key.created",
        "key.revoked",
        "auth.signed_out",
        "auth.sign_in_failed",
        "auth.signed_in",
    ] {
        assert!(page.body.contains(action), "{action} not on the page");
    }
    assert!(page.body.contains("127.0.0.1"));
    assert!(page.body.contains("keyward-tests/1.0"));
    assert!(page.body.contains(" UTC"));

    // Filter by key: only that key's events.
    let by_key = b.get(&format!("/settings/audit-log?key={key_id}")).await;
    assert!(by_key.body.contains("key.revoked"));
    assert!(
        !by_key
            .body
            .contains(&format!("/settings/api-keys/{other_id}"))
    );
    // Filter by action and actor.
    let by_action = b.get("/settings/audit-log?action=key.created").await;
    assert_eq!(
        by_action
            .body
            .matches("<span class=\"mono\">key.created</span>")
            .count(),
        2
    );
    let nobody = b
        .get("/settings/audit-log?actor=nobody%40example.com")
        .await;
    assert!(nobody.body.contains("No events match"));
    // Date range: nothing before today, everything today.
    let today = {
        use keyward::clock::Clock;
        app.clock.now().date().to_string()
    };
    let future = b.get("/settings/audit-log?from=2999-01-01").await;
    assert!(future.body.contains("No events match"));
    let day = b
        .get(&format!("/settings/audit-log?from={today}&to={today}"))
        .await;
    assert!(day.body.contains("key.revoked"));
    let bad = b.get("/settings/audit-log?from=yesterday").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("2026-01-31"));

    // Exports.
    let csv = b
        .get(&format!(
            "/settings/audit-log/export?format=csv&key={key_id}"
        ))
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(csv.header("content-type"), "text/csv; charset=utf-8");
    assert!(
        csv.header("content-disposition")
            .starts_with("attachment; filename=\"keyward-audit-")
    );
    let lines: Vec<&str> = csv.body.lines().collect();
    assert!(lines[0].starts_with("id,occurred_at,actor_email"));
    assert_eq!(lines.len(), 3, "{}", csv.body); // header + created + revoked
    let json = b.get("/settings/audit-log/export?format=json").await;
    assert_eq!(json.header("content-type"), "application/json");
    let rows: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert!(rows.as_array().unwrap().len() >= 7);
    assert_eq!(
        b.get("/settings/audit-log/export?format=xml").await.status,
        StatusCode::BAD_REQUEST
    );
}
both!(audit_page_filters_and_exports);

async fn audit_table_is_append_only(app: TestApp) {
    app.signed_up("ro@example.com").await;
    let upd = app
        .raw_execute("UPDATE audit_events SET action = 'tampered'")
        .await;
    assert!(upd.is_err(), "UPDATE must be rejected");
    assert!(upd.unwrap_err().to_string().contains("append-only"));
    let del = app.raw_execute("DELETE FROM audit_events").await;
    assert!(del.is_err(), "DELETE must be rejected");
}
both!(audit_table_is_append_only);

async fn failed_audit_rolls_back_the_change(app: TestApp) {
    // Make every audit insert fail: the key must not be created either.
    let mut b = app.signed_up("tx@example.com").await;
    let trigger = match app.backend {
        crate::helpers::Backend::Sqlite => {
            "CREATE TRIGGER audit_fail BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        }
        crate::helpers::Backend::Postgres => {
            "CREATE TRIGGER audit_fail BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"
        }
    };
    app.raw_execute(trigger).await.unwrap();
    let res = b
        .create_key(&[
            ("name", "doomed"),
            ("environment", "live"),
            ("preset", "Read-only"),
            ("expiry", "7d"),
        ])
        .await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(res.new_key().is_none());
    assert!(
        !res.body.contains("injected") && !res.body.contains("append-only"),
        "no internals in the page"
    );
    let user = app
        .store
        .user_by_email("tx@example.com")
        .await
        .unwrap()
        .unwrap();
    let org = &app.store.memberships(&user.id).await.unwrap()[0];
    let (keys, total) = app
        .store
        .list_keys(&org.org_id, &Default::default(), 0, 10, 0)
        .await
        .unwrap();
    assert_eq!((keys.len(), total), (0, 0));
}
both!(failed_audit_rolls_back_the_change);
