-- Per-key limits (NULL = none) and the IP allowlist (space-separated CIDRs, empty = any).
ALTER TABLE api_keys ADD COLUMN rate_limit BIGINT;
ALTER TABLE api_keys ADD COLUMN rate_window_secs BIGINT NOT NULL DEFAULT 60;
ALTER TABLE api_keys ADD COLUMN rate_burst BIGINT;
ALTER TABLE api_keys ADD COLUMN daily_quota BIGINT;
ALTER TABLE api_keys ADD COLUMN ip_allowlist TEXT NOT NULL DEFAULT '';

-- Organization defaults for new keys.
ALTER TABLE organizations ADD COLUMN default_rate_limit BIGINT;
ALTER TABLE organizations ADD COLUMN default_rate_window_secs BIGINT NOT NULL DEFAULT 60;
ALTER TABLE organizations ADD COLUMN default_daily_quota BIGINT;

-- Verifications per key per UTC day (day = Unix day number), flushed in batches.
CREATE TABLE key_usage_daily (
    key_id TEXT NOT NULL REFERENCES api_keys(id),
    day    BIGINT NOT NULL,
    count  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, day)
);
