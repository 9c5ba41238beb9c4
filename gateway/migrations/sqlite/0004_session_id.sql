-- Issue 12: the client's session (Claude Code's `X-Claude-Code-Session-Id`) for attribution; NULL when
-- the client sent none. Not an identity: many records share one session.
ALTER TABLE ledger_records ADD COLUMN session_id TEXT;
