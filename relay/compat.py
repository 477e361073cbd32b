# -*- test-case-name: tests.test_deploy_compat -*-
"""
The differences between the oldest and the newest Twisted that relay
supports (setup.py's bounds, both run by C{.ci/run}), each in one place with
the release it exists for.
"""

import inspect

from twisted.web import server


def _site_takes_parse_post():
    try:
        parameters = inspect.signature(server.Site.__init__).parameters
    except (TypeError, ValueError):
        return False
    return "parsePOSTFormSubmission" in parameters


#: Twisted 25.5.0 added C{Site(..., parsePOSTFormSubmission=False)}: without
#: it a POST whose Content-Type is a form has its body read into
#: C{request.args} before the resource sees it.  Older releases (22.10 to
#: 24.11) always parse, and do not take the keyword.
SITE_TAKES_PARSE_POST = _site_takes_parse_post()


def site_without_form_parsing():
    """
    The keyword arguments for C{twisted.web.server.Site} that turn form
    parsing off where this Twisted can (25.5.0 and later).  Where it cannot,
    form parsing stays on: the request's C{content} must then answer
    C{read()} with nothing it would parse (the ingest service's
    C{BoundedBody.read()} returns C{b""}), so the body is still read once,
    by the resource.
    """
    if SITE_TAKES_PARSE_POST:
        return {"parsePOSTFormSubmission": False}
    return {}
