# -*- test-case-name: tests.e2e.test_cli -*-
"""Allow ``python -m relay.cli``."""
import sys

from relay.cli import main

sys.exit(main())
