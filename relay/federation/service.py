# -*- test-case-name: tests.test_federation_service -*-
"""
L{FederationService}: this daemon's part in the workspace.

Three loops, each with at most one request in flight:

  - presence: which agents said HELLO here and which left, in order; the
    answer gives each HELLO its directory version (its claim);
  - hand-over: deliveries stored here as C{remote} go to the ingest in
    pages; each is marked C{handed} once the ingest has answered;
  - the long-poll: the ingest holds it until there is work for this daemon
    (woken by NOTIFY) or a timeout; the answer brings messages for the
    agents at home here and directory changes.  The page is committed in
    the store before the next poll confirms it.

The router asks L{home_elsewhere} when a SEND names an agent not
connected here.  A directory change that makes another daemon a name's
home sends that name's open deliveries after it (C{rehome}), and closes
its connection here with the fatal ERROR a newer HELLO gives when that
HELLO is newer than this one's claim.
"""

import random

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from relay.federation.client import Refused, Unreachable
from relay.federation.directory import Directory
from relay.federation.inbound import Inbound
from relay.federation.storage import FederationStorage, encode_item
from relay.sync.backoff import Backoff

PAGE = 500
MAX_EVENTS = 1000


class FederationService(service.Service):
    """
    @param clock: provides C{seconds} and C{callLater}.
    @param router: the L{relay.router.Router}; this service becomes its
        C{federation}.
    @param store: the L{relay.store.Store}.
    @param client: a L{relay.federation.client.FederationClient}.
    @param daemon_id: a callable returning a Deferred of this daemon's id
        (the sync service's L{known_daemon_id}).
    @param wait: seconds the ingest may hold a poll.
    """

    log = Logger()
    name = "federation"

    def __init__(self, clock, router, store, client, daemon_id, workspace_id, wait=20.0,
                 page=PAGE, retry_delay=0.5, timeout=30.0):
        self.clock = clock
        self.router = router
        self.store = store
        self.client = client
        self._daemon_id = daemon_id
        self.workspace_id = workspace_id
        self.wait = wait
        self.page = page
        self.timeout = timeout
        self.backoff = Backoff(retry_delay, maximum=10.0, rng=random.Random())
        self.storage = FederationStorage(store, clock)
        self.inbound = Inbound(router, self.storage)
        self.me = None
        self.directory = None
        self.state = "starting"
        self.counters = {"handed_over": 0, "handover_duplicates": 0, "received": 0,
                         "presence_sent": 0, "evicted": 0, "polls": 0, "dead_lettered": 0}
        self.waiting = 0
        self.inbound_cursor = 0
        self._events = []
        self._presence_busy = False
        self._handover_busy = False
        self._handover_again = False
        self._pending_evictions = {}
        self._poll = None
        self._stopping = False
        self._timers = set()
        router.federation = self

    # -- lifecycle -----------------------------------------------------

    def startService(self):
        service.Service.startService(self)
        d = defer.ensureDeferred(self._start())
        d.addErrback(lambda f: self.log.failure("federation could not start", f))

    async def _start(self):
        self.me = await self._daemon_id()
        self.directory = Directory(self.me)
        self.log.info("federation: daemon {me} of workspace {ws} through {url}",
                      me=self.me, ws=self.workspace_id, url=self.client.url)
        if not self.running:
            return
        # Agents that said HELLO before the id was known.
        self._pump_presence()
        self.handover_ready()
        self._poll_loop()

    def stopService(self):
        service.Service.stopService(self)
        self._stopping = True
        self.state = "stopped"
        for call in list(self._timers):
            if call.active():
                call.cancel()
        self._timers.clear()
        if self._poll is not None:
            self._poll.cancel()
        return self.client.close()

    def _later(self, delay, fn, *args):
        call = None

        def run():
            self._timers.discard(call)
            if not self._stopping:
                fn(*args)
        call = self.clock.callLater(delay, run)
        self._timers.add(call)
        return call

    # -- the router's questions and news -------------------------------

    def home_elsewhere(self, name):
        return self.directory is not None and self.directory.home_elsewhere(name)

    def online(self, session):
        session.fed_claim = None
        self._events.append(({"name": session.name, "online": True}, session))
        self._pump_presence()

    def offline(self, session):
        self._events.append(({"name": session.name, "online": False}, None))
        self._pump_presence()

    def handover_ready(self, _=None):
        self.waiting += 1
        if self._handover_busy:
            self._handover_again = True
            return
        if self.me is None or self._stopping:
            return
        self._handover_busy = True
        d = defer.ensureDeferred(self._handover())
        d.addErrback(self._handover_failed)

    # -- presence ------------------------------------------------------

    def _pump_presence(self):
        if self._presence_busy or not self._events or self.me is None or self._stopping:
            return
        self._presence_busy = True
        batch = self._events[:MAX_EVENTS]
        d = self.client.post("presence", {"daemon_id": self.me,
                                          "events": [e for e, _ in batch]}, self.timeout)
        d.addCallbacks(self._presence_done, self._presence_failed, (batch,))
        d.addErrback(lambda f: self.log.failure("federation presence", f))

    def _presence_done(self, answer, batch):
        self._presence_busy = False
        del self._events[:len(batch)]
        self.counters["presence_sent"] += len(batch)
        claims = answer.get("claims") if isinstance(answer, dict) else None
        if not isinstance(claims, list) or len(claims) != len(batch):
            self.log.error("federation: presence answer without one claim per event: {a!r}",
                           a=answer)
            claims = [None] * len(batch)
        rows = []
        for (event, session), claim in zip(batch, claims):
            if not isinstance(claim, dict) or not isinstance(claim.get("version"), int):
                continue
            rows.append(dict(claim, name=event["name"]))
            if session is not None and not session.closed:
                session.fed_claim = claim["version"]
        changed = self.directory.apply([r for r in rows if isinstance(r.get("home"), str)])
        self._directory_changed(changed)
        for event, session in batch:
            if session is not None and event["name"] in self._pending_evictions:
                self._check_eviction(session, self._pending_evictions.pop(event["name"]))
        self._pump_presence()

    def _presence_failed(self, failure, batch):
        self._presence_busy = False
        failure.trap(Unreachable, Refused)
        self.log.warn("federation: presence not sent ({why}); retrying",
                      why=failure.getErrorMessage())
        self._later(self.backoff.delay(1), self._pump_presence)

    # -- directory -----------------------------------------------------

    def _directory_changed(self, entries):
        rehomed = False
        for entry in entries:
            session = self.router.sessions.get(entry.name)
            if entry.home == self.me:
                if (entry.online and session is None
                        and not any(e["name"] == entry.name for e, _ in self._events)):
                    # Online here by an earlier run of this daemon: not any more.
                    self.offline_name(entry.name)
                continue
            if session is not None:
                if session.fed_claim is None:
                    self._pending_evictions[entry.name] = entry.version
                    continue
                if not self._check_eviction(session, entry.version):
                    continue
            self.storage.rehome(entry.name)
            rehomed = True
        if rehomed:
            self.store.after_commit(self.handover_ready, None)
            self.store.commit_soon()

    def offline_name(self, name):
        self._events.append(({"name": name, "online": False}, None))
        self._pump_presence()

    def _check_eviction(self, session, version):
        entry = self.directory.entries.get(session.name)
        if (entry is None or entry.home == self.me or session.closed
                or session.fed_claim is None or session.fed_claim >= version):
            return False
        self.counters["evicted"] += 1
        self.router.evict(session, "its newest HELLO is on daemon %s" % (entry.home,))
        self.storage.rehome(session.name)
        self.store.after_commit(self.handover_ready, None)
        self.store.commit_soon()
        return True

    # -- hand-over -----------------------------------------------------

    async def _handover(self):
        attempt = 0
        while not self._stopping:
            self._handover_again = False
            rows = await self.storage.read_remote(self.page)
            if not rows:
                self.waiting = 0
                break
            if len(rows) >= self.page:
                self.waiting = max(self.waiting, len(rows) + 1)
            body = b"".join([b'{"daemon_id":"', self.me.encode(), b'","items":[',
                             b",".join(encode_item(r) for r in rows), b"]}"])
            try:
                answer = await self.client.post("handover", body, self.timeout)
            except Unreachable as e:
                attempt += 1
                self.log.warn("federation: hand-over of {n} deliveries failed ({why}); retrying",
                              n=len(rows), why=str(e))
                await self._sleep(self.backoff.delay(attempt))
                continue
            except Refused as e:
                attempt += 1
                if not self._refused_item(e, rows):
                    await self._sleep(max(5.0, self.backoff.delay(attempt)))
                continue
            attempt = 0
            for row in rows:
                self.storage.handed(row[0], row[1])
            self.counters["handed_over"] += len(rows)
            if isinstance(answer.get("duplicates"), int):
                self.counters["handover_duplicates"] += answer["duplicates"]
            await self.storage.flush()
            # (Counted down, not read back: one query less per page.)
            self.waiting = max(0, self.waiting - len(rows))
        self._handover_busy = False
        if self._handover_again and not self._stopping:
            self.handover_ready()

    def _refused_item(self, e, rows):
        """
        A 400 naming one item: that delivery cannot be handed over (a dead
        letter, its status expired); the rest go again.
        """
        index = (e.body or {}).get("index")
        self.log.error("federation: the ingest refused a hand-over: {why}", why=str(e))
        if e.status != 400 or not isinstance(index, int) or not 0 <= index < len(rows):
            return False
        row = rows[index]
        self.store.add_dead_letter(row[1], row[2], "federation hand-over refused: %s"
                                   % ((e.body or {}).get("error"),))
        self.store.set_status(None, row[0], row[1], "expired", 0, self.router.now_ms())
        self.counters["dead_lettered"] += 1
        return True

    def _handover_failed(self, failure):
        self._handover_busy = False
        self.log.failure("federation hand-over", failure)
        self._later(1.0, self.handover_ready)

    def _sleep(self, seconds):
        d = defer.Deferred()
        self._later(seconds, d.callback, None)
        return d

    # -- the long-poll -------------------------------------------------

    def _poll_loop(self):
        d = defer.ensureDeferred(self._polling())
        d.addErrback(lambda f: None if self._stopping else
                     self.log.failure("federation poll loop", f))

    async def _polling(self):
        confirm = []
        attempt = 0
        while not self._stopping:
            request = {"daemon_id": self.me, "confirm": confirm,
                       "directory_after": self.directory.version,
                       "wait": self.wait, "limit": self.page}
            self._poll = self.client.post("poll", request, self.wait + self.timeout)
            try:
                answer = await self._poll
            except defer.CancelledError:
                return
            except (Unreachable, Refused) as e:
                attempt += 1
                self.state = "unreachable" if isinstance(e, Unreachable) else "refused"
                self.log.warn("federation: poll failed ({why}); retrying", why=str(e))
                await self._sleep(self.backoff.delay(attempt) if isinstance(e, Unreachable)
                                  else max(5.0, self.backoff.delay(attempt)))
                continue
            finally:
                self._poll = None
            attempt = 0
            self.state = "connected"
            self.counters["polls"] += 1
            if confirm:
                self.inbound_cursor = max(self.inbound_cursor, max(confirm))
            confirm = []
            rows = answer.get("directory")
            if isinstance(rows, list):
                try:
                    changed = self.directory.apply(rows)
                except (KeyError, TypeError, ValueError) as e:
                    self.log.error("federation: bad directory rows: {e}", e=e)
                    changed = []
                self._directory_changed(changed)
            items = answer.get("items")
            if isinstance(items, list) and items:
                await self.inbound.store_page(items)
                self.counters["received"] += len(items)
                confirm = [i["seq"] for i in items
                           if isinstance(i, dict) and isinstance(i.get("seq"), int)]

    # -- STATUS --------------------------------------------------------

    def stats(self):
        directory = self.directory
        return {
            "state": self.state,
            "daemon_id": self.me,
            "ingest": self.client.url,
            "connected": self.client.connected,
            "last_error": self.client.last_error,
            "inbound_cursor": self.inbound_cursor,
            "waiting_handover": self.waiting,
            "presence_queue": len(self._events),
            "directory_version": directory.version if directory else 0,
            "directory_size": len(directory) if directory else 0,
            "directory": directory.listing() if directory else [],
            **self.counters,
        }
