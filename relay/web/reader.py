# -*- test-case-name: tests.test_web_reader,tests.e2e.test_web -*-
"""
Reads for the HTTP API, on a read-only SQLite connection of their own in a
thread of their own: the writer (L{relay.store.Store}'s pool) never waits
for the dashboard, and a slow query never blocks the reactor.

The queries are C{relay history}'s (L{relay.cli.history}), not a copy.
"""

import threading

from twisted.internet import threads
from twisted.python.threadpool import ThreadPool

from relay.cli import history

# Statuses of a delivery still waiting for its recipient.
WAITING = ("pending", "delivered")


class StoreReader:
    """
    @param path: the store file (opened read-only, once, on the reader's
        thread; WAL readers see every commit and block nobody).
    """

    def __init__(self, reactor, path):
        self.reactor = reactor
        self.path = path
        self._local = threading.local()
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name="relay-web-reader")

    def start(self):
        self.pool.start()

    def stop(self):
        self.pool.stop()

    def _run(self, fn, *args):
        return threads.deferToThreadPool(self.reactor, self.pool, self._call, fn, args)

    def _call(self, fn, args):
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = history.open_store(self.path)
        return fn(db, *args)

    def messages(self, **filters):
        return self._run(lambda db: history.query_messages(db, **filters))

    def dead_letters(self, limit):
        return self._run(history.query_dead_letters, limit)

    def quarantine(self, limit):
        return self._run(_quarantine, limit)

    def waiting(self):
        """
        Deliveries in the store not yet acked or expired, by status.
        """
        return self._run(_waiting)


def _quarantine(db, limit):
    rows = db.execute("SELECT id, ts, statement, row, error FROM quarantine "
                      "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [dict(r) for r in reversed(rows)]


def _waiting(db):
    counts = dict.fromkeys(WAITING, 0)
    for status, n in db.execute(
            "SELECT status, count(*) FROM deliveries WHERE status IN (?, ?) GROUP BY status",
            WAITING).fetchall():
        counts[status] = n
    return counts
