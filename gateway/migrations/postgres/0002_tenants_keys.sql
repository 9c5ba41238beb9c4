-- Tenants and API keys managed through the admin API (config-file tenants are not stored here).
-- Limits are NULL when unset (the configured defaults apply); budgets are integer micro-USD.
CREATE TABLE tenants (
    id                        TEXT     NOT NULL PRIMARY KEY,
    rpm                       BIGINT,
    tpm                       BIGINT,
    max_concurrent            BIGINT,
    monthly_budget_micro_usd  BIGINT,
    disabled                  BOOLEAN  NOT NULL DEFAULT FALSE,
    created_at_unix_ms        BIGINT   NOT NULL,
    updated_at_unix_ms        BIGINT   NOT NULL
);

-- Only the SHA-256 of a key is stored (hex); the secret is shown once, at creation.
CREATE TABLE api_keys (
    id                        TEXT     NOT NULL PRIMARY KEY,
    tenant_id                 TEXT     NOT NULL REFERENCES tenants (id),
    digest_sha256             TEXT     NOT NULL UNIQUE,
    prefix                    TEXT     NOT NULL,
    name                      TEXT,
    rpm                       BIGINT,
    tpm                       BIGINT,
    max_concurrent            BIGINT,
    monthly_budget_micro_usd  BIGINT,
    created_at_unix_ms        BIGINT   NOT NULL,
    revoked_at_unix_ms        BIGINT
);

CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);
