# -*- test-case-name: tests.test_support -*-
"""
The one output-collecting L{ProcessProtocol} of the tests.
"""

from twisted.internet import defer, protocol


class ProcessOutput(protocol.ProcessProtocol):
    """
    Collects a child's stdout and stderr (apart, and interleaved as they
    came), its complete stdout lines, and how it ended.

    @ivar out: stdout chunks (bytes).
    @ivar err: stderr chunks (bytes).
    @ivar output: every chunk of both, in arrival order.
    @ivar lines: complete stdout lines, decoded.
    @ivar ended: fires with L{result} when the process has ended.
    @ivar exit_code: its exit status (L{None} if killed by a signal).
    @ivar exit_signal: the signal that killed it, or L{None}.
    """

    def __init__(self, stdin=None, close_stdin=False):
        """
        @param stdin: bytes written to the child's stdin once it starts.
        @param close_stdin: close the child's stdin once it starts (after
            writing C{stdin}), so a child reading it sees the end.
        """
        self.stdin = stdin
        self.close_stdin = close_stdin
        self.out = []
        self.err = []
        self.output = []
        self.lines = []
        self._partial = ""
        self.ended = defer.Deferred()
        self.exit_code = None
        self.exit_signal = None

    def connectionMade(self):
        if self.stdin is not None:
            self.transport.write(self.stdin)
        if self.close_stdin:
            self.transport.closeStdin()

    def outReceived(self, data):
        self.out.append(data)
        self.output.append(data)
        text = self._partial + data.decode("utf-8", "replace")
        *complete, self._partial = text.split("\n")
        self.lines.extend(complete)
        self.line_received()

    def errReceived(self, data):
        self.err.append(data)
        self.output.append(data)

    def line_received(self):
        """
        Called after new stdout arrived; subclasses watch L{lines} here.
        """

    def processEnded(self, reason):
        self.exit_code = getattr(reason.value, "exitCode", None)
        self.exit_signal = getattr(reason.value, "signal", None)
        self.ended.callback(self.result())

    def result(self):
        """
        What L{ended} fires with: the exit status (subclasses may say more).
        """
        return self.exit_code

    def stdout(self):
        return b"".join(self.out).decode("utf-8", "replace")

    def stderr(self):
        return b"".join(self.err).decode("utf-8", "replace")

    def text(self):
        """
        stdout and stderr as they came, decoded.
        """
        return b"".join(self.output).decode("utf-8", "replace")
