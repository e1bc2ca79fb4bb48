-- A password shorter than the single-factor minimum (15 by default) is allowed only while
-- the account has a second factor (NIST SP 800-63B-4 §3.1.1.2: 8 is the floor within
-- multi-factor authentication). Set when such a password is chosen; the last factor
-- cannot be removed while it is set.
ALTER TABLE users ADD COLUMN password_needs_two_step BOOLEAN NOT NULL DEFAULT FALSE;
