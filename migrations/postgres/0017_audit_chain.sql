-- Tamper evidence (issue 15 §2). Every audit row carries its position in its chain
-- (`chain_seq`, 1, 2, … per organization; account events with no organization form the
-- chain '') and `chain_hash`, SHA-256 over a canonical encoding of the row and the previous
-- row's hash (src/audit/chain.rs). `audit_chain_heads` holds each chain's last position and
-- hash: a writer updates its chain's head row first (a row lock held to commit), which
-- serializes concurrent writers per chain. `audit_checkpoints` are Ed25519 signatures over
-- a chain head.
--
-- Rows written before this migration get their positions here; their hashes are filled in
-- by the application at start-up (`Store::migrate`), in one transaction, before anything
-- else is written (the same code as SQLite, which has no SHA-256). Until then a head's hash
-- is '' (pending).
ALTER TABLE audit_events ADD COLUMN chain_seq BIGINT;
ALTER TABLE audit_events ADD COLUMN chain_hash TEXT;
CREATE INDEX audit_events_chain ON audit_events(org_id, chain_seq);

CREATE TABLE audit_chain_heads (
    chain TEXT PRIMARY KEY,   -- the organization id, '' for account events
    seq   BIGINT NOT NULL,    -- the last position written
    hash  TEXT NOT NULL       -- its hash (hex); '' while existing rows await their hashes
);

CREATE TABLE audit_checkpoints (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain     TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    head_hash TEXT NOT NULL,
    signed_at BIGINT NOT NULL,
    key_id    TEXT NOT NULL,  -- the first 16 hex digits of SHA-256(public key)
    signature TEXT NOT NULL,  -- base64 Ed25519 signature (src/audit/chain.rs)
    UNIQUE (chain, seq)
);

CREATE FUNCTION audit_checkpoints_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_checkpoints is append-only';
END;
$$;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoints_append_only();

-- Positions for the existing rows, in id order per chain.
ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update;
UPDATE audit_events SET chain_seq = n.seq
FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY org_id ORDER BY id) AS seq FROM audit_events) AS n
WHERE n.id = audit_events.id;
ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update;
INSERT INTO audit_chain_heads (chain, seq, hash)
SELECT COALESCE(org_id, ''), MAX(chain_seq), '' FROM audit_events GROUP BY COALESCE(org_id, '');

-- Still append-only: the one update allowed gives a row without a hash its hash, and
-- changes nothing else.
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD.chain_hash IS NULL AND NEW.chain_hash IS NOT NULL
           AND to_jsonb(NEW) - 'chain_hash' = to_jsonb(OLD) - 'chain_hash' THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
