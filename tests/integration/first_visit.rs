//! The first visit of a customer (issue 14 §5): no page offers a form that can only fail,
//! and signing up and in counts as a sign-in.

use crate::{both, helpers::TestApp};

async fn a_personal_organization_offers_no_forms_that_can_only_fail(app: TestApp) {
    let mut b = app.signed_up("first@example.com").await;
    let page = b.get("/settings/members").await;
    assert!(
        page.shows("This is your personal organization"),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"href="/orgs/new""#), "the way forward");
    for action in [
        "/settings/invitations\"",
        "/settings/members/transfer\"",
        "/settings/members/leave\"",
    ] {
        assert!(
            !page.body.contains(action),
            "{action} offered: {}",
            page.body
        );
    }
    // The new member's own sign-in is recorded (not "Never").
    assert!(!page.body.contains(">Never<"), "{}", page.body);
}
both!(a_personal_organization_offers_no_forms_that_can_only_fail);

async fn a_sole_owner_is_told_why_before_transferring_or_leaving(app: TestApp) {
    let mut b = app.signed_up("sole@example.com").await;
    b.get("/orgs/new").await;
    b.post("/orgs", &[("name", "Solo team")]).await;
    let page = b.get("/settings/members").await;
    assert!(page.shows("Solo team"), "{}", page.body);
    // Inviting works here; transferring and leaving would only fail, so they explain.
    assert!(
        page.body.contains("/settings/invitations\""),
        "{}",
        page.body
    );
    assert!(!page.body.contains("/settings/members/transfer\""));
    assert!(!page.body.contains("/settings/members/leave\""));
    assert!(page.shows("Invite someone first"), "{}", page.body);
    assert!(page.shows("You are the only owner"), "{}", page.body);
}
both!(a_sole_owner_is_told_why_before_transferring_or_leaving);
