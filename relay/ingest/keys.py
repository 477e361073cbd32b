# -*- test-case-name: tests.test_ingest_keys -*-
"""
API keys for the ingest service.

A key looks like C{rlk_<key id>_<secret>}.  The key id (16 hex digits) is not
secret: it names the key in C{relay keys list} and C{relay keys revoke} and is
how the service finds the key's row.  The database holds only the SHA-256
hash of the whole key, which the service compares in constant time with
L{hmac.compare_digest}.
"""

import hashlib
import hmac
import re
import secrets
import uuid

KEY_PREFIX = "rlk_"
_KEY_RE = re.compile(r"^rlk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


def generateKey():
    """
    Return a new C{(key_id, key)} pair.
    """
    keyId = secrets.token_hex(8)
    return keyId, "%s%s_%s" % (KEY_PREFIX, keyId, secrets.token_urlsafe(32))


def hashKey(key):
    """
    Return the SHA-256 digest (32 bytes) of C{key}, a L{str}.
    """
    return hashlib.sha256(key.encode("utf-8")).digest()


def parseKey(key):
    """
    Return the key id of a well-formed key, or L{None}.
    """
    m = _KEY_RE.match(key)
    return m.group(1) if m else None


def checkKey(key, row):
    """
    Decide whether C{key} is valid for a database C{row}.

    @param row: C{(key_hash, workspace_id, revoked)} as fetched for the key's
        id, or L{None} when no such id exists.
    @return: the workspace L{uuid.UUID} the key belongs to, or L{None}.
    """
    if row is None:
        # Still hash and compare, so that an unknown id costs the same.
        hmac.compare_digest(hashKey(key), b"\0" * 32)
        return None
    keyHash, workspaceId, revoked = row
    if not hmac.compare_digest(hashKey(key), bytes(keyHash)):
        return None
    if revoked:
        return None
    return uuid.UUID(str(workspaceId))


LOOKUP_SQL = (
    "SELECT key_hash, workspace_id, revoked_at IS NOT NULL"
    " FROM api_keys WHERE key_id = %s"
)


# Blocking helpers for the "relay keys" command (psycopg2 connection).


def createKey(connection, workspaceId):
    """
    Store a new key for C{workspaceId} and return C{(key_id, key)}.
    """
    keyId, key = generateKey()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO api_keys (key_id, key_hash, workspace_id) VALUES (%s, %s, %s)",
            (keyId, hashKey(key), str(workspaceId)),
        )
    connection.commit()
    return keyId, key


def listKeys(connection, workspaceId=None):
    """
    Return C{(key_id, workspace_id, created_at, revoked_at)} rows, oldest
    first, optionally only those of one workspace.
    """
    with connection.cursor() as cursor:
        if workspaceId is None:
            cursor.execute(
                "SELECT key_id, workspace_id, created_at, revoked_at"
                " FROM api_keys ORDER BY created_at, key_id"
            )
        else:
            cursor.execute(
                "SELECT key_id, workspace_id, created_at, revoked_at"
                " FROM api_keys WHERE workspace_id = %s ORDER BY created_at, key_id",
                (str(workspaceId),),
            )
        rows = cursor.fetchall()
    connection.rollback()
    return rows


def revokeKey(connection, keyId):
    """
    Revoke the key with id C{keyId} (a full key is accepted too).

    @return: C{"revoked"}, C{"already"} (it was revoked before) or
        C{"unknown"}.
    """
    keyId = parseKey(keyId) or keyId
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
            " WHERE key_id = %s RETURNING revoked_at = now()",
            (keyId,),
        )
        row = cursor.fetchone()
    connection.commit()
    if row is None:
        return "unknown"
    return "revoked" if row[0] else "already"
