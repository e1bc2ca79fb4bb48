-- Credits: a balance per key (NULL = unlimited), spent by verifications with one atomic
-- conditional UPDATE, with an optional refill (daily, or monthly on a day 1–31) that sets
-- the balance to the refill amount. `credits_refilled_at` is when the balance was last set
-- or refilled (Unix seconds); a refill is due once a refill boundary has passed since.
-- The two flags make the `key.credits_low` and `key.credits_exhausted` events fire once
-- per crossing; a refill or a top-up re-arms them.
ALTER TABLE api_keys ADD COLUMN credits_remaining INTEGER;
ALTER TABLE api_keys ADD COLUMN credits_refill_interval TEXT CHECK (credits_refill_interval IN ('daily', 'monthly'));
ALTER TABLE api_keys ADD COLUMN credits_refill_amount INTEGER;
ALTER TABLE api_keys ADD COLUMN credits_refill_day INTEGER;
ALTER TABLE api_keys ADD COLUMN credits_refilled_at INTEGER;
ALTER TABLE api_keys ADD COLUMN credits_low_threshold INTEGER;
ALTER TABLE api_keys ADD COLUMN credits_low_notified INTEGER NOT NULL DEFAULT 0 CHECK (credits_low_notified IN (0, 1));
ALTER TABLE api_keys ADD COLUMN credits_exhausted_notified INTEGER NOT NULL DEFAULT 0 CHECK (credits_exhausted_notified IN (0, 1));
