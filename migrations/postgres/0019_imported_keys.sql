-- Issue 14 §4: keys the deploying team issued before Keyward, imported.

-- How `key_hash` was made:
--   'keyward'          HMAC-SHA-256(pepper, key): every key Keyward made, and every imported
--                      key once it has been used (or that was imported as plaintext);
--   'imported_sha256'  HMAC-SHA-256(pepper, domain || SHA-256(key)): a key imported as the
--                      team's SHA-256, until its first successful verification re-hashes it.
-- Neither is the key nor its unkeyed SHA-256.
ALTER TABLE api_keys ADD COLUMN hash_scheme TEXT NOT NULL DEFAULT 'keyward'
    CHECK (hash_scheme IN ('keyward', 'imported_sha256'));
-- When the key was imported (NULL: made by Keyward).
ALTER TABLE api_keys ADD COLUMN imported_at BIGINT;
-- The imported-scheme hash, kept after the re-hash: what makes importing the same record
-- again a no-op ("already imported") even after the key was used.
ALTER TABLE api_keys ADD COLUMN import_hash BYTEA;
CREATE UNIQUE INDEX api_keys_import_hash ON api_keys(import_hash);
