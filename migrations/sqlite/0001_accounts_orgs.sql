CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,      -- trimmed and lowercased
    name          TEXT NOT NULL DEFAULT '',
    password_hash TEXT,                      -- PHC string (argon2id); NULL for SSO-only accounts
    created_at    INTEGER NOT NULL,
    disabled_at   INTEGER,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    last_login_at INTEGER
);

CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    personal    INTEGER NOT NULL DEFAULT 0 CHECK (personal IN (0, 1)),
    created_by  TEXT REFERENCES users(id),
    created_at  INTEGER NOT NULL
);

CREATE TABLE memberships (
    org_id     TEXT NOT NULL REFERENCES organizations(id),
    user_id    TEXT NOT NULL REFERENCES users(id),
    role       TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'viewer')),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user ON memberships(user_id);
