-- Federation (issue 10): daemons of one workspace deliver each other's
-- messages through the ingest.  The wire contract is in README.rst
-- ("Federation endpoints of the ingest").

-- A key bound to one daemon may speak only for that daemon.
ALTER TABLE api_keys ADD COLUMN daemon_id uuid;

-- The workspace directory: each agent name's home daemon.  Every change
-- takes a new version from one sequence, so a daemon reads "what changed
-- since V" in version order.
CREATE SEQUENCE fed_directory_version;

CREATE TABLE fed_directory (
    workspace_id  uuid NOT NULL,
    name          text NOT NULL,
    home_daemon   uuid NOT NULL,
    online        boolean NOT NULL,
    since         timestamptz NOT NULL,
    version       bigint NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

CREATE INDEX fed_directory_workspace_version ON fed_directory (workspace_id, version);

-- The daemons that have called presence, handover or poll: the targets of
-- a topic broadcast.
CREATE TABLE fed_daemons (
    workspace_id  uuid NOT NULL,
    daemon_id     uuid NOT NULL,
    first_seen    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, daemon_id)
);

-- Messages handed over, waiting for their home daemon.  A row addressed to
-- an agent name has no target_daemon (it goes to whoever is the name's home
-- when it is fetched); a broadcast has one row per target daemon.
-- Confirmed rows stay as tombstones, so a retried hand-over is stored once
-- even after it was delivered.
CREATE TABLE fed_inbound (
    seq            bigserial PRIMARY KEY,
    workspace_id   uuid NOT NULL,
    message_id     varchar(300) NOT NULL,
    recipient      text NOT NULL,
    target_daemon  uuid,
    origin_daemon  uuid NOT NULL,
    message        text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    confirmed_at   timestamptz,
    confirmed_by   uuid
);

CREATE UNIQUE INDEX fed_inbound_once ON fed_inbound (
    workspace_id, message_id, recipient,
    coalesce(target_daemon, '00000000-0000-0000-0000-000000000000'::uuid));

-- The two fetch paths of a poll, over unconfirmed rows only.
CREATE INDEX fed_inbound_targeted ON fed_inbound (workspace_id, target_daemon, seq)
    WHERE confirmed_at IS NULL AND target_daemon IS NOT NULL;
CREATE INDEX fed_inbound_routed ON fed_inbound (workspace_id, recipient, seq)
    WHERE confirmed_at IS NULL AND target_daemon IS NULL;
