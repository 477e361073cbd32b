# -*- test-case-name: tests.test_cli_status,tests.e2e.test_cli -*-
"""
``relay status``: ask a running daemon for its state (the STATUS extension):
connected agents with their queues, store and batch metrics, rate limiting,
sync, retention. It says no HELLO, so it registers no agent name.
"""

import argparse
import json
import sys

from relay.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, fail

EPILOG = """\
examples:
  relay status
  relay status --socket /run/relay.sock --json | jq '.agents[].name'

{connection}

exit codes: 0 ok, 1 the daemon answered something else (an older daemon
without the STATUS extension), 2 bad usage (e.g. a bad endpoint string),
3 the daemon could not be reached.
"""


def register(subparsers):
    from relay.cli.connection import CONNECTION_HELP, add_connection_options
    parser = subparsers.add_parser(
        "status", help="show a running daemon's agents, queues and store",
        description="Show a running daemon's connected agents, queue depths, store and "
        "batch metrics, rate-limit state and sync state.",
        epilog=EPILOG.replace("{connection}", CONNECTION_HELP),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the raw reply as JSON")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for the reply (default 10)")
    add_connection_options(parser)
    parser.set_defaults(func=main)
    return parser


def _fail(code, message):
    return fail("status", code, message)


def _duration(seconds):
    seconds = int(seconds)
    if seconds < 60:
        return "{}s".format(seconds)
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return "{}m{:02d}s".format(minutes, seconds)
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return "{}h{:02d}m".format(hours, minutes)
    return "{}d{:02d}h".format(*divmod(hours, 24))


def _size(n):
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return ("{:.0f} {}" if unit == "B" else "{:.1f} {}").format(n, unit)
        n /= 1024.0


def _since(connected_at, now):
    """How long ago ``connected_at`` (epoch seconds or ms) was."""
    if not isinstance(connected_at, (int, float)):
        return "-"
    if connected_at > 1e12:
        connected_at /= 1000.0
    return _duration(max(0.0, now - connected_at))


def _table(headers, rows):
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = []
    for row in [headers] + rows:
        lines.append("  " + "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
    return lines


def _retention_line(retention, now):
    """The retention section (None: off) in one line."""
    if retention is None:
        return "retention: off"
    last = retention.get("last_run_at")
    return ("retention: deleted {} messages, {} deliveries, {} dead letters, {} quarantined; "
            "{} pages vacuumed; last pass {}".format(
                retention.get("deleted_messages", 0), retention.get("deleted_deliveries", 0),
                retention.get("deleted_dead_letters", 0), retention.get("deleted_quarantine", 0),
                retention.get("vacuumed_pages", 0),
                "not yet" if last is None else "{} ago, {:.0f} ms".format(
                    _since(last, now), float(retention.get("last_run_s") or 0.0) * 1000)))


def format_status(status, endpoint, now):
    """The readable form of a STATUS_REPLY payload, as a list of lines."""
    lines = ["relay daemon at {}, up {}".format(endpoint, _duration(status.get("uptime_s", 0)))]
    agents = status.get("agents") or []
    lines.append("agents: {}".format(len(agents)))
    if agents:
        rows = []
        for a in agents:
            flags = []
            if a.get("backpressured"):
                flags.append("backpressured")
            paused = a.get("paused")
            if paused:
                flags.append("paused({})".format(",".join(paused) if isinstance(
                    paused, list) else paused))
            if a.get("live") is False:
                flags.append("catching-up")
            if a.get("topics"):
                flags.append("topics:" + ",".join(a["topics"]))
            rows.append([a.get("name"), str(a.get("session_id") or "")[:8],
                         _since(a.get("connected_at"), now), a.get("queue_depth", "-"),
                         a.get("inflight", "-"), a.get("sent", "-"), a.get("delivered", "-"),
                         " ".join(flags)])
        lines.extend(_table(["NAME", "SESSION", "UP", "QUEUE", "INFLIGHT", "SENT",
                             "DELIVERED", "FLAGS"], rows))
    store = status.get("store") or {}
    if store:
        causes = store.get("flushes_by_cause") or {}
        lines.append("store: {} batches, {} rows, {}; last flush {:.1f} ms; pending {} rows"
                     .format(store.get("batches", 0), store.get("rows", 0),
                             _size(store.get("bytes", 0)),
                             float(store.get("last_flush_ms") or 0.0),
                             store.get("pending_rows", 0)))
        if causes:
            lines.append("  flushes by cause: " + ", ".join(
                "{} {}".format(k, v) for k, v in sorted(causes.items())))
    rate = status.get("rate_limit") or {}
    if rate:
        if rate.get("enabled"):
            throttled = rate.get("throttled_agents") or []
            lines.append("rate limit: {}/s, burst {}, policy {}; throttled: {}".format(
                rate.get("rate"), rate.get("burst"), rate.get("policy"),
                ", ".join(throttled) if throttled else "none"))
        else:
            lines.append("rate limit: off")
    sync = status.get("sync")
    lines.append("sync: {}".format("off" if sync is None else json.dumps(sync, sort_keys=True)))
    lines.extend(format_federation(status.get("federation")))
    if "retention" in status:
        lines.append(_retention_line(status["retention"], now))
    messages = status.get("messages")
    if messages:
        lines.append("messages: " + ", ".join(
            "{} {}".format(k, v) for k, v in sorted(messages.items())))
    return lines


def format_federation(fed):
    """The federation lines of a STATUS_REPLY (its C{federation} part)."""
    if fed is None:
        return ["federation: off"]
    lines = ["federation: {} as daemon {} through {}{}".format(
        fed.get("state"), fed.get("daemon_id"), fed.get("ingest"),
        "" if fed.get("connected") else " (not connected: {})".format(fed.get("last_error")))]
    lines.append("  inbound cursor {}, received {}, handed over {}, waiting for hand-over {}, "
                 "directory {} names (version {})".format(
                     fed.get("inbound_cursor"), fed.get("received"), fed.get("handed_over"),
                     fed.get("waiting_handover"), fed.get("directory_size"),
                     fed.get("directory_version")))
    return lines


def main(args):
    from relay.cli.connection import endpoint_from_args, run_job
    endpoint = endpoint_from_args(args)
    code, failure = run_job(_status, args, endpoint)
    if failure is not None:
        return _fail(EXIT_FAILED, "unexpected error: {}".format(failure.getErrorMessage()))
    if code is None:
        return _fail(EXIT_FAILED, "interrupted")
    return code


def _status(reactor, args, endpoint):
    def shown(status):
        if args.json:
            sys.stdout.write(json.dumps(status, indent=2, sort_keys=True) + "\n")
        else:
            sys.stdout.write("\n".join(format_status(status, endpoint, reactor.seconds())) + "\n")
        sys.stdout.flush()
        return EXIT_OK
    return fetch_and_show(reactor, args, endpoint, "status", shown)


def fetch_and_show(reactor, args, endpoint, command, shown):
    """
    Ask the daemon at C{endpoint} for its STATUS and hand the reply to
    C{shown} (which returns the exit code); an unreachable daemon or a
    reply of the wrong kind is the usual one line and exit code.
    """
    from relay.client import ConnectFailed, ProtocolViolation, fetch_status

    def failed(failure):
        if failure.check(ConnectFailed):
            return fail(command, EXIT_USAGE if failure.value.reason == "endpoint" else
                        EXIT_UNREACHABLE, failure.getErrorMessage())
        if failure.check(ProtocolViolation):
            return fail(command, EXIT_FAILED, failure.getErrorMessage())
        return failure
    return fetch_status(reactor, endpoint, timeout=args.timeout,
                        trust_uid=args.trust_uid).addCallbacks(shown, failed)
