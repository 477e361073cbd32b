# -*- test-case-name: tests.test_wire -*-
"""
The wire contract (PROTOCOL.md, version 1) in one place: agent names,
payload kinds, the ttl rule, the nesting limit, frame types, error codes,
the envelope fields the daemon knows, and the envelope builder.

The daemon (L{relay.frames}), the client library (L{relay.client}), the
command line (L{relay.cli}) and the ingest's batch validation all import
these; a rule changed here changes for all of them.

The load generator (L{relay.bench.loadgen}) keeps its own copy of the few
it needs: it is stdlib-only by design, so that it can be copied to any
machine and measure the daemon without sharing its code.
"""

import re

VERSION = 1

# -- names -------------------------------------------------------------

MAX_NAME_CHARS = 128
NAME_RE = re.compile(r"[A-Za-z0-9._\-@:]{1,%d}\Z" % (MAX_NAME_CHARS,))
# Names starting with this are reserved for the daemon.
RESERVED_PREFIX = "_"
# The recipient of a broadcast (to every agent, or to a topic's subscribers).
BROADCAST = "*"


def valid_agent_name(name):
    """
    Whether C{name} is a name an agent may register: 1-128 of letters,
    digits, C{._-@:}, not C{*}, not starting with C{_} (reserved for the
    daemon).
    """
    return (isinstance(name, str) and NAME_RE.match(name) is not None
            and not name.startswith(RESERVED_PREFIX))


def name_problem(name):
    """
    What is wrong with C{name} as an agent name, as a phrase, or None.
    """
    if not isinstance(name, str) or NAME_RE.match(name) is None:
        return "use 1-%d letters, digits, '.', '_', '-', '@', ':'" % (MAX_NAME_CHARS,)
    if name.startswith(RESERVED_PREFIX):
        return "names starting with %r are reserved" % (RESERVED_PREFIX,)
    return None


# -- payloads ----------------------------------------------------------

# In the order PROTOCOL.md lists them (messages name them in this order).
KINDS = ("message", "action", "state", "thinking")
DEFAULT_KIND = "message"

# The longest payload_meta.ttl_ms: 100 years, so that ts + ttl_ms stays a
# valid expires_at (before the year 10000, the ingest's PostgreSQL range)
# for any ts until the year 9899, and far below 2**53 (the largest integer
# JavaScript peers agree on).  The daemon refuses a SEND above it with
# NACK INVALID, and the ingest refuses a batch holding one, so that
# nothing the daemon accepts is refused at sync.
MIN_TTL_MS = 1
MAX_TTL_MS = 100 * 36525 * 86400 * 10


def ttl_problem(value):
    """
    What is wrong with C{value} as a C{payload_meta.ttl_ms} (absent is
    fine), as a phrase, or None: it must be an integer from L{MIN_TTL_MS}
    to L{MAX_TTL_MS}.  The daemon and the ingest both apply this rule.
    """
    if value is None:
        return None
    if value.__class__ is not int or not MIN_TTL_MS <= value <= MAX_TTL_MS:
        return "must be a positive integer of milliseconds up to %d (100 years)" % (MAX_TTL_MS,)
    return None


# orjson writes at most 254 nested arrays or objects (the envelope counts).
MAX_DEPTH = 254

# The largest frame by default (PROTOCOL.md: 1 MiB).
MAX_FRAME_BYTES = 1 << 20

# -- frames ------------------------------------------------------------

HELLO = "HELLO"
WELCOME = "WELCOME"
SEND = "SEND"
DELIVER = "DELIVER"
ACK = "ACK"
NACK = "NACK"
BUSY = "BUSY"
PING = "PING"
PONG = "PONG"
SUBSCRIBE = "SUBSCRIBE"
UNSUBSCRIBE = "UNSUBSCRIBE"
ERROR = "ERROR"
BYE = "BYE"
# A relay extension: the daemon's counters.
STATUS = "STATUS"
STATUS_REPLY = "STATUS_REPLY"

TYPES = frozenset((HELLO, WELCOME, SEND, DELIVER, ACK, NACK, BUSY, PING, PONG, SUBSCRIBE,
                   UNSUBSCRIBE, ERROR, BYE, STATUS, STATUS_REPLY))

# NACK codes: the SEND was not accepted.
NACK_BUSY = "BUSY"
NACK_INVALID = "INVALID"
NACK_FORBIDDEN = "FORBIDDEN"
NACK_CODES = frozenset((NACK_BUSY, NACK_INVALID, NACK_FORBIDDEN))

# ERROR codes; an ERROR with fatal: true closes the connection.
BAD_REQUEST = "BAD_REQUEST"
UNAUTHORIZED = "UNAUTHORIZED"
NOT_FOUND = "NOT_FOUND"
INTERNAL = "INTERNAL"
RESUME_TOO_OLD = "RESUME_TOO_OLD"
ERROR_CODES = frozenset((BAD_REQUEST, UNAUTHORIZED, NOT_FOUND, INTERNAL, RESUME_TOO_OLD))

# Envelope fields the daemon understands; anything else is preserved.
KNOWN_FIELDS = frozenset(("v", "type", "id", "ts", "from", "to", "topic", "payload",
                          "payload_meta"))


def envelope(type_, payload=None, **fields):
    """
    An envelope of C{type_}: C{v} and C{type} first, then C{fields} in the
    order given, then C{payload} (left out when None).
    """
    env = {"v": VERSION, "type": type_}
    env.update(fields)
    if payload is not None:
        env["payload"] = payload
    return env
