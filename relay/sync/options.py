# -*- test-case-name: tests.test_sync_options -*-
"""
The C{twistd relay} options that configure cloud sync, and their checks.

C{relay.tap.Options} adds L{OPT_PARAMETERS} and L{OPT_FLAGS} to its own and
calls L{check} from C{postOptions}.  The numbers and sizes are converted
by the coercers of L{relay.options} (their string defaults by L{check});
L{check} also normalises the URL, ids and paths in place, reads the API
key and raises L{usage.UsageError} with a one-line message for anything
wrong.

The API key never comes from the command line (C{ps} shows it): it is read
from C{--sync-key-file} or the C{RELAY_SYNC_KEY} environment variable.
"""

import ipaddress
import os
import uuid
from urllib.parse import urlsplit

from twisted.python import usage

from relay import options

SYNC_PATH = "/api/daemons/messages/sync"

KEY_ENV = "RELAY_SYNC_KEY"

OPT_PARAMETERS = [
    ["sync-url", None, None,
     "Base URL of the ingest service; enables cloud sync (posts to URL" + SYNC_PATH + ")."],
    ["sync-key-file", None, None,
     "File holding the ingest API key (else the " + KEY_ENV + " environment variable)."],
    ["workspace-id", None, None,
     "UUID of the workspace the API key belongs to (required with --sync-url)."],
    ["daemon-id", None, None,
     "This daemon's UUID (default: generated once, kept in the store)."],
    ["sync-max-bytes", None, "16MiB",
     "Memory bound for messages read for sync; beyond it rows wait in the store.",
     options.size("sync-max-bytes", 1024)],
    ["sync-batch-size", None, "100", "Send a batch once it holds this many messages.",
     options.positive_int("sync-batch-size")],
    ["sync-batch-delay-ms", None, "200", "Send a non-empty batch after this many ms.",
     options.non_negative_int("sync-batch-delay-ms")],
    ["sync-batch-bytes", None, "512KiB", "Send a batch once its JSON reaches this size.",
     options.size("sync-batch-bytes", 1024)],
    ["sync-compress-threshold", None, "1024",
     "Gzip request bodies larger than this many bytes.",
     options.non_negative_int("sync-compress-threshold")],
    ["sync-timeout", None, "30", "Seconds before a sync POST is abandoned and retried.",
     options.seconds("sync-timeout")],
    ["sync-retries", None, "3", "Retries of a failed batch before it is spilled to disk.",
     options.non_negative_int("sync-retries")],
    ["sync-retry-delay-ms", None, "1000",
     "First retry delay in ms; doubles each retry, with jitter.",
     options.positive_int("sync-retry-delay-ms")],
    ["spill-dir", None, None,
     "Directory for batches that could not be sent (default: <db>.sync-spill)."],
    ["spill-retry-interval", None, "30",
     "Seconds between attempts to re-send spill files.",
     options.seconds("spill-retry-interval")],
    ["spill-max-bytes", None, "1GiB",
     "Stop spilling above this many bytes on disk; rows then wait in the store.",
     options.size("spill-max-bytes")],
    ["sync-ca-file", None, None,
     "PEM file of the CA that signed the ingest service's certificate."],
]

OPT_FLAGS = [
    ["sync-insecure", None,
     "Allow plain http to a host that is not loopback (the key travels in clear)."],
]


def is_loopback(host):
    """
    Whether C{host} (a name or an address) is this machine's loopback.
    """
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url(option, url, insecure, path_allowed=True):
    """
    Check an ingest base URL given to C{--option}: http(s), a host, a good
    port, no query or fragment (and no path unless C{path_allowed}), plain
    http only to loopback unless C{insecure}.

    @return: C{(the URL without its trailing slash, its urlsplit parts)}.
    @raise usage.UsageError: a one-line reason.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise usage.UsageError("--{}: {!r} is not an http:// or https:// URL".format(option, url))
    if parts.query or parts.fragment or (not path_allowed and parts.path.strip("/")):
        raise usage.UsageError("--{}: give the service's base URL, without {}?query or "
                               "#fragment".format(option, "" if path_allowed else "a path, "))
    try:
        parts.port
    except ValueError:
        raise usage.UsageError("--{}: {!r} has a bad port".format(option, url))
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not insecure:
        raise usage.UsageError(
            "--{}: plain http to {} would send the API key in clear; "
            "use https, or pass --sync-insecure".format(option, parts.hostname))
    return url.strip().rstrip("/"), parts


def _uuid(name, value):
    if value is None:
        return None
    try:
        return str(uuid.UUID(str(value).strip()))
    except ValueError:
        raise usage.UsageError("--{}: {!r} is not a UUID".format(name, value))


def _read_key(config, environ):
    path = config.get("sync-key-file")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                key = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise usage.UsageError("--sync-key-file: cannot read {}: {}".format(
                path, getattr(e, "strerror", None) or e))
        if not key:
            raise usage.UsageError("--sync-key-file: {} is empty".format(path))
        source = path
    else:
        key = (environ.get(KEY_ENV) or "").strip()
        if not key:
            raise usage.UsageError(
                "--sync-url needs an API key: give --sync-key-file or set " + KEY_ENV)
        source = KEY_ENV
    if any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7e for c in key):
        raise usage.UsageError("sync API key from {} holds whitespace or non-ASCII characters".format(source))
    return key


def check(config, environ):
    """
    Check and normalise the sync options in C{config} (a dict-like
    C{usage.Options}), in place: numbers and sizes (also their defaults)
    become ints and floats whether sync is on or not.

    When C{--sync-url} is absent sync is off and nothing else is looked at.
    Otherwise this sets C{config["sync-key"]} (the API key) and
    C{config["sync-endpoint"]} (the full URL posted to) and fills in the default spill directory next to
    C{config["db"]}.

    @raise usage.UsageError: a one-line reason for the first bad value.
    """
    # Numbers and sizes are converted whether sync is on or not: nothing
    # reaches makeService as a string.
    options.convert(config, OPT_PARAMETERS)
    url = config.get("sync-url")
    if not url:
        config["sync-url"] = None
        return config

    base, parts = base_url("sync-url", url, config.get("sync-insecure"))
    config["sync-url"] = base
    config["sync-endpoint"] = base + SYNC_PATH

    config["sync-key"] = _read_key(config, environ)
    if not config.get("workspace-id"):
        raise usage.UsageError(
            "--sync-url needs --workspace-id (the UUID of the workspace the API key belongs to)")
    config["workspace-id"] = _uuid("workspace-id", config.get("workspace-id"))
    config["daemon-id"] = _uuid("daemon-id", config.get("daemon-id"))

    if config["sync-batch-bytes"] > config["sync-max-bytes"]:
        raise usage.UsageError("--sync-batch-bytes ({}) must not exceed --sync-max-bytes ({})".format(
            config["sync-batch-bytes"], config["sync-max-bytes"]))

    spill = config.get("spill-dir")
    if not spill:
        db = config.get("db")
        if not db:
            raise usage.UsageError("--spill-dir is needed when there is no --db to put it next to")
        spill = str(db) + ".sync-spill"
    spill = os.path.abspath(spill)
    if os.path.exists(spill) and not os.path.isdir(spill):
        raise usage.UsageError("--spill-dir: {} exists and is not a directory".format(spill))
    config["spill-dir"] = spill

    ca = config.get("sync-ca-file")
    if ca:
        if parts.scheme != "https":
            raise usage.UsageError("--sync-ca-file only makes sense with an https:// --sync-url")
        from relay.sync.poster import load_trust_root
        try:
            load_trust_root(ca)
        except ValueError as e:
            raise usage.UsageError("--sync-ca-file: {}".format(e))
    return config
