"""Answers every message in upper case: echo_agent.py [NAME [ENDPOINT [COUNT]]]"""
import sys

from twisted.internet import defer, task

from relay.client import connect, default_endpoint


@defer.inlineCallbacks
def main(reactor, name="echo", endpoint=None, count=None):
    done = defer.Deferred()
    answered = []

    def on_message(message):                   # ACKed once the reply is stored
        answered.append(message.id)
        if count and len(answered) == int(count):
            reactor.callLater(0.1, done.callback, None)
        return client.send(message.sender, message.body.upper(), thread=message.thread)

    client = yield connect(reactor, endpoint or default_endpoint(), name, on_message=on_message)
    print("{} is listening".format(name), flush=True)
    yield done                                 # forever, unless COUNT was given
    yield client.close()


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
