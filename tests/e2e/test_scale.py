# -*- test-case-name: tests.e2e.test_scale -*-
"""
Scale runs through the real router and store (issue 13 point 7): 100,000 distinct names, the state in memory stays bounded.  Apart from the unit tests for their run time.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.frames import send
from tests.support.protocol import Relay


class BoundedStateTests(unittest.TestCase):
    """
    The router keeps no per-name state for names that are not connected
    (issue 13 point 7).
    """

    @defer.inlineCallbacks
    def test_100000_distinct_recipients(self):
        """
        SENDs to 100,000 distinct offline names, each with its own id: the
        dedupe window stays within its bounds, the store's stream state
        within its cache, the router holds nothing per name; a name that
        was pushed out gets the next seq on its stream when it comes back.
        """
        from relay.frames import frame
        self.relay = Relay(self, dedupe_window=20000, dedupe_per_sender=50000)
        self.relay.store.stream_cache = 2000
        alice = yield self.relay.agent("alice")
        proto = alice.proto
        for start in range(0, 100000, 1000):
            proto.dataReceived(b"".join(frame(send("name-%06d" % i, "x"))
                                        for i in range(start, start + 1000)))
            # Let the writer keep up (a store that is behind pauses the
            # reader, and frames fed meanwhile only pile up in its buffer).
            yield self.relay.flush()
        router = self.relay.router
        self.assertEqual(router.counters["accepted"], 100000)
        self.assertEqual(len(router.dedupe), 20000)
        self.assertLessEqual(self.relay.store.stream_state_size(), 2000)
        status = router.status()["store"]
        self.assertEqual((status["dedupe_entries"], status["dedupe_senders"]), (20000, 1))
        self.assertLessEqual(status["streams_in_memory"], 2000)
        self.assertFalse(hasattr(router, "last_for"))
        self.assertFalse(hasattr(router, "streams"))
        alice.feed(send("name-000000", "again"))
        yield self.relay.flush()
        back = yield self.relay.agent("name-000000")
        self.assertEqual([d["delivery"]["seq"] for d in back.of_type("DELIVER")], [1, 2])
