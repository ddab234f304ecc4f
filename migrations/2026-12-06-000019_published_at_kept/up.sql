-- A pair's publishedAt outlives its dispatch row (issue 22): the outbox
-- upkeep deletes published rows after OUTBOX_RETENTION_SECS, and copies each
-- run or rerun message's published_at onto its pair as it deletes it, so
-- GET /executions/{id} answers the same before and after (contract,
-- section 22: one tag, one body). No default: adding the column is a
-- catalogue change only.
ALTER TABLE execution_pairs ADD COLUMN published_at timestamptz;
