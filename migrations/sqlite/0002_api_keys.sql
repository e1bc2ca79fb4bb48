CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY,
    org_id         TEXT NOT NULL REFERENCES organizations(id),
    created_by     TEXT REFERENCES users(id),
    name           TEXT NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    environment    TEXT NOT NULL CHECK (environment IN ('live', 'test')),
    key_hash       BLOB NOT NULL UNIQUE,     -- HMAC-SHA-256(pepper, key); never the key
    pepper_version INTEGER NOT NULL DEFAULT 1,
    display_prefix TEXT NOT NULL,            -- e.g. kw_live_AbCd
    last4          TEXT NOT NULL,
    scopes         TEXT NOT NULL,            -- space-separated, catalog order
    metadata       TEXT NOT NULL DEFAULT '{}',
    enabled        INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    revoked_at     INTEGER,                  -- when revocation takes (or took) effect; a roll sets it to the grace deadline
    last_used_at   INTEGER,
    rolled_from    TEXT REFERENCES api_keys(id)
);
CREATE INDEX api_keys_org_created ON api_keys(org_id, created_at);
