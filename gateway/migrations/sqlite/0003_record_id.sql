-- Issue 11, item 1: the ledger's identity is a server-generated record id, never the client's
-- `x-request-id`. `request_id` stays as a non-unique correlation column (the client's id when it
-- sent a sane one, else the one the gateway generated and echoed).
--
-- SQLite cannot change a primary key in place: the table is rebuilt. Rows written before this
-- migration were unique on `request_id`, so that value becomes their record id (journal lines from
-- those versions get the same fallback, so a replay after the upgrade is still a duplicate).
CREATE TABLE ledger_records_v3 (
    record_id                       TEXT    NOT NULL PRIMARY KEY,
    request_id                      TEXT    NOT NULL,
    ts_unix_ms                      INTEGER NOT NULL,
    tenant                          TEXT    NOT NULL,
    key_id                          TEXT,
    provider                        TEXT    NOT NULL,
    requested_model                 TEXT    NOT NULL,
    upstream_model                  TEXT    NOT NULL,
    prompt_tokens                   INTEGER NOT NULL,
    completion_tokens               INTEGER NOT NULL,
    cached_tokens                   INTEGER NOT NULL,
    cache_write_tokens              INTEGER NOT NULL,
    usage_estimated                 INTEGER NOT NULL,
    cost_nano_usd                   INTEGER NOT NULL,
    price_input_micro_per_m         INTEGER NOT NULL,
    price_output_micro_per_m        INTEGER NOT NULL,
    price_cached_input_micro_per_m  INTEGER NOT NULL,
    price_cache_write_micro_per_m   INTEGER NOT NULL,
    status                          TEXT    NOT NULL
        CHECK (status IN ('ok', 'upstream_error', 'client_error', 'cancelled', 'partial')),
    stream                          INTEGER NOT NULL,
    latency_ms                      INTEGER NOT NULL,
    ttft_ms                         INTEGER,
    attempts                        INTEGER NOT NULL,
    http_status                     INTEGER NOT NULL
);

INSERT INTO ledger_records_v3 (record_id, request_id, ts_unix_ms, tenant, key_id, provider,
    requested_model, upstream_model, prompt_tokens, completion_tokens, cached_tokens,
    cache_write_tokens, usage_estimated, cost_nano_usd, price_input_micro_per_m,
    price_output_micro_per_m, price_cached_input_micro_per_m, price_cache_write_micro_per_m,
    status, stream, latency_ms, ttft_ms, attempts, http_status)
SELECT request_id, request_id, ts_unix_ms, tenant, key_id, provider,
    requested_model, upstream_model, prompt_tokens, completion_tokens, cached_tokens,
    cache_write_tokens, usage_estimated, cost_nano_usd, price_input_micro_per_m,
    price_output_micro_per_m, price_cached_input_micro_per_m, price_cache_write_micro_per_m,
    status, stream, latency_ms, ttft_ms, attempts, http_status
FROM ledger_records;

DROP TABLE ledger_records;
ALTER TABLE ledger_records_v3 RENAME TO ledger_records;

CREATE INDEX ledger_records_ts_idx ON ledger_records (ts_unix_ms);
CREATE INDEX ledger_records_tenant_ts_idx ON ledger_records (tenant, ts_unix_ms);
-- Correlation look-ups by the client's id; key budgets are seeded from this month's spend per key.
CREATE INDEX ledger_records_request_id_idx ON ledger_records (request_id);
CREATE INDEX ledger_records_key_ts_idx ON ledger_records (key_id, ts_unix_ms);
