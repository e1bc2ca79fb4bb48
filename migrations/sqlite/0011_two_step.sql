-- Two-step verification: one TOTP authenticator per account (secret sealed), single-use
-- recovery codes (hashed), passkeys (WebAuthn credentials), and the organization policy
-- that requires a second factor of members who sign in with a password.
CREATE TABLE totp_factors (
    user_id     TEXT PRIMARY KEY REFERENCES users(id),
    secret      TEXT NOT NULL,             -- sealed (XChaCha20-Poly1305, key derived from the pepper)
    last_step   INTEGER NOT NULL,          -- the last accepted time step: it and earlier ones are refused
    created_at  INTEGER NOT NULL,
    last_used_at INTEGER
);

CREATE TABLE recovery_codes (
    user_id     TEXT NOT NULL REFERENCES users(id),
    code_hash   TEXT NOT NULL,             -- sha256 of the normalized code
    created_at  INTEGER NOT NULL,
    used_at     INTEGER,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE passkeys (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id),
    credential_id TEXT NOT NULL UNIQUE,    -- base64url
    name          TEXT NOT NULL,
    passkey       TEXT NOT NULL,           -- webauthn-rs Passkey (public key, counter), JSON
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
);
CREATE INDEX passkeys_user ON passkeys(user_id);

-- The WebAuthn user handle of each account (random, stable, not the account id).
CREATE TABLE webauthn_users (
    user_id     TEXT PRIMARY KEY REFERENCES users(id),
    handle      TEXT NOT NULL UNIQUE
);

ALTER TABLE organizations ADD COLUMN require_two_step INTEGER NOT NULL DEFAULT 0
    CHECK (require_two_step IN (0, 1));
