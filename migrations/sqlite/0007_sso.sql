-- Single sign-on: per-organization OpenID Connect connections, the email domains each one
-- owns, and the identities (issuer, subject) linked to accounts.
CREATE TABLE sso_connections (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations(id),
    name          TEXT NOT NULL,
    issuer        TEXT NOT NULL,
    client_id     TEXT NOT NULL,
    client_secret TEXT NOT NULL,        -- sealed (XChaCha20-Poly1305, key derived from the pepper)
    default_role  TEXT NOT NULL CHECK (default_role IN ('admin', 'developer', 'viewer')),
    require_sso   INTEGER NOT NULL DEFAULT 0 CHECK (require_sso IN (0, 1)),
    created_by    TEXT REFERENCES users(id),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX sso_connections_org ON sso_connections(org_id);

-- A domain belongs to at most one connection, so "Continue with SSO" has one place to go.
CREATE TABLE sso_domains (
    domain        TEXT PRIMARY KEY,      -- lowercased
    connection_id TEXT NOT NULL REFERENCES sso_connections(id) ON DELETE CASCADE
);
CREATE INDEX sso_domains_connection ON sso_domains(connection_id);

-- An identity is (issuer, subject), never an email address.
CREATE TABLE sso_identities (
    issuer        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users(id),
    source        TEXT NOT NULL,         -- 'connection:<id>' or 'provider:<id>'
    source_name   TEXT NOT NULL,         -- the connection's or provider's name when linked
    email         TEXT NOT NULL,         -- as the provider asserted it when linked
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX sso_identities_user ON sso_identities(user_id);
