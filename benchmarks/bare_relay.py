#!/usr/bin/env python
# -*- test-case-name: tests.e2e.test_bare_relay -*-
"""
The baseline of bench_core.py and bench_scale.py (issue 14): a bare Twisted
relay, the least a relay on this stack can do per message.

One ``Int32StringReceiver`` per connection; each frame is parsed (orjson,
as relay does), a SEND is re-encoded as a DELIVER and written to its
recipient (by name, to every subscriber of its topic, or to every other
agent for ``"*"``). No store, no flow control, no redelivery, no rate limit,
no validation beyond what routing needs: a SEND to a name that is not
connected is dropped. It answers HELLO with WELCOME and PING with PONG, and
a SEND that asks for a receipt (``payload_meta.requires_ack``) gets its ACK
at once, with nothing stored behind it, so that the same load generator
runs against it with the same arguments and writes the same frames.

    python benchmarks/bare_relay.py --listen unix:/tmp/bare.sock

It runs until SIGTERM or SIGINT.
"""

import argparse
import os
import sys

import orjson
from twisted.internet import endpoints, protocol
from twisted.protocols.basic import Int32StringReceiver

_loads = orjson.loads
_dumps = orjson.dumps


class BareRelay(Int32StringReceiver):
    MAX_LENGTH = 1 << 20

    def connectionMade(self):
        self.name = None
        self.session = os.urandom(16).hex()
        self.seq = 0

    def connectionLost(self, reason):
        f = self.factory
        if self.name is not None and f.agents.get(self.name) is self:
            del f.agents[self.name]
        for members in f.topics.values():
            members.discard(self)

    def stringReceived(self, data):
        env = _loads(data)
        kind = env.get("type")
        f = self.factory
        if kind == "SEND":
            payload = env.get("payload")
            meta = env.get("payload_meta")
            to = env.get("to")
            topic = env.get("topic")
            f.counter += 1
            msg_id = "b%d" % (f.counter,)
            if to == "*":
                targets = f.topics.get(topic, ()) if topic else list(f.agents.values())
            else:
                target = f.agents.get(to)
                targets = (target,) if target is not None else ()
            for peer in targets:
                if peer is self:
                    continue
                peer.seq += 1
                out = {"v": 1, "type": "DELIVER", "id": msg_id, "ts": env.get("ts"),
                       "from": self.name, "to": peer.name, "payload": payload,
                       "delivery": {"seq": peer.seq, "session_id": peer.session}}
                if topic is not None:
                    out["topic"] = topic
                if meta is not None:
                    out["payload_meta"] = meta
                peer.sendString(_dumps(out))
            if meta and meta.get("requires_ack"):
                self.sendString(_dumps({"v": 1, "type": "ACK", "id": msg_id,
                                        "ts": env.get("ts"),
                                        "payload": {"ack_id": env.get("id"), "seq": 0}}))
        elif kind == "ACK":
            pass
        elif kind == "HELLO":
            self.name = (env.get("payload") or {}).get("agent")
            old = f.agents.get(self.name)
            if old is not None:
                old.transport.loseConnection()
            f.agents[self.name] = self
            self.sendString(_dumps({
                "v": 1, "type": "WELCOME", "id": "w-" + self.session, "ts": env.get("ts"),
                "payload": {"session_id": self.session, "resume_token": self.session,
                            "server": {"max_frame_bytes": self.MAX_LENGTH,
                                       "heartbeat_ms": 3600000}}}))
        elif kind == "SUBSCRIBE":
            f.topics.setdefault(env.get("topic"), set()).add(self)
        elif kind == "UNSUBSCRIBE":
            f.topics.get(env.get("topic"), set()).discard(self)
        elif kind == "PING":
            self.sendString(_dumps({"v": 1, "type": "PONG", "id": "p", "ts": env.get("ts"),
                                    "payload": env.get("payload") or {}}))
        elif kind == "BYE":
            self.transport.loseConnection()


class BareRelayFactory(protocol.Factory):
    protocol = BareRelay

    def __init__(self):
        self.agents = {}
        self.topics = {}
        self.counter = 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True,
                        help="a Twisted server endpoint, e.g. unix:/tmp/bare.sock")
    args = parser.parse_args(argv)
    from twisted.internet import reactor
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from relay.fdlimit import raise_fd_limit
    raise_fd_limit()
    endpoints.serverFromString(reactor, args.listen).listen(BareRelayFactory())
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
