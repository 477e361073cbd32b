-- Messages synced from relay daemons, and the API keys that may send them.

CREATE TABLE agent_messages (
    id            bigserial PRIMARY KEY,
    workspace_id  uuid NOT NULL,
    daemon_id     uuid NOT NULL,
    original_id   varchar(255) NOT NULL,
    from_agent    text NOT NULL,
    to_agent      text NOT NULL,
    body          text NOT NULL,
    kind          text NOT NULL,
    topic         text,
    thread        text,
    channel       text,
    is_broadcast  boolean NOT NULL DEFAULT false,
    is_urgent     boolean NOT NULL DEFAULT false,
    data          jsonb,
    payload_meta  jsonb,
    message_ts    timestamptz NOT NULL,
    expires_at    timestamptz,
    received_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_messages_dedup UNIQUE (workspace_id, original_id)
);

CREATE INDEX agent_messages_workspace_ts ON agent_messages (workspace_id, message_ts);

-- Only a SHA-256 hash of each key is kept.  key_id is the public, non-secret
-- part of the key (it is printed by "relay keys list" and used to revoke);
-- the lookup is by key_id and the hash comparison is constant-time.
CREATE TABLE api_keys (
    key_id        text PRIMARY KEY,
    key_hash      bytea NOT NULL CHECK (octet_length(key_hash) = 32),
    workspace_id  uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

CREATE INDEX api_keys_workspace ON api_keys (workspace_id);
