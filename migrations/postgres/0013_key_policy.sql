-- Settings → Key defaults → Key policy: every new key needs a description; the expiry the
-- create form starts on.
ALTER TABLE organizations ADD COLUMN key_require_description BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE organizations ADD COLUMN key_default_expiry TEXT NOT NULL DEFAULT '90d';
