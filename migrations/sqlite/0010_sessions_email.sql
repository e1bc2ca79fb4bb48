-- Dashboard sessions in a table of our own (replacing tower-sessions-sqlx-store's
-- `tower_sessions` table, which kept the raw session ids). The cookie's id is stored only
-- as its SHA-256, so a database dump holds no usable session. Sessions of the old table
-- are dropped: everyone signs in again once.
DROP TABLE IF EXISTS tower_sessions;
CREATE TABLE sessions (
    id_hash     BLOB PRIMARY KEY,          -- SHA-256 of the cookie value
    handle      TEXT NOT NULL UNIQUE,      -- random public name for "sign out this session"
    user_id     TEXT,                      -- NULL before sign-in (the login form's CSRF token)
    data        TEXT NOT NULL,             -- the session's values (JSON)
    created_at  INTEGER NOT NULL,          -- sign-in time (or first use when anonymous)
    last_active INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,          -- idle expiry of the record (tower-sessions)
    ip          TEXT NOT NULL DEFAULT '',  -- at sign-in
    user_agent  TEXT NOT NULL DEFAULT ''   -- at sign-in
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_expires ON sessions(expires_at);

-- Email ownership. NULL: not verified. Accounts that exist before this migration start
-- unverified (they keep using their personal organization; see the README).
ALTER TABLE users ADD COLUMN email_verified_at INTEGER;

-- Email verification links: single use, 24 hours, token stored hashed; a newer one voids
-- older ones. Bound to the address it was sent to.
CREATE TABLE email_verifications (
    token_hash BLOB PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id),
    email      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX email_verifications_user ON email_verifications(user_id);
CREATE INDEX outbox_recipient ON outbox(recipient, created_at);
