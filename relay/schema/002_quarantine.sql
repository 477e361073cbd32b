-- relay store, schema version 2.
--
-- Rows SQLite refused outright (a value it cannot bind or store).  A batch
-- holding one is written row by row instead; the refused rows are kept here,
-- as JSON, with the reason, so the store keeps committing and nothing is
-- thrown away.
CREATE TABLE IF NOT EXISTS quarantine (
    id        INTEGER PRIMARY KEY,
    ts        INTEGER NOT NULL,        -- ms since epoch
    statement TEXT NOT NULL,           -- which write: message, delivery, status, ...
    row       TEXT NOT NULL,           -- the row's values as JSON
    error     TEXT NOT NULL
);
