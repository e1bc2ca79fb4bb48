-- Issue 14: Keyward in front of an API business.

-- Organizations mapped to the team's customers: an optional id of the team's own,
-- unique per deployment (NULLs do not collide).
ALTER TABLE organizations ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX organizations_external_id ON organizations(external_id);

-- Accounts handed in by the team's app are linked by (operator credential name, the
-- app's user id), never by email: an email is unique only among Keyward's own accounts,
-- so a hand-off naming someone else's email makes a separate account, not a takeover.
-- SQLite cannot drop a column's UNIQUE, so the table is rebuilt (Store::migrate runs the
-- migrations with foreign keys off and checks them afterwards).
CREATE TABLE users_new (
    id                      TEXT PRIMARY KEY,
    email                   TEXT NOT NULL,      -- trimmed and lowercased
    name                    TEXT NOT NULL DEFAULT '',
    password_hash           TEXT,               -- PHC string (argon2id); NULL without a password
    created_at              INTEGER NOT NULL,
    disabled_at             INTEGER,
    failed_logins           INTEGER NOT NULL DEFAULT 0,
    last_login_at           INTEGER,
    session_epoch           INTEGER NOT NULL DEFAULT 0,
    locked_until            INTEGER,
    failures_unaudited      INTEGER NOT NULL DEFAULT 0,
    failure_audit_at        INTEGER,
    email_verified_at       INTEGER,
    password_needs_two_step INTEGER NOT NULL DEFAULT 0 CHECK (password_needs_two_step IN (0, 1)),
    external_issuer         TEXT,               -- the operator credential's name
    external_user_id        TEXT,               -- the team's id for this person
    portal_return_url       TEXT,               -- "Back to <product>" (the last hand-off's)
    CHECK ((external_issuer IS NULL) = (external_user_id IS NULL))
);
INSERT INTO users_new (id, email, name, password_hash, created_at, disabled_at, failed_logins,
    last_login_at, session_epoch, locked_until, failures_unaudited, failure_audit_at,
    email_verified_at, password_needs_two_step)
SELECT id, email, name, password_hash, created_at, disabled_at, failed_logins,
    last_login_at, session_epoch, locked_until, failures_unaudited, failure_audit_at,
    email_verified_at, password_needs_two_step FROM users;
DROP TABLE users;
ALTER TABLE users_new RENAME TO users;
CREATE UNIQUE INDEX users_email_local ON users(email) WHERE external_issuer IS NULL;
CREATE UNIQUE INDEX users_external ON users(external_issuer, external_user_id);

-- Single-use sign-in hand-offs (POST /api/v1/portal/sessions). Only the token's SHA-256
-- is kept; the account and organization are made or updated when the link is opened.
CREATE TABLE portal_tokens (
    token_hash        BLOB PRIMARY KEY,
    issuer            TEXT NOT NULL,
    external_user_id  TEXT NOT NULL,
    email             TEXT NOT NULL,
    name              TEXT NOT NULL,
    org_external_id   TEXT NOT NULL,
    org_name          TEXT NOT NULL,
    role              TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'viewer')),
    return_url        TEXT,
    strong_auth       INTEGER NOT NULL DEFAULT 0 CHECK (strong_auth IN (0, 1)),
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    used_at           INTEGER
);
CREATE INDEX portal_tokens_expires ON portal_tokens(expires_at);
