# -*- test-case-name: tests.test_sync_replay -*-
"""
The sync pipeline's spill side: a batch that could not be sent goes to a
spill file (L{SpillReplay.spill_batch}), and spill files are sent again,
oldest first, one per turn of the pipeline (L{SpillReplay.replay_one}).

A 2xx deletes the file; a 400 naming a message dead-letters it and
rewrites the file without it; a 413 rewrites the file as two halves; a
file refused as a whole (unreadable, a 400 for all of it, a 403 for a
workspace no longer configured) is moved into C{rejected/} and the next
file goes on; a 401 stops sync; anything else pauses replay until the next
pass.  What each outcome leads to is L{relay.sync.decide.decide}, the one
decision table; this module only carries the actions out.
"""

from twisted.logger import Logger

from relay.sync.decide import (CONFIRM, DEAD_LETTER, DROP_NAMED, REJECT_FILE, SPILL, SPLIT, STOP,
                               decide, named_index)
from relay.sync.spill import UnreadableSpill


class SpillReplay:
    """
    Writes and replays the spill files of one pipeline.

    @ivar due: whether a replay pass may start (set by the pipeline's
        timer, cleared when a pass ends early or a batch was just spilled).
    """

    log = Logger()

    def __init__(self, pipeline, spill):
        """
        @param pipeline: the L{relay.sync.service.SyncService}; this uses its
            C{post}, C{dead_letter}, C{unauthorized}, C{counters},
            C{daemon_id} and C{workspace_id}.
        @param spill: a L{relay.sync.spill.SpillDir}.
        """
        self.pipeline = pipeline
        self.spill = spill
        self.due = True

    def spill_batch(self, items):
        """
        Write C{items} to a new spill file.

        @return: whether it was written (False: the directory is full or
            the disk refused; the caller keeps the batch).
        """
        counters = self.pipeline.counters
        if not self.spill.has_room():
            self.log.warn("Spill directory {path} is full ({bytes} bytes); rows wait in the store",
                          path=self.spill.path, bytes=self.spill.bytes)
            return False
        try:
            name = self.spill.write(self.pipeline.daemon_id, self.pipeline.workspace_id, items)
        except OSError as e:
            counters.last_error = "spill: {}".format(e)
            self.log.error("Could not write a spill file: {error}", error=str(e))
            return False
        counters.spills_written += 1
        # The ingest just failed us: replay at the next pass, not now.
        self.due = False
        self.log.warn("Spilled {n} messages (seq {first}..{last}) to {name}",
                      n=len(items), first=items[0].seq, last=items[-1].seq, name=name)
        return True

    async def replay_one(self):
        """
        Send the oldest spill file once.  A 2xx deletes it; a file refused
        as a whole is moved aside (and the next one goes on); any other
        failure ends this pass until the next tick.  What each outcome
        leads to is L{relay.sync.decide.decide}.
        """
        pipeline = self.pipeline
        name = self.spill.names()[0]
        try:
            daemon_id, workspace_id, items = self.spill.read(name)
        except UnreadableSpill as e:
            self.rejected_file(name, "unreadable: {}".format(e))
            return
        stale = (bool(workspace_id)
                 and str(workspace_id).lower() != str(pipeline.workspace_id).lower())
        while items:
            outcome = await pipeline.post(items, daemon_id, workspace_id)
            bad = named_index(items, outcome)
            action = decide(outcome.kind, SPILL, single=len(items) == 1, named=bad is not None,
                            stale=stale, retries_left=False)
            if action == CONFIRM:
                pipeline.counters.confirmed(len(items), outcome)
                break
            if action == DROP_NAMED:
                await pipeline.dead_letter(items[bad], outcome)
                items = items[:bad] + items[bad + 1:]
                if not items:
                    break
                self.rewrite(name, daemon_id, workspace_id, [items])
                return
            if action == SPLIT:
                half = len(items) // 2
                self.rewrite(name, daemon_id, workspace_id, [items[:half], items[half:]])
                return
            if action == DEAD_LETTER:
                await pipeline.dead_letter(items[0], outcome)
                break
            if action == STOP:
                pipeline.unauthorized(outcome)
                return
            if action == REJECT_FILE:
                self.spill.reject(name)
                self.rejected_file(name, outcome.reason)
                return
            # PAUSE
            self.due = False
            self.log.warn("Spill replay paused until the next pass: {reason}", reason=outcome.reason)
            return
        self.spill.remove(name)
        self.log.info("Re-sent spill file {name} ({n} messages)", name=name, n=len(items))
        pipeline.advance(pipeline.cursor)  # the last file gone: all is confirmed

    def rejected_file(self, name, reason):
        """
        Report spill file C{name}, refused as a whole and already moved
        into C{rejected/}; the replay goes on with the next file.
        """
        counters = self.pipeline.counters
        counters.last_rejected = "{}: {}".format(name, reason)
        counters.last_error = "spill file rejected: {}".format(counters.last_rejected)
        self.log.critical(
            "Spill file {name} refused as a whole ({reason}); kept in {path}, its messages are "
            "NOT synced; the next file goes on", name=name, reason=reason,
            path=self.spill.rejected_path)

    def rewrite(self, name, daemon_id, workspace_id, parts):
        """
        Replace spill file C{name} by one file per list in C{parts}; the
        original goes only once all the new ones are on disk.
        """
        try:
            for part, items in enumerate(parts):
                self.spill.write(daemon_id, workspace_id, items, replacing=name, part=part)
        except OSError as e:
            self.due = False
            self.pipeline.counters.last_error = "spill: {}".format(e)
            self.log.error("Could not rewrite spill file {name}: {error}", name=name, error=str(e))
            return
        self.spill.remove(name)
