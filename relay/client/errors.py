# -*- test-case-name: tests.test_client_errors,tests.test_client -*-
"""
The errors relay.client raises or fails Deferreds with. Each one's ``str()`` is
a one-line sentence fit to show a user.
"""

import errno


class RelayClientError(Exception):
    """Base class of every error of relay.client."""


class ConnectFailed(RelayClientError):
    """
    The daemon could not be reached: no socket, refused, permission denied,
    timed out, or a bad endpoint string. ``reason`` is a short keyword
    (``missing``, ``refused``, ``permission``, ``timeout``, ``endpoint``,
    ``closed``, ``other``).
    """

    def __init__(self, message, reason="other"):
        RelayClientError.__init__(self, message)
        self.reason = reason


class HandshakeRefused(RelayClientError):
    """The daemon answered HELLO with an ERROR frame (``code``, ``message``)."""

    def __init__(self, code, message):
        RelayClientError.__init__(self, "the daemon refused HELLO: {} {}".format(code, message))
        self.code = code
        self.message = message


class SendRefused(RelayClientError):
    """
    The daemon answered a SEND with NACK: ``code`` is ``BUSY``, ``INVALID`` or
    ``FORBIDDEN``; ``retry_after_ms`` is set for BUSY. ``send_id`` is the SEND's id.
    """

    def __init__(self, send_id, code, message, retry_after_ms=None):
        text = "the daemon refused message {}: {} {}".format(send_id, code, message or "")
        if retry_after_ms is not None:
            text += " (retry after {} ms)".format(retry_after_ms)
        RelayClientError.__init__(self, text.rstrip())
        self.send_id = send_id
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms


class TooManyPending(RelayClientError):
    """
    ``max_pending`` SENDs already wait for a receipt (typically while the daemon
    is unreachable); this one was not queued.
    """


class ClientClosed(RelayClientError):
    """The client was closed (or gave up reconnecting) before this completed."""


class ProtocolViolation(RelayClientError):
    """The daemon sent something that is not the relay protocol."""


def describe_connect_failure(failure_value, endpoint_string):
    """
    Turn an endpoint connection error into a ``ConnectFailed`` with a one-line
    message naming the endpoint.
    """
    from twisted.internet import error

    code = getattr(failure_value, "osError", None)
    if isinstance(failure_value, error.ConnectionRefusedError) or code == errno.ECONNREFUSED:
        return ConnectFailed(
            "connection refused at {} (is the daemon running?)".format(endpoint_string),
            "refused")
    if code == errno.ENOENT:
        return ConnectFailed(
            "no daemon socket at {} (is the daemon running?)".format(endpoint_string),
            "missing")
    if code in (errno.EACCES, errno.EPERM):
        return ConnectFailed(
            "permission denied on {} (the socket is mode 600: run as its owner)".format(
                endpoint_string), "permission")
    if isinstance(failure_value, error.TimeoutError):
        return ConnectFailed("timed out connecting to {}".format(endpoint_string), "timeout")
    return ConnectFailed("cannot connect to {}: {}".format(endpoint_string, failure_value),
                         "other")
