# -*- test-case-name: tests.test_sync_live -*-
"""
One live batch's trip: sent until it is confirmed, spilled or
dead-lettered, then the cursor moves past it.

What each outcome of a POST leads to is L{relay.sync.decide.decide}, the one
decision table (spill files use the same table, in L{relay.sync.replay});
this module only carries the actions out: retries with jittered backoff
and C{Retry-After}, a 413 split into halves that go first, a message a 400
names dead-lettered and the rest sent again, a spill file when retries run
out, and a batch held in memory (nothing dropped) when it can be neither
sent nor spilled.
"""

from twisted.logger import Logger

from relay.sync import poster as outcomes
from relay.sync.decide import (CONFIRM, DEAD_LETTER, DROP_NAMED, LIVE, RETRY, SPLIT, STOP, decide,
                               named_index)
from relay.sync.stats import BACKOFF, HOLDING


class LiveBatches:
    """
    Sends the live batches of one pipeline.
    """

    log = Logger()

    def __init__(self, pipeline):
        """
        @param pipeline: the L{relay.sync.service.SyncService}; this uses its
            C{post}, C{sleep}, C{dead_letter}, C{unauthorized}, C{advance},
            C{queue}, C{replay}, C{counters}, C{backoff}, C{retries},
            C{spill_retry_interval} and sets its C{state}.
        """
        self.pipeline = pipeline

    async def send(self, items):
        """
        Send one batch of live messages until it is confirmed, spilled or
        dead-lettered, then move the cursor past it.  What each outcome
        leads to is L{relay.sync.decide.decide}.
        """
        p = self.pipeline
        top = items[-1].seq
        held = sum(i.size for i in items)
        attempt = 0
        if items[0].json is None:
            await p.dead_letter(items[0], items[0].error)
            items = []
        while items:
            outcome = await p.post(items)
            bad = named_index(items, outcome)
            action = decide(outcome.kind, LIVE, single=len(items) == 1, named=bad is not None,
                            stale=False, retries_left=attempt < p.retries)
            if action == CONFIRM:
                p.counters.confirmed(len(items), outcome)
                break
            if action == DROP_NAMED:
                await p.dead_letter(items[bad], outcome)
                items = items[:bad] + items[bad + 1:]
                continue
            if action == DEAD_LETTER:
                await p.dead_letter(items[0], outcome)
                break
            if action == SPLIT:
                self.log.info("Ingest refused {n} messages as too large (413); splitting",
                              n=len(items))
                p.queue.split(items)
                p.queue.release(held - sum(i.size for i in items))
                return
            if action == STOP:
                p.unauthorized(outcome)
                return
            if action == RETRY:
                delay = p.backoff.delay(attempt, outcome.retry_after)
                attempt += 1
                p.state = BACKOFF
                self.log.warn("Sync POST failed ({reason}); retry {attempt}/{retries} in {delay:.2f}s",
                              reason=outcome.reason, attempt=attempt, retries=p.retries, delay=delay)
                await p.sleep(delay)
                continue
            # SPILL_BATCH
            if outcome.kind in (outcomes.BAD_MESSAGE, outcomes.BAD_BATCH):
                self.log.critical(
                    "Ingest refused a whole batch of {n} messages ({reason}): a bug in the sync "
                    "encoder; the batch is kept in a spill file", n=len(items), reason=outcome.reason)
            if p.replay.spill_batch(items):
                break
            # Neither sent nor spilled: keep it and try again later.
            p.state = HOLDING
            delay = min(p.spill_retry_interval, p.backoff.delay(attempt, outcome.retry_after))
            attempt += 1
            self.log.warn("Sync batch of {n} messages held in memory (spill not possible); "
                          "retry in {delay:.2f}s", n=len(items), delay=delay)
            await p.sleep(delay)
        p.queue.release(held)
        p.advance(top)
