# -*- test-case-name: tests.e2e.test_web,tests.e2e.test_browser -*-
"""
Helpers for the HTTP side's tests (C{--http}): a daemon with an HTTP
listener on a free loopback port, plain HTTP requests over real sockets.
"""

import base64
import os
import socket
import sys

import treq
from twisted.internet import defer, reactor

from tests.support.daemon import DaemonProcess

TWIST = os.path.join(os.path.dirname(sys.executable), "twist")


def free_port():
    """
    A TCP port nobody listens on right now (bound, then released).
    """
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class WebDaemon(DaemonProcess):
    """
    The real daemon with C{--http tcp:PORT:interface=INTERFACE}.

    @ivar url: its base URL (always reached over 127.0.0.1).
    """

    def __init__(self, testcase, extra_args=(), interface="127.0.0.1", **kwargs):
        self.port = free_port()
        http = "tcp:%d" % (self.port,)
        if interface:
            http += ":interface=" + interface
        self.http = http
        self.url = "http://127.0.0.1:%d" % (self.port,)
        DaemonProcess.__init__(self, testcase, extra_args=["--http", http] + list(extra_args),
                               **kwargs)


class TwistDaemon(DaemonProcess):
    """
    The daemon run by C{twist} (foreground, no pid file) with extra twist
    options such as C{--log-format json}.
    """

    def __init__(self, testcase, twist_args=(), **kwargs):
        self.twist_args = list(twist_args)
        DaemonProcess.__init__(self, testcase, **kwargs)

    def args(self):
        listen = self.listen or "unix:%s:mode=600" % (self.socket_path,)
        return [TWIST] + self.twist_args + [self.plugin, "--listen", listen,
                                            "--db", self.db_path] + self.extra_args


def basic(user, password):
    return {b"Authorization": [b"Basic " + base64.b64encode(
        ("%s:%s" % (user, password)).encode())]}


@defer.inlineCallbacks
def get(url, headers=None):
    """
    GET C{url} on a fresh connection; fires with C{(code, headers, body)}.
    """
    response = yield treq.get(url, headers=headers, persistent=False, reactor=reactor)
    body = yield response.content()
    return response.code, response.headers, body


@defer.inlineCallbacks
def get_json(url, headers=None):
    import orjson
    code, headers, body = yield get(url, headers)
    content_type = headers.getRawHeaders(b"content-type", [b""])[0]
    if not content_type.startswith(b"application/json"):
        raise AssertionError("%s: %d %r is not JSON: %r" % (url, code, content_type, body[:200]))
    return code, orjson.loads(body)
