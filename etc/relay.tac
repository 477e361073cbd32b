# -*- mode: python -*-
"""
The relay daemon as a classic Twisted application file:

    twistd -ny etc/relay.tac                 # foreground
    twistd -y etc/relay.tac --pidfile relay.pid --logfile relay.log

The application is built by the same C{relay.tap.makeService} that
C{twistd relay} uses, from the same options: put them in RELAY_OPTIONS (a
shell-quoted string, e.g. RELAY_OPTIONS="--db /var/lib/relay/relay.sqlite
--listen unix:/run/relay/relay.sock:mode=660"), or edit ARGS below.
Without any, the daemon runs on its embedded default (a Unix socket at
/tmp/agent-relay.sock, relay.sqlite in the current directory).

Bad options stop twistd with the option's one-line message.  (Tested by
tests/test_deploy_tac.py.)
"""

import os
import shlex

from twisted.application import service
from twisted.python import usage

from relay import tap

ARGS = shlex.split(os.environ.get("RELAY_OPTIONS", ""))

options = tap.Options()
try:
    options.parseOptions(ARGS)
except usage.UsageError as e:
    raise SystemExit("relay.tac: %s" % (e,))

application = service.Application("relay")
tap.makeService(options).setServiceParent(application)
