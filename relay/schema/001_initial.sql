-- relay store, schema version 1.
-- Applied by relay.store in one transaction; meta.schema_version records it.

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per accepted SEND.
CREATE TABLE IF NOT EXISTS messages (
    seq          INTEGER PRIMARY KEY,      -- daemon-wide acceptance order
    id           TEXT NOT NULL UNIQUE,     -- the id every DELIVER carries
    send_id      TEXT,                     -- the id the sender gave its SEND
    ts           INTEGER NOT NULL,         -- ms since epoch, when accepted
    sender       TEXT NOT NULL,
    recipient    TEXT NOT NULL,            -- agent name, or '*'
    topic        TEXT,
    thread       TEXT,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,            -- JSON object as sent (body, kind, data, ...)
    payload_meta TEXT,                     -- JSON object or NULL
    extra        TEXT,                     -- JSON of unknown envelope fields, or NULL
    expires_at   INTEGER NOT NULL          -- ms since epoch
);
CREATE INDEX IF NOT EXISTS messages_ts ON messages (ts);
CREATE INDEX IF NOT EXISTS messages_expires ON messages (expires_at);

-- One row per (message, recipient).
CREATE TABLE IF NOT EXISTS deliveries (
    recipient   TEXT NOT NULL,
    message_seq INTEGER NOT NULL,
    stream_seq  INTEGER NOT NULL,          -- DELIVER seq for (topic, sender) stream
    status      TEXT NOT NULL,             -- pending | delivered | acked | expired
    attempts    INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL,          -- ms since epoch
    PRIMARY KEY (recipient, message_seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_open
    ON deliveries (recipient, message_seq)
    WHERE status IN ('pending', 'delivered');

-- The last DELIVER seq given on each (recipient, topic, sender) stream, so
-- that seq keeps counting up across restarts.
CREATE TABLE IF NOT EXISTS streams (
    recipient TEXT NOT NULL,
    topic     TEXT NOT NULL,               -- the topic, or 'default'
    sender    TEXT NOT NULL,
    last_seq  INTEGER NOT NULL,
    PRIMARY KEY (recipient, topic, sender)
) WITHOUT ROWID;

-- Messages the sync target refused for good (HTTP 400 naming them).
CREATE TABLE IF NOT EXISTS dead_letters (
    message_seq INTEGER PRIMARY KEY,
    id          TEXT NOT NULL,
    reason      TEXT NOT NULL,
    ts          INTEGER NOT NULL
);
