# -*- test-case-name: tests.test_sync_cursor -*-
"""
The sync cursor: the highest seq the pipeline is done with, kept in the
store's meta under C{sync_cursor}.

The cursor moves to a batch's last seq once the batch is confirmed, spilled
or dead-lettered; batches finish in seq order, so every seq at or below it
is safe.  L{CursorWriter} writes it behind the pipeline, at most one write
in flight: a crash before a write lands only means those messages are sent
again, and the ingest de-duplicates them.
"""

from twisted.logger import Logger

CURSOR_KEY = "sync_cursor"

# The highest seq at or below which every message is confirmed by the
# ingest (or dead-lettered): the cursor, except while spill files wait
# (spilled is not confirmed).  Store retention (relay.retention) deletes
# nothing above it.
CONFIRMED_KEY = "sync_confirmed"


class CursorWriter:
    """
    The cursor in memory (L{value}) and its write-behind to the store.

    @ivar value: the cursor.
    @ivar saved: the value the store holds, as far as we know.
    @ivar saving: the Deferred of the write in flight, or None.
    @ivar active: while true, a write that lands behind L{value} is
        followed by the next one; L{flush} writes the last one on stop.
    """

    log = Logger()

    def __init__(self, source, on_error, key=CURSOR_KEY):
        """
        @param source: an L{relay.interfaces.ISyncSource}.
        @param on_error: called with a one-line reason when a write fails.
        @param key: the meta key (L{CURSOR_KEY}, or L{CONFIRMED_KEY}).
        """
        self.key = key
        self.source = source
        self.on_error = on_error
        self.value = 0
        self.saved = 0
        self.saving = None
        self.active = True

    async def load(self):
        """
        Read the cursor from the store.

        @return: (a coroutine of) its value, 0 when there is none.
        """
        stored = await self.source.get_meta(self.key)
        self.value = self.saved = int(stored or 0)
        return self.value

    def advance(self, seq):
        """
        Move the cursor to C{seq} if that is forward, and write it.
        """
        if seq > self.value:
            self.value = seq
            self.save()

    def save(self):
        """
        Write the cursor unless a write is already in flight (its end
        starts the next one).
        """
        if self.saving is not None:
            return
        value = self.value
        self.saving = self.source.set_meta(self.key, str(value))

        def saved(_):
            self.saved = value

        def failed(failure):
            self.on_error("cursor write: {}".format(failure.getErrorMessage()))
            self.log.failure("Could not write the sync cursor (messages may be sent twice)", failure)

        def done(_):
            self.saving = None
            if self.active and self.saved != self.value:
                self.save()

        self.saving.addCallbacks(saved, failed)
        self.saving.addBoth(done)

    async def flush(self):
        """
        Stop writing behind: wait for the write in flight, then write the
        cursor once more if the store is behind it.
        """
        self.active = False
        while self.saving is not None:
            await self.saving
        if self.saved != self.value:
            self.save()
            if self.saving is not None:
                await self.saving


class SyncMarks:
    """
    The two marks the pipeline keeps in the store's meta: the cursor (done
    with: confirmed, spilled or dead-lettered) and the confirmed mark (the
    ingest has it), which follows the cursor only while no spill file waits
    and C{rejected/} is empty: a spilled batch is in a file, not confirmed,
    and store retention deletes nothing above the confirmed mark.

    @param spill: the L{relay.sync.spill.SpillDir} whose C{files} and
        C{rejected} hold the confirmed mark back.
    """

    def __init__(self, source, on_error, spill):
        self.spill = spill
        self.cursor = CursorWriter(source, on_error)
        self.confirmed = CursorWriter(source, on_error, key=CONFIRMED_KEY)

    async def load(self):
        """
        Read both marks; returns (a coroutine of) the cursor.
        """
        await self.confirmed.load()
        cursor = await self.cursor.load()
        self.advance(cursor)
        return cursor

    def advance(self, seq):
        """
        Move the cursor to C{seq}, and the confirmed mark with it when no
        spill file waits (the replay calls this again once the last file
        is re-sent, so the confirmed mark catches up).
        """
        self.cursor.advance(seq)
        if not (self.spill.files or self.spill.rejected):
            self.confirmed.advance(self.cursor.value)

    def stop(self):
        """
        Stop writing behind (L{flush} writes the last values).
        """
        self.cursor.active = False
        self.confirmed.active = False

    async def flush(self):
        await self.cursor.flush()
        await self.confirmed.flush()
