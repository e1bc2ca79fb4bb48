-- Sign-in throttling (issue 11): escalating delay per account, the password disabled after
-- 100 consecutive failures, coalesced failure audit rows, and device cookies.
ALTER TABLE users ADD COLUMN locked_until BIGINT;
-- Failures not yet written to the audit log, and when the last failure row was written.
ALTER TABLE users ADD COLUMN failures_unaudited BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN failure_audit_at BIGINT;

-- Browsers that signed in to an account before (OWASP device cookies): each keeps its own
-- failure budget for that account, so an attacker's failures elsewhere cannot lock it out.
CREATE TABLE trusted_devices (
    token_hash    BYTEA NOT NULL,             -- SHA-256 of the cookie's random token
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT NOT NULL,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until  BIGINT,
    PRIMARY KEY (token_hash, user_id)
);
CREATE INDEX trusted_devices_user ON trusted_devices(user_id);
