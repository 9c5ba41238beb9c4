-- Issue 11, item 1: the ledger's identity is a server-generated record id, never the client's
-- `x-request-id`. `request_id` stays as a non-unique correlation column (the client's id when it
-- sent a sane one, else the one the gateway generated and echoed).
--
-- Upgrades in place: rows written before this migration were unique on `request_id`, so that
-- value becomes their record id (journal lines from those versions get the same fallback, so a
-- replay after the upgrade is still ignored as a duplicate). The UPDATE rewrites the table once.
ALTER TABLE ledger_records ADD COLUMN record_id TEXT;
UPDATE ledger_records SET record_id = request_id;
ALTER TABLE ledger_records ALTER COLUMN record_id SET NOT NULL;

-- The old primary key (on request_id) is found by catalogue lookup rather than by its default name.
DO $$
DECLARE
    pk TEXT;
BEGIN
    SELECT conname INTO pk FROM pg_constraint
     WHERE conrelid = 'ledger_records'::regclass AND contype = 'p';
    IF pk IS NOT NULL THEN
        EXECUTE format('ALTER TABLE ledger_records DROP CONSTRAINT %I', pk);
    END IF;
END $$;
ALTER TABLE ledger_records ADD CONSTRAINT ledger_records_pkey PRIMARY KEY (record_id);

-- Correlation look-ups by the client's id; key budgets are seeded from this month's spend per key.
CREATE INDEX ledger_records_request_id_idx ON ledger_records (request_id);
CREATE INDEX ledger_records_key_ts_idx ON ledger_records (key_id, ts_unix_ms);
