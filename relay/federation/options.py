# -*- test-case-name: tests.test_federation_options -*-
"""
The C{twistd relay} options of federation, and their checks.

C{--federate} needs sync (C{--sync-url}, C{--workspace-id} and a key):
federation speaks to the same ingest service, with the same key and the
same daemon id.  C{--federate-url} (repeatable) names more ingest
instances of the same PostgreSQL, tried in turn when one does not answer.
"""

from twisted.python import usage

from relay import options
from relay.sync.options import base_url

OPT_FLAGS = [
    ["federate", None,
     "Deliver to and from the agents on the other daemons of the workspace, through the "
     "ingest service (needs --sync-url)."],
]

OPT_PARAMETERS = [
    ["federate-wait", None, "20",
     "Seconds the ingest may hold a federation poll open waiting for work (1 to 60).",
     options.seconds("federate-wait")],
]


def check(config):
    """
    Check the federation options (after L{relay.sync.options.check}); sets
    C{config["federate-urls"]}, the ingest base URLs in order.

    @raise usage.UsageError: a one-line reason.
    """
    options.convert(config, OPT_PARAMETERS)
    extra = config.get("federate-url") or []
    if not config.get("federate"):
        if extra:
            raise usage.UsageError("--federate-url needs --federate")
        config["federate-urls"] = []
        return config
    if not config.get("sync-url"):
        raise usage.UsageError(
            "--federate needs --sync-url, --workspace-id and a key (federation goes through "
            "the ingest service)")
    if not 1 <= config["federate-wait"] <= 60:
        raise usage.UsageError("--federate-wait must be between 1 and 60 seconds")
    urls = [config["sync-url"]]
    for url in extra:
        base, _ = base_url("federate-url", url, config.get("sync-insecure"), path_allowed=False)
        if base not in urls:
            urls.append(base)
    config["federate-urls"] = urls
    return config


def make_federation_service(config, router, store, reactor, sync_service):
    """
    The L{relay.federation.service.FederationService} of checked options,
    or None without C{--federate}.
    """
    if not config.get("federate"):
        return None
    from relay.federation.client import FederationClient
    from relay.federation.service import FederationService
    from relay.sync.poster import make_treq_client

    http, pool = make_treq_client(reactor, config.get("sync-ca-file"))
    # A long-poll holds one connection: leave room for hand-overs and presence.
    pool.maxPersistentPerHost = 4
    client = FederationClient(reactor, config["federate-urls"], config["sync-key"], http, pool,
                              compress_threshold=config["sync-compress-threshold"])
    return FederationService(reactor, router, store, client, sync_service.known_daemon_id,
                             config["workspace-id"], wait=config["federate-wait"],
                             timeout=config["sync-timeout"])
