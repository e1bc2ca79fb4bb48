-- Issue 14: Keyward in front of an API business.

-- Organizations mapped to the team's customers: an optional id of the team's own,
-- unique per deployment (NULLs do not collide).
ALTER TABLE organizations ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX organizations_external_id ON organizations(external_id);

-- Accounts handed in by the team's app are linked by (operator credential name, the
-- app's user id), never by email: an email is unique only among Keyward's own accounts,
-- so a hand-off naming someone else's email makes a separate account, not a takeover.
ALTER TABLE users ADD COLUMN external_issuer TEXT;
ALTER TABLE users ADD COLUMN external_user_id TEXT;
ALTER TABLE users ADD COLUMN portal_return_url TEXT;   -- "Back to <product>" (the last hand-off's)
ALTER TABLE users ADD CONSTRAINT users_external_both
    CHECK ((external_issuer IS NULL) = (external_user_id IS NULL));
ALTER TABLE users DROP CONSTRAINT users_email_key;
CREATE UNIQUE INDEX users_email_local ON users(email) WHERE external_issuer IS NULL;
CREATE UNIQUE INDEX users_external ON users(external_issuer, external_user_id);

-- Single-use sign-in hand-offs (POST /api/v1/portal/sessions). Only the token's SHA-256
-- is kept; the account and organization are made or updated when the link is opened.
CREATE TABLE portal_tokens (
    token_hash        BYTEA PRIMARY KEY,
    issuer            TEXT NOT NULL,
    external_user_id  TEXT NOT NULL,
    email             TEXT NOT NULL,
    name              TEXT NOT NULL,
    org_external_id   TEXT NOT NULL,
    org_name          TEXT NOT NULL,
    role              TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'viewer')),
    return_url        TEXT,
    strong_auth       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    used_at           BIGINT
);
CREATE INDEX portal_tokens_expires ON portal_tokens(expires_at);
