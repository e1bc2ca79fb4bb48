CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY,
    org_id         TEXT NOT NULL REFERENCES organizations(id),
    created_by     TEXT REFERENCES users(id),
    name           TEXT NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    environment    TEXT NOT NULL CHECK (environment IN ('live', 'test')),
    key_hash       BYTEA NOT NULL UNIQUE,    -- HMAC-SHA-256(pepper, key); never the key
    pepper_version BIGINT NOT NULL DEFAULT 1,
    display_prefix TEXT NOT NULL,            -- e.g. kw_live_AbCd
    last4          TEXT NOT NULL,
    scopes         TEXT NOT NULL,            -- space-separated, catalog order
    metadata       TEXT NOT NULL DEFAULT '{}',
    enabled        BOOLEAN NOT NULL DEFAULT TRUE,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    expires_at     BIGINT,
    revoked_at     BIGINT,                   -- when revocation takes (or took) effect; a roll sets it to the grace deadline
    last_used_at   BIGINT,
    rolled_from    TEXT REFERENCES api_keys(id)
);
CREATE INDEX api_keys_org_created ON api_keys(org_id, created_at);
