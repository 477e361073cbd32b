"""
Federation end to end (tests.e2e.test_federation): the real PostgreSQL,
real C{twistd -n relay-ingest} instances and real C{twistd -n relay
--federate} daemons, with agents on L{relay.client}.
"""

import uuid

import psycopg2
from twisted.internet import defer, reactor

from relay import client as relay_client
from relay.ingest import keys
from tests.support.daemon import DaemonProcess, daemon_status
from tests.support.ingest import testDatabaseDSN, truncate
from tests.support.ingest_process import IngestProcess
from tests.support.poll import poll_until


class Agent:
    """
    A L{relay.client.Client} that keeps every message it got (acked).
    """

    def __init__(self, name):
        self.name = name
        self.got = []
        self.client = None

    def on_message(self, message):
        self.got.append(message)

    def bodies(self):
        return [m.body for m in self.got]

    def ids(self):
        return [m.id for m in self.got]


class Workspace:
    """
    One workspace: its key, its ingest instances and its daemons.
    """

    def __init__(self, testcase, ingests=1):
        self.testcase = testcase
        self.dsn = testDatabaseDSN(testcase)
        truncate(self.dsn)
        self.id = str(uuid.uuid4())
        conn = psycopg2.connect(self.dsn)
        try:
            self.key = keys.create_key(conn, self.id)[1]
        finally:
            conn.close()
        self.ingests = [IngestProcess(reactor, self.dsn) for _ in range(ingests)]
        for ingest in self.ingests:
            testcase.addCleanup(ingest.stop)
        self.daemons = []

    def start_ingests(self):
        return defer.gatherResults([i.start() for i in self.ingests])

    def daemon(self, first=0, extra=()):
        """
        A federated daemon (not started) talking to ingest C{first} first,
        then the others.
        """
        urls = [i.url for i in self.ingests[first:] + self.ingests[:first]]
        args = ["--federate", "--sync-url", urls[0], "--workspace-id", self.id,
                "--sync-batch-delay-ms", "20", "--sync-retry-delay-ms", "100",
                "--sync-timeout", "5", "--federate-wait", "5"]
        for url in urls[1:]:
            args += ["--federate-url", url]
        daemon = DaemonProcess(self.testcase, extra_args=args + list(extra),
                               env={"RELAY_SYNC_KEY": self.key})
        self.testcase.addCleanup(daemon.kill)
        self.daemons.append(daemon)
        return daemon

    @defer.inlineCallbacks
    def agent(self, daemon, name, topics=()):
        agent = Agent(name)
        agent.client = yield relay_client.connect(reactor, daemon.endpoint, name,
                                                  on_message=agent.on_message)
        for topic in topics:
            yield agent.client.subscribe(topic)
        self.testcase.addCleanup(agent.client.close)
        return agent

    def directory(self):
        conn = psycopg2.connect(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT name, home_daemon::text, online FROM fed_directory"
                            " WHERE workspace_id = %s", (self.id,))
                return {name: (home, online) for name, home, online in cur.fetchall()}
        finally:
            conn.close()


@defer.inlineCallbacks
def federation_status(daemon):
    status = yield daemon_status(daemon)
    return status["federation"]


def wait_federated(daemon, timeout=30):
    """
    Wait until C{daemon} has polled the ingest (it knows its id and the
    directory).
    """
    @defer.inlineCallbacks
    def ready():
        fed = yield federation_status(daemon)
        return fed["state"] == "connected" and fed["polls"] > 0
    return poll_until(ready, timeout, interval=0.05, clock=reactor,
                      what="daemon federated")


def wait_home(workspace, name, daemon_id, timeout=30):
    return poll_until(lambda: workspace.directory().get(name, (None,))[0] == daemon_id,
                      timeout, interval=0.05, clock=reactor,
                      what="%s at home on %s" % (name, daemon_id))


def wait_known(daemon, name, home, timeout=30):
    """
    Wait until C{daemon}'s directory copy has C{name} at home on C{home}.
    """
    @defer.inlineCallbacks
    def known():
        fed = yield federation_status(daemon)
        return any(e["name"] == name and e["home"] == home for e in fed["directory"])
    return poll_until(known, timeout, interval=0.05, clock=reactor,
                      what="%s known at home on %s" % (name, home))


def wait_got(agent, count, timeout=30):
    return poll_until(lambda: len(agent.got) >= count, timeout, interval=0.02, clock=reactor,
                      what=lambda: "%s to get %d messages (has %d)"
                      % (agent.name, count, len(agent.got)))
