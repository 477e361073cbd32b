# -*- test-case-name: tests.test_client -*-
"""
The client side of the wire: length-prefixed JSON frames, PING answered with
PONG, and every other frame handed to an owner (the ``Client``, or the one-shot
STATUS request).
"""

import itertools
import os
import pwd
import socket
import struct

import orjson
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver

from relay import wire

MAX_FRAME_BYTES = wire.MAX_FRAME_BYTES

_counter = itertools.count(1)
_id_prefix = "c{}{}-".format(os.getpid(), os.urandom(3).hex())


def new_id():
    """A process-unique envelope id."""
    return _id_prefix + str(next(_counter))


def envelope(type_, clock, payload=None, **fields):
    """An envelope of ``type_`` stamped with ``clock.seconds()`` in ms."""
    return wire.envelope(type_, payload if payload is not None else {}, id=new_id(),
                         ts=int(clock.seconds() * 1000), **fields)


def _user(uid):
    try:
        return "{} (uid {})".format(pwd.getpwuid(uid).pw_name, uid)
    except KeyError:
        return "uid {}".format(uid)


def peer_uid(transport):
    """
    The uid of the process at the other end of a Unix socket connection
    (``SO_PEERCRED``, as the kernel recorded it at connect time), or None
    for other transports and platforms without ``SO_PEERCRED``. ``transport``
    is a Twisted transport or a connected ``socket.socket``.
    """
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    # A Twisted transport, or a plain connected socket.
    get_handle = getattr(transport, "getHandle", None)
    handle = get_handle() if get_handle is not None else transport
    if getattr(handle, "family", None) != socket.AF_UNIX:
        return None
    creds = handle.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def untrusted_peer(transport, endpoint_string, trust_uid=None):
    """
    Why the daemon on ``transport`` must not be talked to, or None: on a Unix
    socket the daemon must run as ``trust_uid`` (default: our own uid), or
    another local user who created the socket while the real daemon was
    down would read what we send. TCP and TLS endpoints are not checked.
    """
    uid = peer_uid(transport)
    expected = os.geteuid() if trust_uid is None else trust_uid
    if uid is None or uid == expected:
        return None
    return ("the daemon at {} runs as {}, not as {}: refusing it (trust it with "
            "--trust-user {} or trust_uid={})".format(
                endpoint_string, _user(uid), _user(expected), uid, uid))


class RelayClientProtocol(Int32StringReceiver):
    """
    One connection to the daemon. ``owner`` gets ``connection_made(proto)``,
    ``frame_received(proto, envelope)`` and ``connection_lost(proto, reason)``.
    """

    log = Logger()
    MAX_LENGTH = MAX_FRAME_BYTES

    def __init__(self, owner, clock):
        self.owner = owner
        self.clock = clock
        self.closed = False

    def connectionMade(self):
        self.owner.connection_made(self)

    def send_envelope(self, env):
        self.sendString(orjson.dumps(env))

    def send_frame(self, type_, payload=None, **fields):
        env = envelope(type_, self.clock, payload, **fields)
        self.send_envelope(env)
        return env

    def stringReceived(self, data):
        try:
            env = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.log.warn("dropping a frame that is not JSON ({n} bytes)", n=len(data))
            return
        if not isinstance(env, dict) or not isinstance(env.get("type"), str):
            self.log.warn("dropping a frame without a type")
            return
        if env["type"] == wire.PING:
            payload = env.get("payload")
            self.send_frame(wire.PONG, payload if isinstance(payload, dict) else {})
            return
        self.owner.frame_received(self, env)

    def lengthLimitExceeded(self, length):
        self.log.error("the daemon sent a frame of {length} bytes (limit {limit}); closing",
                       length=length, limit=self.MAX_LENGTH)
        self.transport.abortConnection()

    def connectionLost(self, reason):
        self.closed = True
        self.owner.connection_lost(self, reason)


class RelayClientFactory(Factory):
    """Builds one ``RelayClientProtocol`` per connection for ``owner``."""

    noisy = False       # no "Starting factory" line per reconnect attempt

    def __init__(self, owner, clock):
        self.owner = owner
        self.clock = clock

    def buildProtocol(self, addr):
        proto = RelayClientProtocol(self.owner, self.clock)
        proto.factory = self
        return proto
