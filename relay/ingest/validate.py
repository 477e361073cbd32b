# -*- test-case-name: tests.test_ingest_validate -*-
"""
Validation of a sync batch (the wire contract with the daemon's sync side).

L{parse_batch} turns a decoded JSON body into a L{Batch} whose rows are tuples
in L{ROW_COLUMNS} order, ready for either insert strategy, or raises
L{BadRequest} naming the first bad message's index, id and field.

The rules the daemon shares (the payload kinds, the C{payload_meta.ttl_ms}
rule) come from L{relay.wire}, so that nothing the daemon accepts is
refused here; the rest (the id, timestamp and NUL rules) are PostgreSQL's.
"""

import uuid

import attr
import orjson

from relay.wire import KINDS, ttl_problem

# Column order of a validated row.  message_ts and expires_at are kept as
# integer milliseconds since the epoch; the SQL converts them exactly.
ROW_COLUMNS = (
    "original_id",
    "from_agent",
    "to_agent",
    "body",
    "kind",
    "topic",
    "thread",
    "channel",
    "is_broadcast",
    "is_urgent",
    "data",
    "payload_meta",
    "message_ts",
    "expires_at",
)

# Milliseconds since the epoch for 0001-01-01 and 9999-12-31T23:59:59.999Z:
# the range where every timestamp is also a valid PostgreSQL timestamptz.
MIN_MS = -62135596800000
MAX_MS = 253402300799999

MAX_ID_CHARS = 255


class BadRequest(Exception):
    """
    The request is refused with a 4xx (or 5xx) status and a JSON error body.

    @ivar status: the HTTP status.
    @ivar message: what is wrong, in one line.
    @ivar index: the bad message's position in the batch, or L{None}.
    @ivar message_id: the bad message's id (when it has a string one).
    @ivar field: the field at fault, or L{None}.
    """

    def __init__(self, status, message, index=None, message_id=None, field=None):
        Exception.__init__(self, message)
        self.status = status
        self.message = message
        self.index = index
        self.message_id = message_id
        self.field = field

    def to_json(self):
        """
        @return: the error body (a L{dict}): C{error}, and C{index}, C{id}
            and C{field} for a bad message, or C{field} alone.
        """
        body = {"error": self.message}
        if self.index is not None:
            body["index"] = self.index
            body["id"] = self.message_id
            body["field"] = self.field
        elif self.field is not None:
            body["field"] = self.field
        return body


@attr.s(frozen=True)
class Batch:
    """
    A validated batch: its daemon, its workspace and its rows.
    """

    daemon_id = attr.ib()
    workspace_id = attr.ib()
    rows = attr.ib()


def _bad(index, message, field, text):
    mid = message.get("id") if isinstance(message, dict) else None
    if not isinstance(mid, str):
        mid = None
    raise BadRequest(
        400, "message %d: %s" % (index, text), index=index, message_id=mid, field=field
    )


def _has_nul(value):
    """
    Whether a decoded JSON value holds a NUL character in any string,
    including object keys (PostgreSQL text and jsonb cannot store it).
    """
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _uuid(body, field):
    value = body.get(field)
    if not isinstance(value, str):
        raise BadRequest(400, "%s must be a UUID string" % (field,), field=field)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadRequest(400, "%s is not a valid UUID: %r" % (field, value[:64]), field=field)


def _text(i, m, field, required, max_chars=None):
    value = m.get(field)
    if value is None:
        if required:
            _bad(i, m, field, "%s is required and must be a string" % (field,))
        return None
    if value.__class__ is not str:
        _bad(i, m, field, "%s must be a string%s" % (field, "" if required else " or null"))
    if "\x00" in value:
        _bad(i, m, field, "%s contains a NUL character, which PostgreSQL cannot store" % (field,))
    if max_chars is not None and len(value) > max_chars:
        _bad(i, m, field, "%s is longer than %d characters" % (field, max_chars))
    return value


def _json(i, m, field):
    value = m.get(field)
    if value is None:
        return None
    if value.__class__ is not dict:
        _bad(i, m, field, "%s must be an object or null" % (field,))
    try:
        dumped = orjson.dumps(value)
    except orjson.JSONEncodeError as e:
        _bad(i, m, field, "%s cannot be stored as JSON: %s" % (field, e))
    # orjson writes NUL as \u0000; only then look closer (a literal
    # backslash followed by "u0000" in a string also matches the bytes).
    if b"\\u0000" in dumped and _has_nul(value):
        _bad(i, m, field, "%s contains a NUL character, which PostgreSQL cannot store" % (field,))
    return dumped.decode("utf-8")


def _ms(i, m, field, required):
    value = m.get(field)
    if value is None:
        if required:
            _bad(i, m, field, "%s is required (integer milliseconds since the epoch)" % (field,))
        return None
    if value.__class__ is not int:
        _bad(i, m, field, "%s must be an integer number of milliseconds" % (field,))
    if not MIN_MS <= value <= MAX_MS:
        _bad(i, m, field, "%s is out of range (years 1 to 9999)" % (field,))
    return value


def _bool(i, m, field):
    value = m.get(field, False)
    if value is not True and value is not False:
        _bad(i, m, field, "%s must be true or false" % (field,))
    return value


def parse_message(i, m):
    """
    Validate one message of a batch.

    @param i: its position in the batch (named in the error).
    @param m: the decoded message.
    @return: its row tuple, in L{ROW_COLUMNS} order.
    @raise BadRequest: 400, naming C{i}, the message's id and the first
        bad field.
    """
    if m.__class__ is not dict:
        raise BadRequest(400, "message %d is not a JSON object" % (i,),
                         index=i, message_id=None, field="message")
    mid = m.get("id")
    if mid.__class__ is not str or not mid:
        _bad(i, m, "id", "id is required and must be a non-empty string")
    if len(mid) > MAX_ID_CHARS:
        _bad(i, m, "id", "id is longer than %d characters" % (MAX_ID_CHARS,))
    if "\x00" in mid:
        _bad(i, m, "id", "id contains a NUL character, which PostgreSQL cannot store")
    ts = _ms(i, m, "ts", True)
    sender = _text(i, m, "from", True)
    if not sender:
        _bad(i, m, "from", "from must not be empty")
    to = _text(i, m, "to", True)
    if not to:
        _bad(i, m, "to", "to must not be empty")
    kind = m.get("kind")
    if kind.__class__ is not str or kind not in KINDS:
        _bad(i, m, "kind", "kind must be one of %s" % (", ".join(sorted(KINDS)),))
    body = _text(i, m, "body", True)
    topic = _text(i, m, "topic", False)
    thread = _text(i, m, "thread", False)
    channel = _text(i, m, "channel", False)
    data = _json(i, m, "data")
    meta = _json(i, m, "payload_meta")
    if meta is not None:
        problem = ttl_problem(m["payload_meta"].get("ttl_ms"))
        if problem is not None:
            _bad(i, m, "payload_meta", "payload_meta.ttl_ms " + problem)
    broadcast = _bool(i, m, "is_broadcast")
    urgent = _bool(i, m, "is_urgent")
    expires = _ms(i, m, "expires_at", False)
    return (mid, sender, to, body, kind, topic, thread, channel,
            broadcast, urgent, data, meta, ts, expires)


def parse_batch(body, key_workspace, key_daemon=None):
    """
    Validate a decoded sync body against the workspace of the caller's key.

    @param body: the value C{orjson.loads} returned.
    @param key_workspace: the L{uuid.UUID} the API key belongs to.
    @param key_daemon: the L{uuid.UUID} of the daemon the key is bound to,
        or L{None} when it is not bound.
    @raise BadRequest: 400 for a malformed body or message, 403 when the
        body claims another workspace than the key's, or another daemon
        than the one the key is bound to.
    """
    if body.__class__ is not dict:
        raise BadRequest(400, "the body must be a JSON object")
    messages = body.get("messages")
    if messages.__class__ is not list:
        raise BadRequest(400, "the body must hold a \"messages\" list", field="messages")
    daemon = _uuid(body, "daemon_id")
    workspace = _uuid(body, "workspace_id")
    if workspace != key_workspace:
        raise BadRequest(403, "this key does not belong to workspace %s" % (workspace,),
                         field="workspace_id")
    if key_daemon is not None and daemon != key_daemon:
        raise BadRequest(403, "this key is bound to another daemon than %s" % (daemon,),
                         field="daemon_id")
    rows = [parse_message(i, m) for i, m in enumerate(messages)]
    return Batch(daemon_id=str(daemon), workspace_id=str(workspace), rows=rows)
