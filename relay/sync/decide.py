# -*- test-case-name: tests.test_sync_decide -*-
"""
What the sync service does with the outcome of one POST: one pure function,
L{decide}, used for live batches and for spill files alike.

The inputs are the outcome's kind (L{relay.sync.poster.KINDS}), where the
batch came from (L{LIVE} or L{SPILL}) and three facts about it; the output
is one action.  The table, in words:

  - OK: confirm.
  - 400 naming a message of the batch: dead-letter that message and send
    the rest; a 400 naming none is a refusal of the whole batch.
  - 400 for the whole batch: a live batch is spilled (kept; it is our
    encoder's bug); a spill file is moved aside (L{REJECT_FILE}), so the
    files behind it go on.
  - 413: split, or dead-letter a single message.
  - 401, or a 403 not about the workspace: the credentials are wrong; stop.
  - 403 "not the key's workspace": stop, unless it is a spill file written
    for another workspace than the one configured now (a stale file, the
    key was changed since): that file is moved aside.
  - 5xx, 429, no answer, a redirect, a 2xx with counts that do not add
    up: a live batch is retried while retries are left, then spilled; a
    spill file is kept and tried again at the next pass (L{PAUSE}).

No action drops a batch: every one confirms, keeps (retry, spill, pause,
reject-file keep it on disk), dead-letters with a reason, or stops with
everything behind the cursor.
"""

from relay.sync import poster as outcomes

#: Where a batch came from.
LIVE = "live"
SPILL = "spill"

#: Actions.
CONFIRM = "confirm"
DROP_NAMED = "drop_named"
SPLIT = "split"
DEAD_LETTER = "dead_letter"
STOP = "stop"
RETRY = "retry"
SPILL_BATCH = "spill"
PAUSE = "pause"
REJECT_FILE = "reject_file"

#: The actions each origin can be given.
ACTIONS = {
    LIVE: frozenset([CONFIRM, DROP_NAMED, SPLIT, DEAD_LETTER, STOP, RETRY, SPILL_BATCH]),
    SPILL: frozenset([CONFIRM, DROP_NAMED, SPLIT, DEAD_LETTER, STOP, PAUSE, REJECT_FILE]),
}

def decide(kind, origin, single, named, stale, retries_left):
    """
    @param kind: the L{relay.sync.poster.Outcome} kind.
    @param origin: L{LIVE} or L{SPILL}.
    @param single: whether the batch holds one message.
    @param named: whether a 400 named a message that is in the batch.
    @param stale: whether the batch is a spill file written for another
        workspace than the configured one.
    @param retries_left: whether a live batch may be retried again.
    @return: one of L{ACTIONS}C{[origin]}.
    @raise ValueError: for an unknown kind or origin.
    """
    if origin not in ACTIONS or kind not in outcomes.KINDS:
        raise ValueError("no decision for {!r} from {!r}".format(kind, origin))
    if kind == outcomes.OK:
        return CONFIRM
    if kind == outcomes.BAD_MESSAGE and named:
        return DROP_NAMED
    if kind in (outcomes.BAD_MESSAGE, outcomes.BAD_BATCH):
        return SPILL_BATCH if origin == LIVE else REJECT_FILE
    if kind == outcomes.TOO_LARGE:
        return DEAD_LETTER if single else SPLIT
    if kind == outcomes.UNAUTHORIZED:
        return STOP
    if kind == outcomes.WRONG_WORKSPACE:
        return REJECT_FILE if origin == SPILL and stale else STOP
    # RETRY, MISMATCH, REDIRECT: nothing wrong with the batch itself.
    if origin == SPILL:
        return PAUSE
    return RETRY if retries_left else SPILL_BATCH


def named_index(items, outcome):
    """
    The index in C{items} of the message a 400 names (the C{named} fact
    L{decide} takes), or None.

    @param items: the batch, a list of L{relay.sync.wire.Item}.
    @param outcome: its L{relay.sync.poster.Outcome}; a C{BAD_MESSAGE}
        names a message by C{index} and/or C{id}, and an index whose item
        has another id than the one named does not count.
    """
    if outcome.kind != outcomes.BAD_MESSAGE:
        return None
    index = outcome.data.get("index")
    mid = outcome.data.get("id")
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(items):
        if mid is None or items[index].id == mid:
            return index
    if isinstance(mid, str):
        for i, item in enumerate(items):
            if item.id == mid:
                return i
    return None
