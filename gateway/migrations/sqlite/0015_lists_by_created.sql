-- The admin key lists every tenant's batches (jobs) and files newest first (issue 15): the
-- tenant-prefixed list indexes of 0014 do not serve `ORDER BY created_at_ms DESC, id DESC` without a
-- tenant, so these do (scanned backwards).
CREATE INDEX batches_created_idx ON batches (created_at_ms, id);
CREATE INDEX files_created_idx ON files (created_at_ms, id);
