# -*- test-case-name: tests.test_bench_report -*-
"""
What ``relay bench`` and the scripts in benchmarks/ share around the load
generator (L{relay.bench.loadgen}): its command-line knobs, a progress bar,
and the result table.
"""


def add_load_options(parser):
    """The load generator's knobs (shared with benchmarks/)."""
    parser.add_argument("--senders", type=int, default=1)
    parser.add_argument("--receivers", type=int, default=1)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=200, help="body bytes (default 200)")
    parser.add_argument("--window", type=int, default=None,
                        help="in-flight messages per sender (default 1000)")
    parser.add_argument("--open-loop", action="store_true",
                        help="no window: write as fast as the socket accepts")
    parser.add_argument("--receiver-rate", type=float, default=None,
                        help="each receiver reads at most this many msgs/s")
    parser.add_argument("--no-durable", dest="durable", action="store_false",
                        help="do not ask for receipts (requires_ack false)")
    parser.add_argument("--idle-timeout", type=float, default=20.0,
                        help="give up after this many seconds without any frame")


def check_load_options(args):
    """A one-line complaint about the load options, or None."""
    if args.senders < 1 or args.receivers < 1:
        return "--senders and --receivers must be at least 1"
    if args.messages < 1:
        return "--messages must be at least 1"
    if args.size < 0:
        return "--size must not be negative"
    if args.window is not None and args.window < 1:
        return "--window must be at least 1"
    if args.receiver_rate is not None and args.receiver_rate <= 0:
        return "--receiver-rate must be positive"
    return None


def progress_printer(stream):
    """A progress bar on a terminal, a plain line every 10% otherwise."""
    state = {"last": -1}

    def show(done, total):
        if not total:
            return
        fraction = done / total
        if stream.isatty():
            width = 40
            filled = int(width * fraction)
            stream.write("\r[{}{}] {:6.1%} {}/{}".format(
                "#" * filled, "." * (width - filled), fraction, done, total))
            if done >= total:
                stream.write("\n")
            stream.flush()
        else:
            step = int(fraction * 10)
            if step > state["last"]:
                state["last"] = step
                stream.write("{}/{} settled\n".format(done, total))
                stream.flush()
    return show


def _ms(value):
    return "-" if value is None else "{:.2f} ms".format(value)


def result_rows(result):
    """(name, value) rows describing a loadgen result."""
    return [
        ("delivered/sent", "{}/{}".format(result["delivered"], result["sent"])),
        ("lost", str(result["lost"])),
        ("duplicates", str(result["duplicates"])),
        ("out of order", str(result["out_of_order"])),
        ("receipts", str(result["receipts"])),
        ("NACK frames", "{} {}".format(result["nacked"], result["nack_codes"] or "").strip()),
        ("BUSY frames", str(result["busy_frames"])),
        ("elapsed", "{:.2f} s (load generator CPU {:.0%})".format(
            result["elapsed_s"], result.get("loadgen_cpu", 0.0))),
        ("msg/s delivered", "{:,.0f}".format(result["msgs_per_s"])),
        ("latency p50", _ms(result["p50_ms"])),
        ("latency p90", _ms(result.get("p90_ms"))),
        ("latency p99", _ms(result["p99_ms"])),
        ("latency max", _ms(result.get("max_ms"))),
    ]


def describe_run(result, receiver_rate=None):
    return "{} sender(s), {} receiver(s), {} messages of {} B, {}, {}{}".format(
        result["senders"], result["receivers"], result["messages"], result["size"],
        "open loop" if result["window"] is None else "window {}".format(result["window"]),
        "durable receipts" if result["durable"] else "no receipts",
        ", receiver rate {}/s".format(receiver_rate) if receiver_rate else "")


def format_table(rows):
    width = max(len(name) for name, _ in rows)
    return ["{}  {}".format(name.ljust(width), value) for name, value in rows]
