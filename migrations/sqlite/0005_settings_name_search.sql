-- Instance settings. `pepper_check` = HMAC(pepper, "keyward-pepper-check"): start-up refuses
-- a pepper that would make every stored key unverifiable.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Key names lowercased by Keyward (Unicode-aware), so search behaves the same on both
-- databases (SQLite's LOWER() folds only ASCII).
ALTER TABLE api_keys ADD COLUMN name_lower TEXT NOT NULL DEFAULT '';
UPDATE api_keys SET name_lower = LOWER(name);
