# -*- test-case-name: tests.test_client -*-
"""
relay.client: the Python client library for the relay daemon (Twisted API).

    from relay.client import connect

    client = yield connect(reactor, "unix:/tmp/agent-relay.sock", "alice")
    send_id = yield client.send("bob", "hello")     # fires on the daemon's receipt
    message = yield client.next_message()            # or connect(..., on_message=f)
    yield client.close()                             # says BYE

See ``relay.client.client`` for the delivery, receipt and reconnect rules and
``relay.client.blocking`` for plain (non-Twisted) scripts.
"""

from relay.client.client import Client, check_agent_name, connect
from relay.client.errors import (
    ClientClosed, ConnectFailed, HandshakeRefused, ProtocolViolation, RelayClientError,
    SendRefused, TooManyPending)
from relay.client.message import Message
from relay.client.status import fetch_status

DEFAULT_SOCKET = "/tmp/agent-relay.sock"


def default_endpoint(environ=None):
    """
    The endpoint string to use when none is given: ``unix:$RELAY_SOCKET`` if that
    is set, else ``unix:/tmp/agent-relay.sock`` (the daemon's default).
    """
    import os
    path = (environ if environ is not None else os.environ).get("RELAY_SOCKET") or \
        DEFAULT_SOCKET
    return "unix:" + path


__all__ = [
    "connect", "Client", "Message", "fetch_status", "default_endpoint", "DEFAULT_SOCKET",
    "check_agent_name", "RelayClientError", "ConnectFailed", "HandshakeRefused",
    "SendRefused", "ClientClosed", "ProtocolViolation", "TooManyPending",
]
