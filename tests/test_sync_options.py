# -*- test-case-name: tests.test_sync_options -*-
"""
Tests for L{relay.sync.options}: the sync options of C{twistd relay} and
their one-line errors.
"""

import os

from twisted.python import usage
from twisted.trial import unittest

from relay.sync.options import SYNC_PATH, check, is_loopback
from relay.tap import Options
from tests.support.sync import WORKSPACE


class OptionsTests(unittest.TestCase):
    """
    Parsing the real C{relay.tap.Options} with the sync options in it.
    """

    def parse(self, *args, environ=None, db=None):
        self.patch(os, "environ", dict(environ if environ is not None else {"RELAY_SYNC_KEY": "k1"}))
        config = Options()
        args = list(args)
        if "--sync-url" in args and "--workspace-id" not in args:
            args += ["--workspace-id", WORKSPACE]
        config.parseOptions(["--db", db or os.path.abspath(self.mktemp())] + args)
        return config

    def assertUsage(self, text, *args, **kwargs):
        e = self.assertRaises(usage.UsageError, self.parse, *args, **kwargs)
        self.assertIn(text, str(e))
        self.assertNotIn("\n", str(e))
        return e

    def test_off_without_url(self):
        """
        Without --sync-url sync is off and no key is needed.
        """
        config = self.parse(environ={})
        self.assertIsNone(config["sync-url"])
        self.assertNotIn("sync-key", config)

    def test_defaults(self):
        """
        The documented defaults, converted to numbers; the endpoint is the
        base URL plus the sync path; the spill dir sits next to the store.
        """
        db = os.path.abspath(self.mktemp())
        config = self.parse("--sync-url", "http://127.0.0.1:8080/", db=db)
        self.assertEqual(config["sync-endpoint"], "http://127.0.0.1:8080" + SYNC_PATH)
        self.assertEqual(config["sync-key"], "k1")
        self.assertEqual(config["sync-batch-size"], 100)
        self.assertEqual(config["sync-batch-delay-ms"], 200)
        self.assertEqual(config["sync-batch-bytes"], 512 * 1024)
        self.assertEqual(config["sync-compress-threshold"], 1024)
        self.assertEqual(config["sync-retries"], 3)
        self.assertEqual(config["sync-retry-delay-ms"], 1000)
        self.assertEqual(config["sync-timeout"], 30.0)
        self.assertEqual(config["spill-retry-interval"], 30.0)
        self.assertEqual(config["spill-dir"], db + ".sync-spill")
        self.assertEqual(config["spill-max-bytes"], 1024 ** 3)
        self.assertEqual(config["workspace-id"], WORKSPACE)
        self.assertIsNone(config["daemon-id"])

    def test_help_shows_defaults(self):
        """
        --help lists every sync option with its default.
        """
        text = str(Options())
        for name, default in [("sync-batch-size", "100"), ("sync-batch-delay-ms", "200"),
                              ("sync-batch-bytes", "512KiB"), ("sync-retries", "3"),
                              ("spill-max-bytes", "1GiB"), ("sync-insecure", None)]:
            self.assertIn("--" + name, text)
            if default:
                self.assertIn("[default: {}]".format(default), text)

    def test_key_from_file(self):
        """
        The key is read from --sync-key-file (stripped), before the
        environment.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("  file-key\n")
        config = self.parse("--sync-url", "http://localhost:1", "--sync-key-file", path)
        self.assertEqual(config["sync-key"], "file-key")

    def test_no_key(self):
        """
        --sync-url without a key file or RELAY_SYNC_KEY is refused.
        """
        self.assertUsage("RELAY_SYNC_KEY", "--sync-url", "http://127.0.0.1:1", environ={})

    def test_bad_key_file(self):
        """
        A missing or empty key file is refused with its path.
        """
        self.assertUsage("cannot read", "--sync-url", "http://127.0.0.1:1",
                         "--sync-key-file", "/nonexistent/key")
        path = self.mktemp()
        open(path, "w").close()
        self.assertUsage("is empty", "--sync-url", "http://127.0.0.1:1", "--sync-key-file", path)

    def test_plain_http_needs_loopback_or_insecure(self):
        """
        http:// to a host that is not loopback needs --sync-insecure; https
        and loopback do not.
        """
        self.assertUsage("--sync-insecure", "--sync-url", "http://ingest.example.com")
        config = self.parse("--sync-url", "http://ingest.example.com", "--sync-insecure")
        self.assertEqual(config["sync-url"], "http://ingest.example.com")
        self.parse("--sync-url", "https://ingest.example.com")
        self.parse("--sync-url", "http://[::1]:9000")

    def test_bad_urls(self):
        """
        Non-HTTP URLs, missing hosts, queries and bad ports are refused.
        """
        self.assertUsage("not an http", "--sync-url", "ftp://127.0.0.1")
        self.assertUsage("not an http", "--sync-url", "http://")
        self.assertUsage("without ?query", "--sync-url", "http://127.0.0.1/?a=b")
        self.assertUsage("bad port", "--sync-url", "http://127.0.0.1:99999")

    def test_ids(self):
        """
        --workspace-id and --daemon-id must be UUIDs; they are normalised.
        """
        config = self.parse("--sync-url", "http://127.0.0.1:1", "--workspace-id", WORKSPACE.upper())
        self.assertEqual(config["workspace-id"], WORKSPACE)
        self.assertUsage("--workspace-id", "--sync-url", "http://127.0.0.1:1", "--workspace-id", "team-a")
        self.assertUsage("--daemon-id", "--sync-url", "http://127.0.0.1:1", "--daemon-id", "x")

    def test_workspace_required(self):
        """
        --sync-url without --workspace-id is refused: the ingest only takes
        a batch for the workspace of its key.
        """
        self.patch(os, "environ", {"RELAY_SYNC_KEY": "k1"})
        config = Options()
        e = self.assertRaises(usage.UsageError, config.parseOptions,
                              ["--db", self.mktemp(), "--sync-url", "http://127.0.0.1:1"])
        self.assertIn("--workspace-id", str(e))

    def test_numbers(self):
        """
        Numbers and sizes are checked; sizes take KiB/MiB/GiB suffixes.
        """
        self.assertUsage("--sync-batch-size", "--sync-url", "http://127.0.0.1:1",
                         "--sync-batch-size", "0")
        self.assertUsage("not an integer", "--sync-url", "http://127.0.0.1:1",
                         "--sync-retries", "three")
        self.assertUsage("not a size", "--sync-url", "http://127.0.0.1:1",
                         "--sync-max-bytes", "lots")
        self.assertUsage("seconds", "--sync-url", "http://127.0.0.1:1", "--sync-timeout", "-1")
        self.assertUsage("must not exceed", "--sync-url", "http://127.0.0.1:1",
                         "--sync-batch-bytes", "2MiB", "--sync-max-bytes", "1MiB")
        config = self.parse("--sync-url", "http://127.0.0.1:1", "--sync-max-bytes", "64MiB")
        self.assertEqual(config["sync-max-bytes"], 64 * 1024 * 1024)

    def test_ca_file(self):
        """
        --sync-ca-file must hold a PEM certificate and needs https.
        """
        self.assertUsage("https", "--sync-url", "http://127.0.0.1:1", "--sync-ca-file", "/x.pem")
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a certificate")
        self.assertUsage("no PEM certificate", "--sync-url", "https://127.0.0.1:1",
                         "--sync-ca-file", path)

    def test_spill_dir_not_a_directory(self):
        """
        A --spill-dir that is a file is refused.
        """
        path = self.mktemp()
        open(path, "w").close()
        self.assertUsage("not a directory", "--sync-url", "http://127.0.0.1:1", "--spill-dir", path)


class HelpersTests(unittest.TestCase):
    """
    The small parsers behind the options.
    """

    def test_is_loopback(self):
        """
        127.0.0.0/8, ::1 and localhost are loopback; others are not.
        """
        for host in ("127.0.0.1", "127.1.2.3", "::1", "localhost", "LOCALHOST"):
            self.assertTrue(is_loopback(host), host)
        for host in ("10.0.0.1", "example.com", "0.0.0.0", "localhost.example.com"):
            self.assertFalse(is_loopback(host), host)

    def test_check_without_tap(self):
        """
        check() works on a plain dict too (the benchmark uses it).
        """
        config = check({"sync-url": "http://127.0.0.1:1", "db": "/tmp/x.sqlite",
                        "workspace-id": WORKSPACE,
                        "sync-batch-size": "10", "sync-batch-delay-ms": "5",
                        "sync-batch-bytes": "1MiB", "sync-max-bytes": "8MiB",
                        "sync-compress-threshold": "0", "sync-retries": "0",
                        "sync-retry-delay-ms": "10", "sync-timeout": "1",
                        "spill-retry-interval": "1", "spill-max-bytes": "0"},
                       {"RELAY_SYNC_KEY": "k"})
        self.assertEqual(config["sync-batch-size"], 10)
        self.assertEqual(config["spill-dir"], "/tmp/x.sqlite.sync-spill")


class MakeServiceTests(unittest.TestCase):
    """
    L{make_sync_service} from parsed options.
    """

    def config(self, *args):
        self.patch(os, "environ", {"RELAY_SYNC_KEY": "k1"})
        config = Options()
        config.parseOptions(["--db", os.path.abspath(self.mktemp())] + list(args))
        return config

    def test_none_without_url(self):
        """
        Without --sync-url there is no sync service.
        """
        from twisted.internet import reactor

        from relay.sync.service import make_sync_service
        self.assertIsNone(make_sync_service(self.config(), object(), reactor))

    def test_service_from_options(self):
        """
        The options reach the service, which reports them in its stats.
        """
        from twisted.internet import reactor

        from relay.sync.service import make_sync_service
        from tests.support.sync import FakeSyncSource
        config = self.config("--sync-url", "http://127.0.0.1:1", "--workspace-id", WORKSPACE,
                             "--sync-batch-size", "7", "--sync-batch-delay-ms", "50")
        service = make_sync_service(config, FakeSyncSource(), reactor)
        self.addCleanup(service.poster.close)
        self.assertEqual((service.batch_size, service.batch_delay), (7, 0.05))
        self.assertEqual(service.poster.url, "http://127.0.0.1:1" + SYNC_PATH)
        self.assertEqual(service.stats()["workspace_id"], WORKSPACE)
        self.assertTrue(os.path.isdir(config["spill-dir"]))

    def test_unusable_spill_dir(self):
        """
        A spill directory that cannot be created stops startup with one
        line, not a traceback.
        """
        from twisted.internet import reactor

        from relay.sync.service import make_sync_service
        blocker = os.path.abspath(self.mktemp())
        open(blocker, "w").close()
        config = self.config("--sync-url", "http://127.0.0.1:1", "--workspace-id", WORKSPACE,
                             "--spill-dir", os.path.join(blocker, "spill"))
        e = self.assertRaises(SystemExit, make_sync_service, config, object(), reactor)
        self.assertIn("cannot use --spill-dir", str(e))
        self.assertNotIn("\n", str(e))
