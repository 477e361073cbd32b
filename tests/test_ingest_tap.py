"""
Tests for L{relay.ingest.tap}: options, the service tree and the plugin.
"""

import os
import subprocess
import sys

from twisted.application.service import IServiceMaker
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial import unittest

from relay.ingest import db, tap

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class OptionsTests(unittest.TestCase):
    """
    L{tap.Options}.
    """

    def parse(self, *argv):
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self):
        """
        Without arguments the service listens on 127.0.0.1:8080 with the
        issue's limits and uses the local PostgreSQL (or
        RELAY_POSTGRES_DSN).
        """
        self.patch(os, "environ", {k: v for k, v in os.environ.items()
                                   if k != "RELAY_POSTGRES_DSN"})
        o = self.parse()
        self.assertEqual(o["listen"], ["tcp:8080:interface=127.0.0.1"])
        self.assertEqual(o["postgres"], db.DEFAULT_DSN)
        self.assertEqual((o["chunk-size"], o["copy-threshold"]), (100, 1000))
        self.assertEqual(o["max-body-bytes"], 16 * 1024 * 1024)
        self.assertEqual(o["max-inflated-bytes"], 64 * 1024 * 1024)
        os.environ["RELAY_POSTGRES_DSN"] = "host=db.example dbname=relay"
        self.assertEqual(self.parse()["postgres"], "host=db.example dbname=relay")

    def test_listen_repeatable(self):
        """
        --listen may be given several times.
        """
        o = self.parse("--listen", "tcp:1", "--listen", "unix:/tmp/ingest.sock")
        self.assertEqual(o["listen"], ["tcp:1", "unix:/tmp/ingest.sock"])

    def test_bad_values(self):
        """
        Bad numbers, strategies, DSNs and listen descriptions are usage
        errors.
        """
        for argv in (["--pool-size", "0"], ["--chunk-size", "x"],
                     ["--copy-threshold", "-3"], ["--small-strategy", "magic"],
                     ["--postgres", "host=a =broken"], ["--listen", "nonsense"],
                     ["--listen", "8080"], ["--listen", "tcp:http"],
                     ["--listen", "ssl:8443:privateKey=/nonexistent/key.pem"],
                     ["--db-timeout", "0"], ["--db-timeout", "soon"]):
            self.assertRaises(usage.UsageError, self.parse, *argv)


class MakeServiceTests(unittest.TestCase):
    """
    L{tap.makeService}.
    """

    def test_tree(self):
        """
        One database service and one listener per --listen, under one
        MultiService.
        """
        o = tap.Options()
        o.parseOptions(["--listen", "tcp:0:interface=127.0.0.1",
                        "--listen", "tcp:0:interface=127.0.0.1"])
        top = tap.makeService(o, reactor)
        children = list(top)
        self.assertEqual(len(children), 3)
        self.assertIsInstance(children[0], tap.IngestService)

    def test_bind_failure_is_loud(self):
        """
        When a port cannot be bound, starting the service raises.
        """
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        o = tap.Options()
        o.parseOptions(["--listen", "tcp:%d:interface=127.0.0.1" % (port.getHost().port,)])
        top = tap.makeService(o, reactor)
        self.assertRaises(CannotListenError, top.privilegedStartService)

    def test_plugin(self):
        """
        twistd finds the relay-ingest plugin, and it builds from its options.
        """
        makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("relay-ingest", makers)
        self.assertIsInstance(makers["relay-ingest"].options(), tap.Options)

    def test_no_prometheus_at_discovery(self):
        """
        Neither the plugin module nor the tap module imports
        prometheus_client; only makeService does.
        """
        code = ("import sys, twisted.plugins.relay_ingest_plugin, relay.ingest.tap;"
                "print('prometheus_client' in sys.modules)")
        env = dict(os.environ, PYTHONPATH=REPO_ROOT)
        out = subprocess.check_output([sys.executable, "-c", code], env=env, cwd=REPO_ROOT)
        self.assertEqual(out.strip(), b"False")
