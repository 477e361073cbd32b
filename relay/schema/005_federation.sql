-- relay store, schema version 5.
--
-- Federation (relay.federation): a delivery to an agent whose home is
-- another daemon of the workspace is stored with status 'remote' until the
-- ingest has confirmed the hand-over, then 'handed' (PostgreSQL owns it
-- from then on).  The hand-over reads the 'remote' rows in message order.
CREATE INDEX IF NOT EXISTS deliveries_remote
    ON deliveries (message_seq) WHERE status = 'remote';
