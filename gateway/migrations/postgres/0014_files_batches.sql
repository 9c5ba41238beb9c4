-- Issue 14: the Files and Batch APIs, executed locally on a durable queue shared by every replica.
-- Times are unix milliseconds (UTC), as in the ledger. See docs/BATCHES.md.

-- Every stored file: uploads (content in file_chunks) and batch output/error files (virtual: their
-- content is the result lines of batch_items, so a line's result is written exactly once).
CREATE TABLE files (
    id              TEXT    NOT NULL PRIMARY KEY,
    tenant          TEXT    NOT NULL,
    purpose         TEXT    NOT NULL,
    filename        TEXT    NOT NULL,
    bytes           BIGINT  NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('blob', 'batch_output', 'batch_error')),
    batch_id        TEXT,
    created_at_ms   BIGINT  NOT NULL,
    expires_at_ms   BIGINT,
    deleted_at_ms   BIGINT
);
CREATE INDEX files_list_idx ON files (tenant, created_at_ms, id);

-- Upload content in 4 MiB chunks, so any replica can serve any file.
CREATE TABLE file_chunks (
    file_id TEXT    NOT NULL,
    seq     BIGINT  NOT NULL,
    data    BYTEA   NOT NULL,
    PRIMARY KEY (file_id, seq)
);

CREATE TABLE batches (
    id                      TEXT    NOT NULL PRIMARY KEY,
    tenant                  TEXT    NOT NULL,
    key_id                  TEXT,
    caller_limits           TEXT    NOT NULL,
    endpoint                TEXT    NOT NULL,
    input_file_id           TEXT    NOT NULL,
    completion_window       TEXT    NOT NULL,
    status                  TEXT    NOT NULL CHECK (status IN ('validating', 'failed', 'in_progress',
                                'finalizing', 'completed', 'expired', 'cancelling', 'cancelled')),
    model                   TEXT,
    metadata                TEXT,
    errors                  TEXT,
    output_expires_after_s  BIGINT,
    output_file_id          TEXT,
    error_file_id           TEXT,
    total                   BIGINT  NOT NULL DEFAULT 0,
    completed               BIGINT  NOT NULL DEFAULT 0,
    failed                  BIGINT  NOT NULL DEFAULT 0,
    input_tokens            BIGINT  NOT NULL DEFAULT 0,
    cached_tokens           BIGINT  NOT NULL DEFAULT 0,
    output_tokens           BIGINT  NOT NULL DEFAULT 0,
    expire_pending          BIGINT  NOT NULL DEFAULT 0,
    created_at_ms           BIGINT  NOT NULL,
    in_progress_at_ms       BIGINT,
    expires_at_ms           BIGINT  NOT NULL,
    finalizing_at_ms        BIGINT,
    completed_at_ms         BIGINT,
    failed_at_ms            BIGINT,
    expired_at_ms           BIGINT,
    cancelling_at_ms        BIGINT,
    cancelled_at_ms         BIGINT,
    step_owner              TEXT,
    step_token              BIGINT  NOT NULL DEFAULT 0,
    step_until_ms           BIGINT,
    idempotency_key         TEXT,
    UNIQUE (tenant, idempotency_key)
);
CREATE INDEX batches_list_idx ON batches (tenant, created_at_ms, id);
CREATE INDEX batches_active_idx ON batches (status) WHERE status IN ('validating', 'in_progress', 'cancelling');

-- One row per input line: the queue. `lease_token` is the fencing token: every claim increments it
-- and every write of a claimed line requires it, so a replica whose lease expired writes nothing.
CREATE TABLE batch_items (
    batch_id        TEXT    NOT NULL,
    line_no         BIGINT  NOT NULL,
    custom_id       TEXT    NOT NULL,
    request_id      TEXT    NOT NULL UNIQUE,
    provider        TEXT    NOT NULL,
    body            BYTEA   NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'done')),
    attempts        BIGINT  NOT NULL DEFAULT 0,
    requeues        BIGINT  NOT NULL DEFAULT 0,
    failures        BIGINT  NOT NULL DEFAULT 0,
    not_before_ms   BIGINT  NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_token     BIGINT  NOT NULL DEFAULT 0,
    lease_until_ms  BIGINT,
    result_kind     TEXT,
    result_line     BYTEA,
    prompt_tokens   BIGINT  NOT NULL DEFAULT 0,
    cached_tokens   BIGINT  NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    finished_at_ms  BIGINT,
    PRIMARY KEY (batch_id, line_no),
    UNIQUE (batch_id, custom_id)
);
CREATE INDEX batch_items_runnable_idx ON batch_items (provider, not_before_ms) WHERE state = 'queued';
CREATE INDEX batch_items_leased_idx ON batch_items (lease_until_ms) WHERE state = 'running';
CREATE INDEX batch_items_state_idx ON batch_items (batch_id, state);

-- Ledger rows of batch lines name their batch.
ALTER TABLE ledger_records ADD COLUMN IF NOT EXISTS batch_id TEXT;
