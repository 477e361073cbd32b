# -*- test-case-name: tests.test_ingest_collisions -*-
"""
Tests for L{relay.ingest.collisions}, the I/O-free part: which skipped rows
are duplicates and which are collisions, and the statements asked for.
(The strategies' tests in tests.e2e.test_ingest_store run it against the real
PostgreSQL.)
"""

from twisted.trial import unittest

from relay.ingest import collisions as C
from tests.support.ingest import makeRow

WS = "6f1d1c2e-8d8e-4a53-9a4b-0d5b3f3d6a01"
DAEMON = "11111111-2222-4333-8444-555555555555"


def drive(gen, answers):
    """
    Run C{gen}, answering its statements from C{answers(sql, params)}.
    """
    asked = []
    try:
        sql, params = next(gen)
        while True:
            asked.append((sql, params))
            sql, params = gen.send(answers(sql, params))
    except StopIteration as stop:
        return stop.value, asked


def stored(rows):
    """
    Answers for the SELECT as PostgreSQL gives them back.
    """
    def answer(sql, params):
        if sql.startswith("SELECT"):
            return [r for r in rows if r[0] in params[1]]
        return [(i,) for i in params[2]]
    return answer


class ResolveTests(unittest.TestCase):
    """
    L{C.resolve} on every kind of skipped row.
    """

    def test_all_inserted(self):
        """
        When every row was inserted nothing more is asked.
        """
        rows = [makeRow(i) for i in range(3)]
        result, asked = drive(C.resolve(WS, DAEMON, rows, ["m-0", "m-1", "m-2"]), stored([]))
        self.assertEqual((result, asked), ((3, 0, 0), []))

    def test_duplicate_and_collision(self):
        """
        A skipped row equal to the stored one is a duplicate; one that
        differs is inserted under its disambiguated id with collision_of.
        """
        old = [makeRow(1), makeRow(2)]
        rows = [makeRow(1), makeRow(2, body="other"), makeRow(3)]
        result, asked = drive(C.resolve(WS, DAEMON, rows, ["m-3"]), stored(old))
        self.assertEqual(result, (2, 1, 1))
        sql, params = asked[1]
        self.assertTrue(sql.startswith("INSERT"))
        self.assertEqual(params[2], [C.disambiguated(rows[1])])
        self.assertEqual(params[3], ["m-2"])

    def test_collision_sent_again(self):
        """
        A collision already stored under its disambiguated id is a duplicate.
        """
        row = makeRow(2, body="other")
        again = (C.disambiguated(row),) + row[1:]
        result, asked = drive(C.resolve(WS, DAEMON, [row], []), stored([makeRow(2), again]))
        self.assertEqual(result, (0, 1, 0))
        self.assertEqual(len(asked), 1)

    def test_same_collision_twice_in_a_batch(self):
        """
        Two equal colliding rows in one batch: one collision, one duplicate.
        """
        row = makeRow(2, body="other")
        result, _ = drive(C.resolve(WS, DAEMON, [row, row], []), stored([makeRow(2)]))
        self.assertEqual(result, (1, 1, 1))

    def test_repeat_of_an_inserted_id(self):
        """
        A repeat of an id the INSERT just stored is compared with it.
        """
        rows = [makeRow(1), makeRow(1), makeRow(1, body="x")]
        result, _ = drive(C.resolve(WS, DAEMON, rows, ["m-1"]), stored([makeRow(1)]))
        self.assertEqual(result, (2, 1, 1))

    def test_lost_race_is_a_duplicate(self):
        """
        A collision row that another transaction stored first (the INSERT
        returns nothing for it) counts as a duplicate: the sums still add up.
        """
        row = makeRow(2, body="other")

        def answer(sql, params):
            return [makeRow(2)] if sql.startswith("SELECT") else []

        result, _ = drive(C.resolve(WS, DAEMON, [row], []), answer)
        self.assertEqual(result, (0, 1, 0))

    def test_disambiguated_id(self):
        """
        The disambiguated id is the id, "~" and 16 hex digits of the
        content's hash: the same for the same content, other for other, and
        it fits the widened column.
        """
        a = C.disambiguated(makeRow(1))
        self.assertEqual(a, C.disambiguated(makeRow(1)))
        self.assertNotEqual(a, C.disambiguated(makeRow(1, body="x")))
        self.assertRegex(a, r"^m-1~[0-9a-f]{16}$")
        self.assertLessEqual(len(C.disambiguated(makeRow(1, id="x" * 255))), 300)
