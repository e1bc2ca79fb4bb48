-- Dashboard sessions in a table of our own (replacing tower-sessions-sqlx-store's
-- `tower_sessions.session`, which kept the raw session ids). The cookie's id is stored only
-- as its SHA-256, so a database dump holds no usable session. Sessions of the old table
-- are dropped: everyone signs in again once.
DROP SCHEMA IF EXISTS tower_sessions CASCADE;
CREATE TABLE sessions (
    id_hash     BYTEA PRIMARY KEY,         -- SHA-256 of the cookie value
    handle      TEXT NOT NULL UNIQUE,      -- random public name for "sign out this session"
    user_id     TEXT,                      -- NULL before sign-in (the login form's CSRF token)
    data        TEXT NOT NULL,             -- the session's values (JSON)
    created_at  BIGINT NOT NULL,           -- sign-in time (or first use when anonymous)
    last_active BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,           -- idle expiry of the record (tower-sessions)
    ip          TEXT NOT NULL DEFAULT '',  -- at sign-in
    user_agent  TEXT NOT NULL DEFAULT ''   -- at sign-in
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_expires ON sessions(expires_at);
