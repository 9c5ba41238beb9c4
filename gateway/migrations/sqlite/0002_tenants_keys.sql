-- Tenants and API keys managed through the admin API (config-file tenants are not stored here).
-- Limits are NULL when unset (the configured defaults apply); budgets are integer micro-USD.
CREATE TABLE tenants (
    id                        TEXT     NOT NULL PRIMARY KEY,
    rpm                       INTEGER,
    tpm                       INTEGER,
    max_concurrent            INTEGER,
    monthly_budget_micro_usd  INTEGER,
    disabled                  INTEGER  NOT NULL DEFAULT 0,
    created_at_unix_ms        INTEGER  NOT NULL,
    updated_at_unix_ms        INTEGER  NOT NULL
);

-- Only the SHA-256 of a key is stored (hex); the secret is shown once, at creation.
CREATE TABLE api_keys (
    id                        TEXT     NOT NULL PRIMARY KEY,
    tenant_id                 TEXT     NOT NULL REFERENCES tenants (id),
    digest_sha256             TEXT     NOT NULL UNIQUE,
    prefix                    TEXT     NOT NULL,
    name                      TEXT,
    rpm                       INTEGER,
    tpm                       INTEGER,
    max_concurrent            INTEGER,
    monthly_budget_micro_usd  INTEGER,
    created_at_unix_ms        INTEGER  NOT NULL,
    revoked_at_unix_ms        INTEGER
);

CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);
