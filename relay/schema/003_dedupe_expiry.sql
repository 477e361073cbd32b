-- relay store, schema version 3.
--
-- The fingerprint (recipient, topic, payload) of each SEND that carried an
-- id, so that the dedupe window is loaded at startup from (sender, send id,
-- message id, fingerprint) without reading any payload.  NULL on rows
-- written before version 3: their fingerprint is computed once, when loaded.
ALTER TABLE messages ADD COLUMN send_fp INTEGER;

-- Open deliveries by message, for the incremental expiry (relay.store
-- _expire): it finds the messages whose expiry came since its last run and
-- marks their open deliveries, without scanning every delivery.
CREATE INDEX IF NOT EXISTS deliveries_open_by_message
    ON deliveries (message_seq)
    WHERE status IN ('pending', 'delivered');
