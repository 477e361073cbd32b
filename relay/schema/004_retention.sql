-- relay store, schema version 4.
--
-- Retention (relay.retention) deletes old, finished messages with their
-- delivery rows, and relay history filters on every column it offers.
-- Both need indexes:
--
--   * deliveries by message, all of them (not only the open ones): the
--     retention deletes a message's delivery rows by message_seq, and asks
--     whether any is still open; the incremental expiry (_expire) finds the
--     open ones with (message_seq, status).  It replaces the partial index
--     of version 3, so a delivery still costs two index entries.
--   * messages by sender, recipient, thread and topic: relay history
--     --from/--to/--thread/--topic (ordered by seq, the rowid, which every
--     index entry carries), --since by the existing messages_ts.
--
-- auto_vacuum=INCREMENTAL cannot be set inside this transaction on a file
-- that has tables: relay.storesql.upgrade sets it and runs VACUUM once,
-- after this script (a new file gets it before its first table).
DROP INDEX IF EXISTS deliveries_open_by_message;
CREATE INDEX IF NOT EXISTS deliveries_by_message ON deliveries (message_seq, status);
CREATE INDEX IF NOT EXISTS messages_sender ON messages (sender);
CREATE INDEX IF NOT EXISTS messages_recipient ON messages (recipient);
CREATE INDEX IF NOT EXISTS messages_thread ON messages (thread) WHERE thread IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_topic ON messages (topic) WHERE topic IS NOT NULL;
CREATE INDEX IF NOT EXISTS dead_letters_ts ON dead_letters (ts);
CREATE INDEX IF NOT EXISTS quarantine_ts ON quarantine (ts);
