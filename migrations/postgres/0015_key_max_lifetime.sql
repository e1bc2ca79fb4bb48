-- Settings → Key policy → Maximum lifetime: no key may be made to live longer than this many
-- days (NULL: no maximum). Keys that already do stop verifying at `key_lifetime_enforced_at`
-- (the owner's choice: at once, or after a grace date).
ALTER TABLE organizations ADD COLUMN key_max_lifetime_days BIGINT
    CHECK (key_max_lifetime_days IS NULL OR key_max_lifetime_days BETWEEN 1 AND 1825);
ALTER TABLE organizations ADD COLUMN key_lifetime_enforced_at BIGINT;
