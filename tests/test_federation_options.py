# -*- test-case-name: tests.test_federation_options -*-
"""
Tests for L{relay.federation.options} through C{twistd relay}'s own
L{relay.tap.Options}.
"""

import uuid

from twisted.python import usage
from twisted.trial import unittest

from relay.tap import Options

WS = str(uuid.uuid4())


class OptionsTests(unittest.TestCase):

    def parse(self, *args):
        import os
        os.environ["RELAY_SYNC_KEY"] = "rlk_test_key"
        self.addCleanup(os.environ.pop, "RELAY_SYNC_KEY", None)
        config = Options()
        config.parseOptions(["--db", self.mktemp()] + list(args))
        return config

    def test_off_by_default(self):
        config = self.parse()
        self.assertFalse(config["federate"])
        self.assertEqual(config["federate-urls"], [])

    def test_needs_sync(self):
        e = self.assertRaises(usage.UsageError, self.parse, "--federate")
        self.assertIn("--federate needs --sync-url", str(e))

    def test_urls_in_order_sync_url_first(self):
        config = self.parse("--federate", "--sync-url", "http://127.0.0.1:1/",
                            "--workspace-id", WS, "--federate-url", "http://127.0.0.1:2",
                            "--federate-url", "http://127.0.0.1:1")
        self.assertEqual(config["federate-urls"], ["http://127.0.0.1:1", "http://127.0.0.1:2"])
        self.assertEqual(config["federate-wait"], 20.0)

    def test_bad_values(self):
        base = ["--sync-url", "http://127.0.0.1:1", "--workspace-id", WS]
        for args, words in (
                (["--federate-url", "http://127.0.0.1:2"], "--federate-url needs --federate"),
                (base + ["--federate", "--federate-url", "ftp://x"], "is not an http"),
                (base + ["--federate", "--federate-url", "http://127.0.0.1:2/api"], "base URL"),
                (base + ["--federate", "--federate-url", "http://10.1.2.3:2"], "in clear"),
                (base + ["--federate", "--federate-wait", "61"], "between 1 and 60"),
                (base + ["--federate", "--federate-wait", "soon"], "federate-wait")):
            e = self.assertRaises(usage.UsageError, self.parse, *args)
            self.assertIn(words, str(e))
