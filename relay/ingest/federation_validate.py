# -*- test-case-name: tests.test_ingest_federation_validate -*-
"""
Validation of the federation request bodies (the wire contract with the
daemon's federation side, README.rst "Federation endpoints of the ingest").

L{parse_presence}, L{parse_handover} and L{parse_poll} turn a decoded JSON
body into a L{Presence}, L{Handover} or L{Poll}, or raise
L{relay.ingest.validate.BadRequest}: 400 naming the field (and the index of
the bad event or item), 403 when a key bound to a daemon names another.
"""

import uuid

import attr
import orjson

from relay.ingest.validate import MAX_ID_CHARS, BadRequest

#: The most events of one presence request, items of one handover.
MAX_EVENTS = 1000
MAX_ITEMS = 1000
#: The longest agent name.
MAX_NAME_CHARS = 255
#: Bounds and defaults of a poll.
MAX_WAIT = 60
DEFAULT_WAIT = 20
MAX_LIMIT = 1000
DEFAULT_LIMIT = 500
#: The most seqs one poll may confirm (a daemon may confirm several pages at
#: once, after the ingest was away).
MAX_CONFIRM = 10000
#: The recipient of a topic broadcast.
BROADCAST = "*"


@attr.s(frozen=True)
class Presence:
    """
    A validated presence request.

    @ivar daemon_id: the calling daemon (L{uuid.UUID}).
    @ivar events: C{(name, online)} pairs, in order.
    """

    daemon_id = attr.ib()
    events = attr.ib()


@attr.s(frozen=True)
class Handover:
    """
    A validated handover request.

    @ivar daemon_id: the calling daemon (L{uuid.UUID}).
    @ivar items: C{(message_id, recipient, message_json)} triples in order,
        C{message_json} the message object as JSON text.
    """

    daemon_id = attr.ib()
    items = attr.ib()


@attr.s(frozen=True)
class Poll:
    """
    A validated poll request.

    @ivar daemon_id: the calling daemon (L{uuid.UUID}).
    @ivar confirm: the seqs to confirm (L{list} of L{int}).
    @ivar directory_after: the directory version the daemon has.
    @ivar wait: the most seconds (an L{int} or a L{float}) to hold the
        request when nothing is there.
    @ivar limit: the most items to answer with.
    """

    daemon_id = attr.ib()
    confirm = attr.ib()
    directory_after = attr.ib()
    wait = attr.ib()
    limit = attr.ib()


def _object(body):
    if body.__class__ is not dict:
        raise BadRequest(400, "the body must be a JSON object")


def _daemon(body, grant):
    """
    The body's C{daemon_id}, checked against the key's L{Grant} (403 for a
    key bound to another daemon).
    """
    value = body.get("daemon_id")
    if value.__class__ is not str:
        raise BadRequest(400, "daemon_id must be a UUID string", field="daemon_id")
    try:
        daemon = uuid.UUID(value)
    except ValueError:
        raise BadRequest(400, "daemon_id is not a valid UUID: %r" % (value[:64],),
                         field="daemon_id")
    if grant is not None and not grant.allows(daemon):
        raise BadRequest(403, "this key is bound to another daemon than %s" % (daemon,),
                         field="daemon_id")
    return daemon


def _list(body, field, most):
    value = body.get(field)
    if value.__class__ is not list:
        raise BadRequest(400, "%s must be a list" % (field,), field=field)
    if not value:
        raise BadRequest(400, "%s must not be empty" % (field,), field=field)
    if len(value) > most:
        raise BadRequest(400, "%s holds more than %d entries" % (field, most), field=field)
    return value


def _bad(i, field, text, message_id=None):
    raise BadRequest(400, "entry %d of the list: %s" % (i, text), index=i,
                     message_id=message_id, field=field)


def _name(i, value, field, message_id=None):
    """
    An agent name: a string of 1 to L{MAX_NAME_CHARS} characters, no NUL.
    """
    if value.__class__ is not str:
        _bad(i, field, "%s must be a string" % (field,), message_id)
    if not value:
        _bad(i, field, "%s must not be empty" % (field,), message_id)
    if len(value) > MAX_NAME_CHARS:
        _bad(i, field, "%s is longer than %d characters" % (field, MAX_NAME_CHARS), message_id)
    if "\x00" in value:
        _bad(i, field, "%s contains a NUL character" % (field,), message_id)
    return value


def _int(body, field, default, low, high, real=False):
    value = body.get(field, default)
    # bool is an int to Python, not to the contract.
    if value.__class__ is not int and not (real and value.__class__ is float):
        raise BadRequest(400, "%s must be %s" % (field, "a number" if real else "an integer"),
                         field=field)
    if not low <= value <= high:
        raise BadRequest(400, "%s must be between %d and %d" % (field, low, high), field=field)
    return value


def parse_presence(body, grant=None):
    """
    Validate a presence body.

    @param body: the value C{orjson.loads} returned.
    @param grant: the key's L{relay.ingest.keys.Grant}, or L{None} to skip
        the daemon binding check.
    @return: a L{Presence}.
    @raise BadRequest: 400 for a bad shape, 403 for another daemon.
    """
    _object(body)
    daemon = _daemon(body, grant)
    events = []
    for i, event in enumerate(_list(body, "events", MAX_EVENTS)):
        if event.__class__ is not dict:
            _bad(i, "events", "an event must be a JSON object")
        name = _name(i, event.get("name"), "name")
        online = event.get("online")
        if online is not True and online is not False:
            _bad(i, "online", "online must be true or false")
        events.append((name, online))
    return Presence(daemon, events)


def parse_handover(body, grant=None):
    """
    Validate a handover body.  Each message is kept as JSON text, to be
    stored and answered verbatim.

    @param body: the value C{orjson.loads} returned.
    @param grant: as for L{parse_presence}.
    @return: a L{Handover}.
    @raise BadRequest: 400 for a bad shape, 403 for another daemon.
    """
    _object(body)
    daemon = _daemon(body, grant)
    items = []
    for i, item in enumerate(_list(body, "items", MAX_ITEMS)):
        if item.__class__ is not dict:
            _bad(i, "items", "an item must be a JSON object")
        message = item.get("message")
        if message.__class__ is not dict:
            _bad(i, "message", "message must be a JSON object")
        mid = message.get("id")
        if mid.__class__ is not str or not mid:
            _bad(i, "id", "message.id is required and must be a non-empty string")
        if len(mid) > MAX_ID_CHARS:
            _bad(i, "id", "message.id is longer than %d characters" % (MAX_ID_CHARS,))
        if "\x00" in mid:
            _bad(i, "id", "message.id contains a NUL character")
        recipient = _name(i, item.get("recipient"), "recipient", mid)
        for field in ("from", "to"):
            if message.get(field).__class__ is not str:
                _bad(i, field, "message.%s must be a string" % (field,), mid)
        topic = message.get("topic")
        if topic is not None and topic.__class__ is not str:
            _bad(i, "topic", "message.topic must be a string or null", mid)
        if recipient == BROADCAST and topic is None:
            _bad(i, "topic", "a broadcast (recipient \"*\") needs a string message.topic", mid)
        # Stored as JSON text: NUL characters travel escaped, as \u0000.
        items.append((mid, recipient, orjson.dumps(message).decode("utf-8")))
    return Handover(daemon, items)


def parse_poll(body, grant=None):
    """
    Validate a poll body, filling in the defaults.

    @param body: the value C{orjson.loads} returned.
    @param grant: as for L{parse_presence}.
    @return: a L{Poll}.
    @raise BadRequest: 400 for a bad shape, 403 for another daemon.
    """
    _object(body)
    daemon = _daemon(body, grant)
    confirm = body.get("confirm", [])
    if confirm.__class__ is not list:
        raise BadRequest(400, "confirm must be a list of seqs", field="confirm")
    if len(confirm) > MAX_CONFIRM:
        raise BadRequest(400, "confirm holds more than %d seqs" % (MAX_CONFIRM,),
                         field="confirm")
    for i, seq in enumerate(confirm):
        if seq.__class__ is not int or not 0 < seq < 2 ** 63:
            raise BadRequest(400, "confirm entry %d must be a positive integer seq" % (i,),
                             index=i, field="confirm")
    after = _int(body, "directory_after", 0, 0, 2 ** 63 - 1)
    wait = _int(body, "wait", DEFAULT_WAIT, 0, MAX_WAIT, real=True)
    limit = _int(body, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    return Poll(daemon, confirm, after, wait, limit)
