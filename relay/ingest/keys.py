# -*- test-case-name: tests.test_ingest_keys,tests.test_cli_keys -*-
"""
API keys for the ingest service.

A key looks like C{rlk_<key id>_<secret>}.  The key id (16 hex digits) is not
secret: it names the key in C{relay keys list} and C{relay keys revoke} and is
how the service finds the key's row.  The database holds only the SHA-256
hash of the whole key, which the service compares in constant time with
L{hmac.compare_digest}.

A key may be bound to one daemon (C{relay keys create --daemon ID}): then
it speaks only for that daemon (L{Grant.daemon}), in sync and federation
requests alike.
"""

import hashlib
import hmac
import re
import secrets
import uuid

import attr

KEY_PREFIX = "rlk_"
_KEY_RE = re.compile(r"^rlk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


def generate_key():
    """
    Return a new C{(key_id, key)} pair.
    """
    key_id = secrets.token_hex(8)
    return key_id, "%s%s_%s" % (KEY_PREFIX, key_id, secrets.token_urlsafe(32))


def hash_key(key):
    """
    Return the SHA-256 digest (32 bytes) of C{key}, a L{str}.
    """
    return hashlib.sha256(key.encode("utf-8")).digest()


def parse_key(key):
    """
    Return the key id of a well-formed key, or L{None}.

    @param key: the key as given (a L{str}).
    """
    m = _KEY_RE.match(key)
    return m.group(1) if m else None


@attr.s(frozen=True)
class Grant:
    """
    What a good key allows: its workspace, and the one daemon it is bound
    to (or L{None}: any daemon of the workspace).

    @ivar workspace: the key's workspace (L{uuid.UUID}).
    @ivar daemon: the daemon (L{uuid.UUID}) the key is bound to, or L{None}.
    """

    workspace = attr.ib()
    daemon = attr.ib(default=None)

    def allows(self, daemon_id):
        """
        Whether a request naming C{daemon_id} (a L{uuid.UUID}) may use the key.
        """
        return self.daemon is None or self.daemon == daemon_id


def check_key(key, row):
    """
    Decide whether C{key} is valid for a database C{row}.

    @param row: C{(key_hash, workspace_id, revoked)} or, as L{LOOKUP_SQL}
        fetches it, C{(key_hash, workspace_id, revoked, daemon_id)} for the
        key's id, or L{None} when no such id exists.
    @return: the workspace L{uuid.UUID} the key belongs to, or L{None}.
    """
    grant = check_grant(key, row)
    return None if grant is None else grant.workspace


def check_grant(key, row):
    """
    As L{check_key}, but return the key's whole L{Grant} (or L{None}).
    """
    if row is None:
        # Still hash and compare, so that an unknown id costs the same.
        hmac.compare_digest(hash_key(key), b"\0" * 32)
        return None
    key_hash, workspace_id, revoked = row[:3]
    daemon_id = row[3] if len(row) > 3 else None
    if not hmac.compare_digest(hash_key(key), bytes(key_hash)):
        return None
    if revoked:
        return None
    return Grant(uuid.UUID(str(workspace_id)),
                 None if daemon_id is None else uuid.UUID(str(daemon_id)))


LOOKUP_SQL = (
    "SELECT key_hash, workspace_id, revoked_at IS NOT NULL, daemon_id"
    " FROM api_keys WHERE key_id = %s"
)


# Blocking helpers for the "relay keys" command (psycopg2 connection).


def create_key(connection, workspace_id, daemon_id=None):
    """
    Store a new key for C{workspace_id} and return C{(key_id, key)}.

    @param daemon_id: the daemon (L{uuid.UUID}) the key is bound to, or
        L{None} for a key any daemon of the workspace may use.
    """
    key_id, key = generate_key()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO api_keys (key_id, key_hash, workspace_id, daemon_id)"
            " VALUES (%s, %s, %s, %s)",
            (key_id, hash_key(key), str(workspace_id),
             None if daemon_id is None else str(daemon_id)),
        )
    connection.commit()
    return key_id, key


def list_keys(connection, workspace_id=None):
    """
    Return C{(key_id, workspace_id, created_at, revoked_at, daemon_id)}
    rows, oldest first, optionally only those of one workspace
    (C{daemon_id} is L{None} for a key not bound to a daemon).
    """
    with connection.cursor() as cursor:
        if workspace_id is None:
            cursor.execute(
                "SELECT key_id, workspace_id, created_at, revoked_at, daemon_id"
                " FROM api_keys ORDER BY created_at, key_id"
            )
        else:
            cursor.execute(
                "SELECT key_id, workspace_id, created_at, revoked_at, daemon_id"
                " FROM api_keys WHERE workspace_id = %s ORDER BY created_at, key_id",
                (str(workspace_id),),
            )
        rows = cursor.fetchall()
    connection.rollback()
    return rows


def revoke_key(connection, key_id):
    """
    Revoke the key with id C{key_id} (a full key is accepted too).

    @return: C{"revoked"}, C{"already"} (it was revoked before) or
        C{"unknown"}.
    """
    key_id = parse_key(key_id) or key_id
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
            " WHERE key_id = %s RETURNING revoked_at = now()",
            (key_id,),
        )
        row = cursor.fetchone()
    connection.commit()
    if row is None:
        return "unknown"
    return "revoked" if row[0] else "already"
