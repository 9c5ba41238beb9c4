-- Issue 16: dashboard sign-ins kept across restarts and replicas (only when
-- `dashboard.session_secret` is configured). The session id is stored as its SHA-256 (a database
-- reader cannot take a session over); the credential is sealed with a key derived from the secret,
-- which never reaches the database.
CREATE TABLE dashboard_sessions (
    id_hash TEXT PRIMARY KEY,
    sealed TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL
);
CREATE INDEX dashboard_sessions_seen_idx ON dashboard_sessions (last_seen_ms);
