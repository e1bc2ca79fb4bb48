-- Tamper evidence (issue 15 §2). Every audit row carries its position in its chain
-- (`chain_seq`, 1, 2, … per organization; account events with no organization form the
-- chain '') and `chain_hash`, SHA-256 over a canonical encoding of the row and the previous
-- row's hash (src/audit/chain.rs). `audit_chain_heads` holds each chain's last position and
-- hash: a writer updates its chain's head row first, which serializes writers per chain.
-- `audit_checkpoints` are Ed25519 signatures over a chain head.
--
-- Rows written before this migration get their positions here (SQLite has no SHA-256);
-- their hashes are filled in by the application at start-up (`Store::migrate`), in one
-- transaction, before anything else is written. Until then a head's hash is '' (pending).
ALTER TABLE audit_events ADD COLUMN chain_seq INTEGER;
ALTER TABLE audit_events ADD COLUMN chain_hash TEXT;
CREATE INDEX audit_events_chain ON audit_events(org_id, chain_seq);

CREATE TABLE audit_chain_heads (
    chain TEXT PRIMARY KEY,   -- the organization id, '' for account events
    seq   INTEGER NOT NULL,   -- the last position written
    hash  TEXT NOT NULL       -- its hash (hex); '' while existing rows await their hashes
);

CREATE TABLE audit_checkpoints (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    chain     TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    head_hash TEXT NOT NULL,
    signed_at INTEGER NOT NULL,
    key_id    TEXT NOT NULL,  -- the first 16 hex digits of SHA-256(public key)
    signature TEXT NOT NULL,  -- base64 Ed25519 signature (src/audit/chain.rs)
    UNIQUE (chain, seq)
);

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only');
END;

-- Positions for the existing rows, in id order per chain.
DROP TRIGGER audit_events_no_update;
UPDATE audit_events SET chain_seq = n.seq
FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY org_id ORDER BY id) AS seq FROM audit_events) AS n
WHERE n.id = audit_events.id;
INSERT INTO audit_chain_heads (chain, seq, hash)
SELECT COALESCE(org_id, ''), MAX(chain_seq), '' FROM audit_events GROUP BY COALESCE(org_id, '');

-- Still append-only: the one update allowed gives a row without a hash its hash, and
-- changes nothing else.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
WHEN NOT (
    OLD.chain_hash IS NULL AND NEW.chain_hash IS NOT NULL
    AND NEW.id IS OLD.id AND NEW.chain_seq IS OLD.chain_seq
    AND NEW.occurred_at IS OLD.occurred_at AND NEW.org_id IS OLD.org_id
    AND NEW.actor_id IS OLD.actor_id AND NEW.actor_email IS OLD.actor_email
    AND NEW.action IS OLD.action AND NEW.target_type IS OLD.target_type
    AND NEW.target_id IS OLD.target_id AND NEW.target_name IS OLD.target_name
    AND NEW.ip IS OLD.ip AND NEW.user_agent IS OLD.user_agent
    AND NEW.details IS OLD.details
)
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
