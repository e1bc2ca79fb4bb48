-- Invitations to join an organization: single use, 7-day expiry, token stored hashed.
CREATE TABLE invitations (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    email       TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'developer', 'viewer')),
    token_hash  BLOB NOT NULL UNIQUE,
    invited_by  TEXT REFERENCES users(id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    accepted_at INTEGER,
    accepted_by TEXT REFERENCES users(id),
    revoked_at  INTEGER
);
CREATE INDEX invitations_org ON invitations(org_id, created_at);

-- Password reset tokens: single use, 30 minutes, stored hashed; a newer one voids older ones.
CREATE TABLE password_resets (
    token_hash BLOB PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX password_resets_user ON password_resets(user_id);

-- Outgoing email, for the operator (body kept only when no SMTP server is configured).
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at INTEGER NOT NULL,
    recipient  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    body       TEXT NOT NULL DEFAULT '',
    status     TEXT NOT NULL,          -- sent | failed | logged
    error      TEXT NOT NULL DEFAULT ''
);

-- Bumped to sign a user out everywhere (password reset, "sign out other sessions").
ALTER TABLE users ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;
