# -*- test-case-name: tests.test_loadgen,tests.test_bench_report -*-
"""
Load generation and reporting for ``relay bench`` and benchmarks/.

L{relay.bench.loadgen} is standard-library only by design (it must not share
the daemon's bottlenecks and can be copied to any machine); it imports
nothing from relay.  L{relay.bench.report} formats its results.
"""
