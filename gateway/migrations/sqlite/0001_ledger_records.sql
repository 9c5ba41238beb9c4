-- Ledger records, one per request. Money is integer: cost in nano-USD, prices in micro-USD per
-- million tokens. Times are unix milliseconds (UTC).
CREATE TABLE ledger_records (
    request_id                      TEXT    NOT NULL PRIMARY KEY,
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

-- Usage queries filter by time, or by tenant and time; prune deletes by time.
CREATE INDEX ledger_records_ts_idx ON ledger_records (ts_unix_ms);
CREATE INDEX ledger_records_tenant_ts_idx ON ledger_records (tenant, ts_unix_ms);
