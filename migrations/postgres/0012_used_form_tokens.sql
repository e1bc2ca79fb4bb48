-- One-time form tokens already used. The session keeps the tokens it issued; claiming one
-- here (a primary-key insert) is what makes "use once" atomic when the same form is
-- submitted several times at once.
CREATE TABLE used_form_tokens (
    token_hash  TEXT PRIMARY KEY,          -- sha256 (hex) of the token
    used_at     BIGINT NOT NULL
);
CREATE INDEX used_form_tokens_used_at ON used_form_tokens (used_at);
