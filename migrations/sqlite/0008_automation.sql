-- Automation: the "API keys may create keys" switch, webhooks with a durable delivery
-- outbox, and the expiry notices already sent (so each goes out once, across restarts and
-- nodes).
ALTER TABLE organizations ADD COLUMN api_keys_can_create_keys INTEGER NOT NULL DEFAULT 0
    CHECK (api_keys_can_create_keys IN (0, 1));

CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    url         TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    events      TEXT NOT NULL,               -- space-separated event types
    secret      TEXT NOT NULL,               -- sealed signing secret
    created_by  TEXT REFERENCES users(id),
    created_at  INTEGER NOT NULL
);
CREATE INDEX webhooks_org ON webhooks(org_id);

-- Written in the same transaction as the event it announces.
CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    webhook_id       TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    org_id           TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    locked_until     INTEGER,
    last_attempt_at  INTEGER,
    last_status_code INTEGER,
    last_error       TEXT NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries(webhook_id, created_at);

CREATE TABLE key_notices (
    key_id  TEXT NOT NULL REFERENCES api_keys(id),
    kind    TEXT NOT NULL CHECK (kind IN ('expiring_7d', 'expiring_1d', 'expired')),
    sent_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, kind)
);
