# -*- test-case-name: tests.e2e.test_web -*-
"""
The daemon's HTTP side (C{twistd relay --http ENDPOINT}): Prometheus
C{/metrics}, C{/healthz}, a JSON API, Server-Sent Events and a live
dashboard page served from package data.

This module stays light (no prometheus_client, no twisted.web.server):
L{relay.tap.Options} imports it to check the options.  L{add_http} imports
the rest, inside C{makeService}.
"""

import ipaddress

from twisted.application import service
from twisted.internet import endpoints
from twisted.python import usage


def http_interface(endpoint):
    """
    The interface a C{tcp:}/C{ssl:} server endpoint string binds ("" for
    all), or None for a Unix socket.
    """
    args, kwargs = endpoints._parse(endpoint)
    kind = args[0] if args else ""
    if kind == "unix":
        return None
    return kwargs.get("interface") or (args[3] if len(args) > 3 else "")


def is_loopback(endpoint):
    """
    True when only this machine can reach C{endpoint} (a Unix socket, or an
    interface such as 127.0.0.1, ::1 or localhost).
    """
    interface = http_interface(endpoint)
    if interface is None:
        return True
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface.strip("[]")).is_loopback
    except ValueError:
        return False


def check_http(options):
    """
    Check C{--http} endpoints of a parsed L{relay.tap.Options}; raises
    L{usage.UsageError} with a one-line reason.
    """
    for e in options["http"]:
        try:
            endpoints.serverFromString(None, e)
        except (ValueError, TypeError, KeyError, OSError) as err:
            raise usage.UsageError("bad --http endpoint %r: %s" % (e, err))
        if not is_loopback(e) and not options.get("credCheckers"):
            raise usage.UsageError(
                "--http %s is reachable from the network: give --auth (its users log in "
                "to the dashboard with HTTP Basic), or listen on 127.0.0.1" % (e,))


class WebService(service.Service):
    """
    Starts and stops the HTTP side's reader thread and SSE clients.
    """

    def __init__(self, reader, stream):
        self.reader = reader
        self.stream = stream

    def startService(self):
        self.reader.start()
        service.Service.startService(self)

    def stopService(self):
        self.stream.stop()
        self.reader.stop()
        return service.Service.stopService(self)


def add_http(top, config, store, router, events, reactor, status):
    """
    Add a listener for each C{--http} endpoint to C{top}.  With C{--auth}
    every HTTP request needs a user of it (HTTP Basic, through
    L{twisted.web.guard} on the same checkers as agents' HELLO).
    """
    from twisted.application import strports
    from twisted.cred import portal
    from twisted.web import guard, resource, server
    from zope.interface import implementer

    from relay.auth import _bytes_checker
    from relay.web.metrics import Metrics
    from relay.web.reader import StoreReader
    from relay.web.resources import make_root
    from relay.web.sse import EventStream

    metrics = Metrics(router, store, events, status.sync_stats, status.started,
                      retention_stats=status.retention_stats)
    reader = StoreReader(reactor, store.path)
    stream = EventStream(reactor, events)
    root = site_root = make_root(status, store, top, metrics, reader, stream)
    cred_checkers = config.get("credCheckers")
    if cred_checkers:
        @implementer(portal.IRealm)
        class WebRealm:
            def requestAvatar(self, avatarId, mind, *interfaces):
                if resource.IResource in interfaces:
                    return resource.IResource, root, lambda: None
                raise NotImplementedError()
        site_root = guard.HTTPAuthSessionWrapper(
            portal.Portal(WebRealm(), [_bytes_checker(c) for c in cred_checkers]),
            [guard.BasicCredentialFactory(b"relay")])
    site = server.Site(site_root)
    site.noisy = False
    site.displayTracebacks = False
    web = WebService(reader, stream)
    web.setServiceParent(top)
    for endpoint in config["http"]:
        listener = strports.service(endpoint, site, reactor=reactor)
        listener.relay_endpoint = endpoint
        listener.setServiceParent(top)
    top.web = web
    top.metrics = metrics
    top.events_stream = stream
    return web
