# -*- test-case-name: tests.test_cli_keys -*-
"""
C{relay keys}: manage the API keys of the ingest service.

  relay keys create --workspace UUID [--daemon UUID] [--postgres DSN]
  relay keys list [--workspace UUID] [--postgres DSN]
  relay keys revoke KEY_ID [--postgres DSN]

C{create} prints the new key once, alone on the last line of its output, so
scripts can take it with C{tail -1}; only its SHA-256 hash is stored.  A
key created with C{--daemon} speaks only for that daemon.
"""

import argparse
import os
import sys
import uuid

from relay.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, fail


def _dsn(args):
    """
    The DSN to use: C{--postgres}, else C{$RELAY_POSTGRES_DSN}, else the
    local server.
    """
    from relay.ingest.db import DEFAULT_DSN
    return args.postgres or os.environ.get("RELAY_POSTGRES_DSN") or DEFAULT_DSN


def _connect(args):
    """
    Connect and bring the schema up to date; return the connection, or
    L{None} after printing why not.
    """
    import psycopg2

    from relay.ingest.schema import migrate
    try:
        conn = psycopg2.connect(_dsn(args), connect_timeout=10)
    except psycopg2.OperationalError as e:
        fail("keys", EXIT_UNREACHABLE, "cannot connect to PostgreSQL: %s" % (str(e).strip(),))
        return None
    try:
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _database_errors(command):
    """
    Report a database error (permissions, a broken schema...) in one line
    and exit 1, instead of a traceback.
    """
    def run(args):
        import psycopg2
        try:
            return command(args)
        except psycopg2.Error as e:
            return fail("keys", EXIT_FAILED,
                        "PostgreSQL error: %s" % (str(e).strip().splitlines()[0],))
    run.__name__ = command.__name__
    run.__doc__ = command.__doc__
    return run


def _workspace(value, option="--workspace"):
    """
    C{value} as a L{uuid.UUID}, or L{None} after printing why not.
    """
    try:
        return uuid.UUID(value)
    except ValueError:
        fail("keys", EXIT_USAGE, "%s must be a UUID, not %r" % (option, value))
        return None


@_database_errors
def create(args):
    """
    C{relay keys create}: store a new key and print it once, last.

    @return: the exit status.
    """
    from relay.ingest.keys import create_key
    workspace = _workspace(args.workspace)
    if workspace is None:
        return EXIT_USAGE
    daemon = None
    if args.daemon is not None:
        daemon = _workspace(args.daemon, "--daemon")
        if daemon is None:
            return EXIT_USAGE
    conn = _connect(args)
    if conn is None:
        return EXIT_UNREACHABLE
    try:
        key_id, key = create_key(conn, workspace, daemon)
    finally:
        conn.close()
    if daemon is None:
        print("Created key %s for workspace %s." % (key_id, workspace))
    else:
        print("Created key %s for daemon %s of workspace %s." % (key_id, daemon, workspace))
    print("It is shown only this once; store it now. The key:")
    print(key)
    return EXIT_OK


@_database_errors
def list_(args):
    """
    C{relay keys list}: print the keys (never the keys themselves), oldest
    first.

    @return: the exit status.
    """
    from relay.ingest.keys import list_keys
    workspace = None
    if args.workspace is not None:
        workspace = _workspace(args.workspace)
        if workspace is None:
            return EXIT_USAGE
    conn = _connect(args)
    if conn is None:
        return EXIT_UNREACHABLE
    try:
        rows = list_keys(conn, workspace)
    finally:
        conn.close()
    print("%-16s  %-36s  %-36s  %-25s  %s" % (
        "KEY ID", "WORKSPACE", "DAEMON", "CREATED", "REVOKED"))
    for key_id, ws, created, revoked, daemon in rows:
        print("%-16s  %-36s  %-36s  %-25s  %s" % (
            key_id, ws, daemon or "-", created.isoformat(timespec="seconds"),
            revoked.isoformat(timespec="seconds") if revoked else "-"))
    return EXIT_OK


@_database_errors
def revoke(args):
    """
    C{relay keys revoke}: revoke a key by its id (or the full key).

    @return: the exit status (1 for an unknown key).
    """
    from relay.ingest.keys import revoke_key
    conn = _connect(args)
    if conn is None:
        return EXIT_UNREACHABLE
    try:
        outcome = revoke_key(conn, args.key_id)
    finally:
        conn.close()
    if outcome == "unknown":
        return fail("keys", EXIT_FAILED, "no key with id %r" % (args.key_id,))
    if outcome == "already":
        print("Key %s was already revoked." % (args.key_id,))
    else:
        print("Revoked key %s." % (args.key_id,))
    return EXIT_OK


EPILOG = """\
examples:
  relay keys create --workspace 6f1d1c2e-8d8e-4a53-9a4b-0d5b3f3d6a01 | tail -1 > key
  relay keys create --workspace 6f1d1c2e-8d8e-4a53-9a4b-0d5b3f3d6a01 \
      --daemon 11111111-2222-4333-8444-555555555555 | tail -1 > daemon.key
  relay keys list --workspace 6f1d1c2e-8d8e-4a53-9a4b-0d5b3f3d6a01
  relay keys revoke 529e31eb017ae03e

Each command brings the ingest schema up to date first. Only a SHA-256 hash of
a key is stored; the key is printed once, by create, alone on its last line.
Exit codes: 0 ok, 1 unknown key to revoke, 2 bad usage, 3 PostgreSQL
unreachable.
"""


def register(subparsers):
    """
    Add C{keys} and its actions to the C{relay} command's C{subparsers}.
    """
    parser = subparsers.add_parser(
        "keys", help="manage ingest service API keys",
        description="Create, list and revoke API keys of the ingest service.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=lambda args: (parser.print_help(sys.stderr), EXIT_USAGE)[1])
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION")

    def common(p):
        p.add_argument("--postgres", metavar="DSN", default=None,
                       help="PostgreSQL DSN (default: $RELAY_POSTGRES_DSN, else the local server)")

    p = sub.add_parser("create", help="create a key; prints it once, on the last line")
    p.add_argument("--workspace", required=True, metavar="UUID",
                   help="the workspace whose daemons will use the key")
    p.add_argument("--daemon", metavar="UUID", default=None,
                   help="bind the key to this daemon id: it may speak for no other daemon")
    common(p)
    p.set_defaults(func=create)

    p = sub.add_parser("list", help="list keys (ids, workspaces, daemons, revocation)")
    p.add_argument("--workspace", metavar="UUID", default=None,
                   help="only the keys of this workspace")
    common(p)
    p.set_defaults(func=list_)

    p = sub.add_parser("revoke", help="revoke a key by its id (or the key itself)")
    p.add_argument("key_id", metavar="KEY_ID",
                   help="the key id shown by list (the full key works too)")
    common(p)
    p.set_defaults(func=revoke)
