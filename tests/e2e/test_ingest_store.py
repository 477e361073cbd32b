# -*- test-case-name: tests.e2e.test_ingest_store -*-
"""
Tests for the bulk insert strategies in L{relay.ingest.inserters}, against
the real PostgreSQL (see L{tests.support.ingest}).
"""

import json

from twisted.internet import defer, reactor
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from relay.ingest import db
from relay.ingest.inserters import (
    CopyInserter,
    IBulkInserter,
    MultiRowInserter,
    UnnestInserter,
)
from tests.support.ingest import (
    BASE_TS,
    fetchAll,
    makeRow,
    testDatabaseDSN,
    truncate,
)

WS = "6f1d1c2e-8d8e-4a53-9a4b-0d5b3f3d6a01"
OTHER_WS = "0b9a1c2e-8d8e-4a53-9a4b-0d5b3f3d6a02"
DAEMON = "11111111-2222-4333-8444-555555555555"
OTHER_DAEMON = "22222222-3333-4444-8555-666666666666"

ODD_TEXT = [
    "",
    "tab\there",
    "new\nline and \r carriage",
    "back\\slash \\N \\t literally",
    "quote ' double \" semicolon ; -- comment",
    "unicode: h\u00e9llo \u4e16\u754c \U0001F600 \u202e rtl",
    "\\.",
    "comma, \"csv\" style",
]


class _StrategyMixin:
    """
    The behaviour every L{IBulkInserter} must have; subclasses make
    C{self.inserter}.
    """

    def setUp(self):
        self.dsn = testDatabaseDSN(self)
        truncate(self.dsn)
        self.starting = []
        self.inserter = self.make_inserter()
        return defer.gatherResults(self.starting)

    def tx_pool(self):
        pool = db.TxPostgresPool(self.dsn, 2, reactor)
        self.addCleanup(pool.close)
        self.starting.append(pool.start())
        return pool

    def thread_pool(self):
        pool = db.thread_pool(self.dsn, 2, reactor)
        self.addCleanup(pool.close)
        return pool

    def rows(self):
        return fetchAll(
            self.dsn,
            "SELECT workspace_id::text, daemon_id::text, original_id, from_agent,"
            " to_agent, body, kind, topic, thread, channel, is_broadcast, is_urgent,"
            " data, payload_meta,"
            " (extract(epoch from message_ts) * 1000)::bigint,"
            " (extract(epoch from expires_at) * 1000)::bigint"
            " FROM agent_messages ORDER BY original_id",
        )

    def count(self):
        return fetchAll(self.dsn, "SELECT count(*) FROM agent_messages")[0][0]

    def test_provides(self):
        """
        The strategy provides L{IBulkInserter} and has a name.
        """
        self.assertTrue(verifyObject(IBulkInserter, self.inserter))
        self.assertIsInstance(self.inserter.name, str)

    @defer.inlineCallbacks
    def assertInsertsBatchSize(self, n):
        rows = [makeRow(i) for i in range(n)]
        result = yield self.inserter.insert(WS, DAEMON, rows)
        self.assertEqual(result, (n, 0))
        self.assertEqual(self.count(), n)
        if n:
            ids = {r[0] for r in fetchAll(self.dsn, "SELECT original_id FROM agent_messages")}
            self.assertEqual(ids, {"m-%d" % i for i in range(n)})
        again = yield self.inserter.insert(WS, DAEMON, rows)
        self.assertEqual(again, (0, n))
        self.assertEqual(self.count(), n)

    def test_empty(self):
        """
        An empty batch inserts nothing and counts (0, 0).
        """
        return self.assertInsertsBatchSize(0)

    def test_one(self):
        """
        One row is inserted and, sent again, counted as a duplicate.
        """
        return self.assertInsertsBatchSize(1)

    def test_999(self):
        """
        999 rows (one under the default COPY threshold) are all inserted.
        """
        return self.assertInsertsBatchSize(999)

    def test_1000(self):
        """
        1000 rows (the default COPY threshold) are all inserted.
        """
        return self.assertInsertsBatchSize(1000)

    def test_1001(self):
        """
        1001 rows (one over the default COPY threshold) are all inserted.
        """
        return self.assertInsertsBatchSize(1001)

    @defer.inlineCallbacks
    def test_half_duplicates(self):
        """
        With half of a batch already stored, only the new half is inserted,
        and the counts say so exactly.
        """
        first = [makeRow(i) for i in range(0, 400, 2)]
        yield self.inserter.insert(WS, DAEMON, first)
        batch = [makeRow(i) for i in range(400)]
        result = yield self.inserter.insert(WS, DAEMON, batch)
        self.assertEqual(result, (200, 200))
        self.assertEqual(self.count(), 400)

    @defer.inlineCallbacks
    def test_duplicates_inside_batch(self):
        """
        Repeats of an id with the same content inside one batch are inserted
        once and counted as duplicates.
        """
        batch = [makeRow(i % 150) for i in range(450)]
        result = yield self.inserter.insert(WS, DAEMON, batch)
        self.assertEqual(result, (150, 300))
        self.assertEqual(result.collisions, 0)
        self.assertEqual(self.count(), 150)

    @defer.inlineCallbacks
    def test_collisions_inside_batch(self):
        """
        Repeats of an id with other content inside one batch are collisions
        (issue 13 point 17; they used to be counted as duplicates and
        dropped): the first occurrence keeps the id, each other content is
        stored under a disambiguated id naming it in collision_of.
        """
        batch = [makeRow(i % 150, body="copy %d" % (i,)) for i in range(450)]
        result = yield self.inserter.insert(WS, DAEMON, batch)
        self.assertEqual((result, result.collisions), ((450, 0), 300))
        self.assertEqual(self.count(), 450)
        bodies = dict(fetchAll(self.dsn, "SELECT original_id, body FROM agent_messages"))
        self.assertEqual(bodies["m-7"], "copy 7")
        others = fetchAll(self.dsn, "SELECT original_id, body FROM agent_messages"
                                    " WHERE collision_of = 'm-7' ORDER BY body")
        self.assertEqual([b for _, b in others], ["copy 157", "copy 307"])
        self.assertTrue(all(i.startswith("m-7~") for i, _ in others))

    @defer.inlineCallbacks
    def test_collision_across_batches(self):
        """
        A stored id sent again with other content (a restored store reusing
        ids) is stored and reported, never dropped; sent again it is a
        duplicate (its disambiguated id is a function of its content), and
        the original row is untouched.  The same id and content from another
        daemon is a true duplicate.
        """
        first = [makeRow(i) for i in range(10)]
        yield self.inserter.insert(WS, DAEMON, first)
        reused = [makeRow(i, body="new message %d" % (i,)) for i in range(5)] + \
            [makeRow(i) for i in range(5, 10)]
        result = yield self.inserter.insert(WS, OTHER_DAEMON, reused)
        self.assertEqual((result, result.collisions), ((5, 5), 5))
        self.assertEqual(self.count(), 15)
        again = yield self.inserter.insert(WS, OTHER_DAEMON, reused)
        self.assertEqual((again, again.collisions), ((0, 10), 0))
        self.assertEqual(self.count(), 15)
        rows = dict(fetchAll(self.dsn, "SELECT body, daemon_id::text FROM agent_messages"
                                       " WHERE collision_of = 'm-3'"))
        self.assertEqual(rows, {"new message 3": OTHER_DAEMON})
        body = fetchAll(self.dsn, "SELECT body FROM agent_messages WHERE original_id = 'm-3'")
        self.assertEqual(body, [("hello 3",)])

    @defer.inlineCallbacks
    def test_json_key_order_is_not_a_collision(self):
        """
        The same data object with its keys in another order (jsonb does not
        keep the order) is the same content: a duplicate.
        """
        import orjson
        yield self.inserter.insert(WS, DAEMON, [makeRow(1, data={"a": 1, "b": [1, 2]})])
        row = list(makeRow(1, data={"a": 1, "b": [1, 2]}))
        row[10] = orjson.dumps({"b": [1, 2], "a": 1}).decode()
        result = yield self.inserter.insert(WS, DAEMON, [tuple(row)])
        self.assertEqual((result, result.collisions), ((0, 1), 0))

    @defer.inlineCallbacks
    def test_dedup_is_per_workspace(self):
        """
        The same original id in two workspaces is two rows.
        """
        rows = [makeRow(i) for i in range(3)]
        a = yield self.inserter.insert(WS, DAEMON, rows)
        b = yield self.inserter.insert(OTHER_WS, DAEMON, rows)
        self.assertEqual((a, b), ((3, 0), (3, 0)))
        self.assertEqual(self.count(), 6)

    @defer.inlineCallbacks
    def test_all_fields_round_trip(self):
        """
        Every field, including odd text, unicode, nested JSON, nulls,
        booleans and timestamps, is stored exactly as given.
        """
        nested = {"a": [1, 2.5, {"b": None, "c": ["x\ty", "\u00e9\\"]}],
                  "deep": {"er": {"est": True}}, "q": "'); DROP TABLE x; --"}
        rows = []
        for i, text in enumerate(ODD_TEXT):
            rows.append(makeRow(
                i,
                id="id %s %d" % (text, i),
                body=text,
                topic=text or None,
                thread="t\\h\nr",
                channel="#chan" if i % 2 else None,
                **{"from": "from " + text + "x", "to": "*"},
                data=nested if i % 2 else None,
                payload_meta={"k": text},
                is_broadcast=bool(i % 2),
                is_urgent=not (i % 3),
                expires_at=(BASE_TS + 86400000) if i % 2 else None,
            ))
        result = yield self.inserter.insert(WS, DAEMON, rows)
        self.assertEqual(result, (len(rows), 0))
        stored = {r[2]: r for r in self.rows()}
        self.assertEqual(len(stored), len(rows))
        for row in rows:
            got = stored[row[0]]
            self.assertEqual(got[:2], (WS, DAEMON))
            expected = list(row)
            expected[10] = None if row[10] is None else json.loads(row[10])
            expected[11] = None if row[11] is None else json.loads(row[11])
            self.assertEqual(list(got[2:]), expected)

    @defer.inlineCallbacks
    def test_random_text_round_trip(self):
        """
        Strings of code points drawn from all of Unicode (but NUL and lone
        surrogates, which no JSON body can carry to here), with extra
        backslashes, tabs, newlines and other control characters, come back
        from PostgreSQL exactly as given, in every text field and in JSON.
        """
        import random
        rnd = random.Random(20261126)
        special = ["\\", "\t", "\n", "\r", "\\.", "\\N", "\x01", "\x0b", "\x7f", "'", '"']

        def text(n):
            out = []
            for _ in range(n):
                if rnd.random() < 0.3:
                    out.append(rnd.choice(special))
                else:
                    cp = rnd.randrange(1, 0x110000)
                    while 0xD800 <= cp <= 0xDFFF:
                        cp = rnd.randrange(1, 0x110000)
                    out.append(chr(cp))
            return "".join(out)

        rows = []
        for i in range(300):
            rows.append(makeRow(i, id=text(rnd.randint(1, 60)), body=text(rnd.randint(0, 200)),
                                topic=text(5), thread=text(5), channel=text(3),
                                data={text(4): [text(10), {text(3): text(8)}]},
                                **{"from": text(8), "to": text(8)}))
        rows = list({r[0]: r for r in rows}.values())
        result = yield self.inserter.insert(WS, DAEMON, rows)
        self.assertEqual(result, (len(rows), 0))
        stored = {r[2]: r for r in self.rows()}
        for row in rows:
            got = stored[row[0]]
            self.assertEqual(got[2:10], row[:8])
            self.assertEqual(got[12], json.loads(row[10]))

    @defer.inlineCallbacks
    def test_fifty_thousand(self):
        """
        A batch of 50,000 rows, a fifth of them repeats of ids already in the
        batch, is inserted exactly with the right counts.
        """
        rows = [makeRow(i % 40000) for i in range(50000)]
        result = yield self.inserter.insert(WS, DAEMON, rows)
        self.assertEqual(result, (40000, 10000))
        self.assertEqual(self.count(), 40000)


class MultiRowInserterTests(_StrategyMixin, unittest.TestCase):
    """
    L{MultiRowInserter}, with a chunk size that does not divide the batches.
    """

    def make_inserter(self):
        return MultiRowInserter(self.tx_pool(), chunk_size=97)

    @defer.inlineCallbacks
    def test_one_transaction(self):
        """
        When a later chunk fails, the earlier chunks of the same batch are
        rolled back too: nothing of the batch stays behind.
        """
        rows = [makeRow(i) for i in range(300)]
        bad = list(rows[250])
        bad[12] = 10 ** 30  # message_ts out of bigint range: the chunk fails
        rows[250] = tuple(bad)
        yield self.assertFailure(self.inserter.insert(WS, DAEMON, rows), Exception)
        self.assertEqual(self.count(), 0)


class UnnestInserterTests(_StrategyMixin, unittest.TestCase):
    """
    L{UnnestInserter}.
    """

    def make_inserter(self):
        return UnnestInserter(self.tx_pool())


class CopyInserterTests(_StrategyMixin, unittest.TestCase):
    """
    L{CopyInserter}, with a small encoding chunk so streaming is exercised.
    """

    def make_inserter(self):
        inserter = CopyInserter(self.thread_pool(), chunk_rows=128)
        inserter.read_size = 4096
        return inserter

    @defer.inlineCallbacks
    def test_one_transaction(self):
        """
        When the batch fails part-way (a value COPY refuses), nothing of it
        stays behind and the staging table is gone (the next batch on the
        same connection works).
        """
        rows = [makeRow(i) for i in range(300)]
        bad = list(rows[250])
        bad[12] = 10 ** 30
        rows[250] = tuple(bad)
        yield self.assertFailure(self.inserter.insert(WS, DAEMON, rows), Exception)
        self.assertEqual(self.count(), 0)
        result = yield self.inserter.insert(WS, DAEMON, [makeRow(i) for i in range(5)])
        self.assertEqual(result, (5, 0))


class ConcurrentBatchesTests(unittest.TestCase):
    """
    Batches inserted at the same time on different connections.
    """

    def setUp(self):
        self.dsn = testDatabaseDSN(self)
        truncate(self.dsn)
        self.tx_pool = db.TxPostgresPool(self.dsn, 4, reactor)
        self.addCleanup(self.tx_pool.close)
        self.thread_pool = db.thread_pool(self.dsn, 4, reactor)
        self.addCleanup(self.thread_pool.close)
        return self.tx_pool.start()

    @defer.inlineCallbacks
    def test_overlapping_batches_do_not_deadlock(self):
        """
        Overlapping batches sent in opposite orders at the same time all
        succeed (rows are inserted in one canonical order, so two
        transactions never wait on each other's locks in a cycle), and
        every id is counted exactly once as synced.
        """
        strategies = [UnnestInserter(self.tx_pool), MultiRowInserter(self.tx_pool, 50),
                      CopyInserter(self.thread_pool)]
        for round_ in range(3):
            truncate(self.dsn)
            forward = [makeRow(i) for i in range(600)]
            backward = list(reversed(forward))
            ds = []
            for k in range(4):
                inserter = strategies[(round_ + k) % len(strategies)]
                ds.append(inserter.insert(WS, DAEMON, forward if k % 2 else backward))
            results = yield defer.gatherResults(ds, consumeErrors=True)
            self.assertEqual(sum(r[0] for r in results), 600)
            self.assertEqual(sum(r[1] for r in results), 1800)
