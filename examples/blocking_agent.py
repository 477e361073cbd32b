"""The same conversation from a plain script, with the blocking facade.

    python examples/blocking_agent.py [TO] [ENDPOINT]    # default: echo, $RELAY_SOCKET
"""
import sys

from relay.client.blocking import BlockingClient


def main(to="echo", endpoint=None):
    with BlockingClient("blocking-example", endpoint=endpoint) as me:
        me.send(to, "hello from a plain script")      # returns once stored
        reply = me.receive(timeout=10)                 # a Message, or None
        print(reply.body if reply else "no reply within 10 s")
        return 0 if reply else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
