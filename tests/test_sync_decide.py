# -*- test-case-name: tests.test_sync_decide -*-
"""
Tests for L{relay.sync.decide}: the decision table for sync outcomes, over
every combination of its inputs.
"""

import itertools

from twisted.trial import unittest

from relay.sync import decide as D
from relay.sync import poster as P
from relay.sync.wire import encode_message
from tests.support.sync import make_row

BOOLS = (False, True)


def expected(kind, origin, single, named, stale, retries_left):
    """
    The table written out a second way: one row per (kind, origin).
    """
    live = origin == D.LIVE
    transient = D.RETRY if retries_left else D.SPILL_BATCH
    whole = D.SPILL_BATCH if live else D.REJECT_FILE
    rows = {
        P.OK: D.CONFIRM,
        P.BAD_MESSAGE: D.DROP_NAMED if named else whole,
        P.BAD_BATCH: whole,
        P.TOO_LARGE: D.DEAD_LETTER if single else D.SPLIT,
        P.UNAUTHORIZED: D.STOP,
        P.WRONG_WORKSPACE: D.REJECT_FILE if (not live and stale) else D.STOP,
        P.RETRY: transient if live else D.PAUSE,
        P.MISMATCH: transient if live else D.PAUSE,
        P.REDIRECT: transient if live else D.PAUSE,
    }
    return rows[kind]


class DecideTests(unittest.TestCase):
    """
    Every input combination gets the action of the table.
    """

    def combinations(self):
        return itertools.product(P.KINDS, (D.LIVE, D.SPILL), BOOLS, BOOLS, BOOLS, BOOLS)

    def test_every_combination(self):
        """
        All 9 kinds x 2 origins x 16 flag combinations give the expected
        action, and only actions allowed for their origin (a spill file is
        never "retried" or "spilled"; a live batch never "rejected").
        """
        seen = 0
        for combo in self.combinations():
            action = D.decide(*combo)
            self.assertEqual(action, expected(*combo), combo)
            self.assertIn(action, D.ACTIONS[combo[1]], combo)
            seen += 1
        self.assertEqual(seen, len(P.KINDS) * 2 * 16)

    def test_every_action_is_reachable(self):
        """
        Each action of each origin is the answer to some input (no dead
        entries in the table).
        """
        for origin in (D.LIVE, D.SPILL):
            got = {D.decide(k, o, *flags) for (k, o, *flags) in self.combinations()
                   if o == origin}
            self.assertEqual(got, D.ACTIONS[origin], origin)

    def test_nothing_is_dropped(self):
        """
        No input leads to an action outside the ones that confirm, keep,
        dead-letter (with a reason) or stop with the batch behind the cursor.
        """
        keep = {D.CONFIRM, D.DROP_NAMED, D.SPLIT, D.DEAD_LETTER, D.STOP, D.RETRY,
                D.SPILL_BATCH, D.PAUSE, D.REJECT_FILE}
        for combo in self.combinations():
            self.assertIn(D.decide(*combo), keep)

    def test_credentials_stop_whatever_the_origin(self):
        """
        A 401 stops sync from a live batch and from any spill file, stale or
        not: the file does not carry the key.
        """
        for origin, stale in itertools.product((D.LIVE, D.SPILL), BOOLS):
            self.assertEqual(D.decide(P.UNAUTHORIZED, origin, False, False, stale, True), D.STOP)

    def test_stale_file_is_set_aside(self):
        """
        A 403 about the workspace sets aside a spill file written for another
        workspace, but stops sync for a file (or live batch) of ours.
        """
        self.assertEqual(D.decide(P.WRONG_WORKSPACE, D.SPILL, False, False, True, False),
                         D.REJECT_FILE)
        self.assertEqual(D.decide(P.WRONG_WORKSPACE, D.SPILL, False, False, False, False),
                         D.STOP)
        self.assertEqual(D.decide(P.WRONG_WORKSPACE, D.LIVE, False, False, True, True), D.STOP)

    def test_unknown_inputs_refused(self):
        """
        An unknown kind or origin raises instead of falling into a default.
        """
        self.assertRaises(ValueError, D.decide, "teapot", D.LIVE, False, False, False, True)
        self.assertRaises(ValueError, D.decide, P.OK, "elsewhere", False, False, False, True)


class NamedIndexTests(unittest.TestCase):
    """
    L{D.named_index}: which message of a batch a 400 names, the C{named}
    fact L{D.decide} takes.
    """

    def setUp(self):
        self.items = [encode_message(make_row(seq)) for seq in (1, 2, 3)]

    def index(self, kind=P.BAD_MESSAGE, **data):
        return D.named_index(self.items, P.Outcome(kind, data=data))

    def test_by_index_or_id(self):
        """
        A message is named by its index, by its id, or by both when they
        agree.
        """
        self.assertEqual(self.index(index=1), 1)
        self.assertEqual(self.index(id="msg-00000003"), 2)
        self.assertEqual(self.index(index=0, id="msg-00000001"), 0)

    def test_id_wins_over_a_wrong_index(self):
        """
        When index and id disagree, the id decides (the index may count
        from another batch).
        """
        self.assertEqual(self.index(index=0, id="msg-00000003"), 2)

    def test_values_of_every_wrong_shape_name_nothing(self):
        """
        An index out of range, negative, a bool, a string or a float, an id
        not in the batch or not a string, and any kind but a 400 naming a
        message name nothing.
        """
        for data in ({}, {"index": 3}, {"index": -1}, {"index": True}, {"index": "1"},
                     {"index": 1.0}, {"id": "msg-00000009"}, {"id": 2}, {"index": None},
                     {"index": 1, "id": "msg-00000009"}):
            self.assertIsNone(self.index(**data), data)
        for kind in set(P.KINDS) - {P.BAD_MESSAGE}:
            self.assertIsNone(self.index(kind, index=1), kind)
