# -*- test-case-name: tests.test_auth,tests.e2e.test_auth -*-
"""
Who may speak as which agent.

- Credentials come from L{twisted.cred} checkers given with Twisted's own
  option convention (L{twisted.cred.strcred.AuthOptionMixin}: C{--auth
  memory:alice:secret}, C{--auth file:PATH}, C{--help-auth}).  The user name
  is the agent name; a HELLO carries the secret as C{payload.auth =
  {"token": "..."}}.
- A HELLO whose name and token do not check gets C{ERROR UNAUTHORIZED}
  (fatal) and registers nothing.  The refusal is logged without the token,
  and each further failure from the same peer (a Unix uid, a network host)
  waits twice as long for its answer, on the injected clock, up to
  L{AuthPolicy.delay_max}; the connection is not read meanwhile.
- Listeners that are not Unix sockets need C{--auth} (or, for C{ssl:},
  C{--tls-client-ca}) unless C{--allow-anonymous-tcp}.  With C{--auth},
  Unix peers need a token too unless C{--trust-unix-peers}.
- Each Unix peer's C{SO_PEERCRED} (L{relay.peercred}) is kept on its
  connection (C{conn.peer}, shown by STATUS); a HELLO taking over a name
  held by a connection of another uid, without a valid token for that name,
  gets a non-fatal C{ERROR UNAUTHORIZED} and the holder keeps the name.
- C{--tls-client-ca FILE}: C{ssl:} listeners require a client certificate
  signed by that CA, and a HELLO over TLS must name an agent that the
  certificate's CN or a SAN names.

The protocol calls L{AuthPolicy.hello} once the HELLO's name is valid; the
policy calls C{conn.hello_accepted(env)} when the HELLO may register.
"""

import hmac
from collections import OrderedDict

from twisted.cred import checkers, credentials, error, portal
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from twisted.python import usage
from zope.interface import Interface, implementer

from relay.peercred import is_unix, peer_credentials
from relay.tls import certificate_names, load_ca

# Longest token accepted, in characters: anything longer is refused before
# a checker sees it.
MAX_TOKEN = 1024

OPT_FLAGS = [
    ["allow-anonymous-tcp", None,
     "Accept listeners that are not Unix sockets without --auth (anyone who can reach "
     "them may speak as any agent)."],
    ["trust-unix-peers", None,
     "With --auth: Unix socket peers need no token (their operating-system user, "
     "which the socket's mode restricts, is enough)."],
]

OPT_PARAMETERS = [
    ["tls-client-ca", None, None,
     "PEM file of the CA(s) whose client certificates ssl: listeners require; the "
     "certificate's CN or a SAN must be the agent name."],
]


class IRelayAgent(Interface):
    """
    The avatar of a login: the agent name a connection may speak as.
    """


@implementer(portal.IRealm)
class AgentRealm:
    """
    Gives every checked user name its agent name (text).
    """

    def requestAvatar(self, avatarId, mind, *interfaces):
        if IRelayAgent not in interfaces:
            raise NotImplementedError("relay only knows IRelayAgent")
        if isinstance(avatarId, bytes):
            avatarId = avatarId.decode("utf-8")
        return IRelayAgent, avatarId, lambda: None


@implementer(credentials.IUsernamePassword)
class TokenCredentials:
    """
    An agent name and its token; compared in constant time.
    """

    def __init__(self, username, password):
        self.username = username
        self.password = password

    def checkPassword(self, password):
        if isinstance(password, str):
            password = password.encode("utf-8")
        if not isinstance(password, bytes):
            return False
        return hmac.compare_digest(self.password, password)


def _bytes_checker(checker):
    """
    C{--auth memory:...} keeps text, while the file checker and the
    credentials use bytes: make the memory checker's users bytes.
    """
    if isinstance(checker, checkers.InMemoryUsernamePasswordDatabaseDontUse):
        checker.users = {(k.encode("utf-8") if isinstance(k, str) else k):
                         (v.encode("utf-8") if isinstance(v, str) else v)
                         for k, v in checker.users.items()}
    return checker


def is_local_listener(endpoint):
    """
    True for a listener only local users can reach: a Unix socket, named
    (C{unix:PATH}) or inherited from systemd (C{systemd:domain=UNIX:...}).
    """
    kind, _, rest = endpoint.partition(":")
    if kind == "unix":
        return True
    if kind == "systemd":
        args = dict(part.partition("=")[::2] for part in rest.split(":"))
        return args.get("domain", "").upper() == "UNIX"
    return False


def network_listeners(listen):
    return [e for e in listen if not is_local_listener(e)]


def check_options(options):
    """
    The trust rules for a parsed L{relay.tap.Options}; raises
    L{usage.UsageError} with a one-line reason.
    """
    checkers_ = [_bytes_checker(c) for c in options.get("credCheckers", [])]
    ca = options.get("tls-client-ca")
    if ca is not None:
        options["tls-client-ca-certs"] = load_ca(ca)
        if not any(e.startswith("ssl:") for e in options["listen"]):
            raise usage.UsageError("--tls-client-ca needs an ssl: listener")
    for endpoint in network_listeners(options["listen"]):
        if checkers_ or options.get("allow-anonymous-tcp"):
            continue
        if endpoint.startswith("ssl:") and ca is not None:
            continue
        raise usage.UsageError(
            "--listen %s is reachable from the network and anyone reaching it could speak "
            "as any agent: give --auth (see --help-auth), or --allow-anonymous-tcp"
            % (endpoint.split(":")[0] + ":" + endpoint.split(":")[1],))


def make_portal(options):
    cred_checkers = options.get("credCheckers")
    if not cred_checkers:
        return None
    return portal.Portal(AgentRealm(), [_bytes_checker(c) for c in cred_checkers])


def token_problem(auth):
    """
    What is wrong with a HELLO's C{payload.auth} (None: nothing), never
    quoting the token.
    """
    if not isinstance(auth, dict):
        return "payload.auth must be an object {\"token\": \"...\"}"
    token = auth.get("token")
    if token is None:
        return "payload.auth has no token"
    if not isinstance(token, str):
        return "the token must be a string, not %s" % (type(token).__name__,)
    if not token:
        return "the token is empty"
    if len(token) > MAX_TOKEN:
        return "the token is longer than %d characters" % (MAX_TOKEN,)
    return None


class AuthPolicy:
    """
    The daemon's trust decisions for HELLOs.

    @param clock: IReactorTime: refusals are delayed on it.
    @param portal: a L{portal.Portal} of the C{--auth} checkers, or None.
    @param trust_unix_peers: Unix peers need no token even with a portal.
    @param client_ca: TLS peers must present a certificate naming the agent.
    @param delay_base: the answer to the second failure from one peer waits
        this long, each further one twice as long as the one before.
    @param delay_max: no answer waits longer.
    @param forget_after: a peer's failures are forgotten after this long
        without one.
    @param max_peers: peers whose failures are remembered (the oldest go).
    @param max_delayed: refusals waiting at once; beyond it they are
        answered at once (a flood must not pin connections and memory).
    @param hello_timeout: a connection that has not been WELCOMEd this many
        seconds after it opened is closed (fatal ERROR BAD_REQUEST), so
        connections that never authenticate do not pile up.
    """

    log = Logger()

    def __init__(self, clock, portal=None, trust_unix_peers=False, client_ca=False,
                 delay_base=0.25, delay_max=5.0, forget_after=600.0, max_peers=10000,
                 max_delayed=1000, hello_timeout=30.0):
        self.clock = clock
        self.hello_timeout = hello_timeout
        self.portal = portal
        self.trust_unix_peers = trust_unix_peers
        self.client_ca = client_ca
        self.delay_base = delay_base
        self.delay_max = delay_max
        self.forget_after = forget_after
        self.max_peers = max_peers
        self.max_delayed = max_delayed
        self.failures = OrderedDict()
        self.delayed = 0
        self.counters = {"authenticated": 0, "refused": 0, "takeovers_refused": 0,
                         "hello_timeouts": 0}

    def connection_made(self, conn):
        """
        A new connection: it has C{hello_timeout} seconds to be WELCOMEd.
        """
        if self.hello_timeout:
            self.clock.callLater(self.hello_timeout, self._hello_deadline, conn)

    def _hello_deadline(self, conn):
        if conn.state == "new":
            self.counters["hello_timeouts"] += 1
            self.log.info("closing a connection from {peer}: no successful HELLO within "
                          "{secs}s", peer="%s %s" % self.peer_key(conn), secs=self.hello_timeout)
            conn.error("BAD_REQUEST", "no successful HELLO within %gs" % (self.hello_timeout,),
                       fatal=True)

    # -- the HELLO -----------------------------------------------------------

    def hello(self, conn, env, name):
        """
        Decide on the HELLO C{env} for the (valid) agent C{name} arriving
        on C{conn}: call C{conn.hello_accepted(env)}, or refuse.
        """
        transport = conn.transport
        if getattr(conn, "peer", None) is None:
            conn.peer = peer_credentials(transport)
        payload = env["payload"]
        unix = is_unix(transport)
        if self.client_ca and ISSLTransport.providedBy(transport):
            names = certificate_names(transport.getPeerCertificate())
            if name not in names:
                self._refuse(conn, name, "the client certificate does not name this agent")
                return
        need_token = self.portal is not None and not (unix and self.trust_unix_peers)
        given = payload.get("auth")
        if given is None and not need_token:
            self._admit(conn, env, name, verified=False)
            return
        if self.portal is None:
            # No credentials configured: a token means nothing here (and an
            # older daemon would ignore the field too).
            self._admit(conn, env, name, verified=False)
            return
        problem = token_problem(given)
        if problem is not None:
            self._refuse(conn, name, problem)
            return
        conn.stop_reading("auth")
        creds = TokenCredentials(name.encode("utf-8"), given["token"].encode("utf-8", "replace"))
        d = self.portal.login(creds, None, IRelayAgent)
        d.addCallbacks(self._logged_in, self._login_failed,
                       callbackArgs=(conn, env, name), errbackArgs=(conn, name))

    def _logged_in(self, result, conn, env, name):
        interface, avatar, logout = result
        if conn.state == "closed":
            return
        if avatar != name:
            self._refuse(conn, name, "the credentials name another agent")
            return
        conn.read_on("auth")
        self.counters["authenticated"] += 1
        self._admit(conn, env, name, verified=True)

    def _login_failed(self, failure, conn, name):
        if not failure.check(error.UnauthorizedLogin, error.UnhandledCredentials):
            self.log.failure("checking the credentials of agent {name} failed", failure,
                             name=name)
        if conn.state == "closed":
            return
        self._refuse(conn, name, "name and token do not match")

    def _admit(self, conn, env, name, verified):
        """
        The credentials are good (or not needed): refuse only a takeover of
        a name another operating-system user holds.
        """
        old = conn.router.sessions.get(name)
        if old is not None and not old.closed and old.conn is not conn and not verified:
            held_by = (getattr(old.conn, "peer", None) or {}).get("uid")
            uid = (conn.peer or {}).get("uid")
            if held_by is not None and uid != held_by:
                self.counters["takeovers_refused"] += 1
                self.log.warn("HELLO as {name} from uid {uid} refused: the name is held by "
                              "a connection of uid {held_by}", name=name, uid=uid,
                              held_by=held_by)
                conn.error("UNAUTHORIZED", "agent %s is connected as another user; "
                           "choose another name" % (name,))
                return
        conn.hello_accepted(env)

    # -- refusals ------------------------------------------------------------

    def peer_key(self, conn):
        peer = getattr(conn, "peer", None)
        if peer is not None:
            return ("uid", peer["uid"])
        try:
            host = getattr(conn.transport.getPeer(), "host", None)
        except Exception:
            host = None
        if host is not None:
            return ("host", host)
        return ("connection", id(conn))

    def failure_delay(self, key):
        """
        Count a failure of C{key}; seconds to wait before answering it.
        """
        now = self.clock.seconds()
        count, last = self.failures.pop(key, (0, now))
        if now - last > self.forget_after:
            count = 0
        count += 1
        self.failures[key] = (count, now)
        while len(self.failures) > self.max_peers:
            self.failures.popitem(last=False)
        if count == 1:
            return 0.0
        return min(self.delay_max, self.delay_base * 2 ** (count - 2))

    def _refuse(self, conn, name, reason):
        self.counters["refused"] += 1
        key = self.peer_key(conn)
        delay = self.failure_delay(key)
        if self.delayed >= self.max_delayed:
            delay = 0.0
        self.log.warn("HELLO as {name} refused ({reason}) from {peer}; answering in "
                      "{delay:.2f}s", name=name, reason=reason, peer="%s %s" % key,
                      delay=delay)
        message = "not authorized to speak as %s: %s" % (name, reason)
        if not delay:
            conn.error("UNAUTHORIZED", message, fatal=True)
            return
        # Not read meanwhile: whatever else it sent waits in the kernel.
        conn.stop_reading("auth")
        self.delayed += 1
        self.clock.callLater(delay, self._answer, conn, message)

    def _answer(self, conn, message):
        self.delayed -= 1
        conn.error("UNAUTHORIZED", message, fatal=True)

    def status(self):
        return dict(self.counters, tracked_peers=len(self.failures),
                    waiting_refusals=self.delayed, required=self.portal is not None)
