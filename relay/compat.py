# -*- test-case-name: tests.test_compat -*-
"""
The differences between the oldest and the newest Twisted that relay
supports (setup.py's bounds, both run by C{.ci/run}), each in one place with
the release it exists for.
"""

import inspect

from twisted.python import usage


def site_takes_parse_post():
    """
    Twisted 25.5.0 added C{Site(..., parsePOSTFormSubmission=False)}: without
    it a POST whose Content-Type is a form has its body read into
    C{request.args} before the resource sees it.  Older releases (22.10 to
    24.11) always parse, and do not take the keyword.

    (twisted.web is imported here, not at the top: C{relay.tap} imports this
    module and needs nothing from the web.)
    """
    from twisted.web import server
    try:
        parameters = inspect.signature(server.Site.__init__).parameters
    except (TypeError, ValueError):
        return False
    return "parsePOSTFormSubmission" in parameters


def site_without_form_parsing():
    """
    The keyword arguments for C{twisted.web.server.Site} that turn form
    parsing off where this Twisted can (25.5.0 and later).  Where it cannot,
    form parsing stays on: the request's C{content} must then answer
    C{read()} with nothing it would parse (the ingest service's
    C{BoundedBody.read()} returns C{b""}), so the body is still read once,
    by the resource.
    """
    if site_takes_parse_post():
        return {"parsePOSTFormSubmission": False}
    return {}


class ExitOnUsageError:
    """
    Mixin for the C{usage.Options} of a twistd plugin: under twistd, a bad
    option is one line on stderr and exit status 1 on every supported
    Twisted.  twistd itself exits 0 after printing a usage error up to at
    least 25.5.0 (26.10.0 exits 1), so a service manager or a script would
    take a daemon that never started for a success.  Used on its own (not as
    a twistd sub-command) the options still raise L{usage.UsageError}.
    """

    def parseOptions(self, options=None):
        try:
            return super().parseOptions(options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            raise SystemExit("twistd %s: %s" % (getattr(self.parent, "subCommand", None)
                                                or "", e))


def exit_zero_after_clean_stop(reactor):
    """
    Make twistd exit 0 after a stop that flushed everything.

    twistd (22.10 and 26.10 alike) ends a process that a signal stopped by
    raising that signal again once the reactor is done, so
    C{kill -TERM $(cat pidfile)} leaves status 143 even when the shutdown
    was clean.  The daemon calls this only after its store is flushed and
    closed: status 0 then means nothing was left unwritten, and a failed
    flush still ends with the signal.  C{_exitSignal} is the attribute
    twistd reads (L{twisted.internet.interfaces._ISupportsExitSignalCapturing}),
    the same on both ends of the supported range.
    """
    if getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None


def load_pem_certificates(data):
    """
    Every certificate of the PEM text C{data}, as cryptography objects.

    cryptography 39 added C{x509.load_pem_x509_certificates}; the oldest end
    (.ci/oldest.txt: cryptography 38.0.4, for pyOpenSSL 22.1) has only the
    one-certificate loader, so there the PEM blocks are split here.

    @raise ValueError: C{data} holds no certificate, or a bad one.
    """
    from cryptography import x509
    many = getattr(x509, "load_pem_x509_certificates", None)
    if many is not None:
        return many(data)
    end = b"-----END CERTIFICATE-----"
    blocks = [block + end for block in data.split(end) if b"-----BEGIN CERTIFICATE-----" in block]
    if not blocks:
        raise ValueError("no certificate found in PEM data")
    return [x509.load_pem_x509_certificate(block) for block in blocks]
