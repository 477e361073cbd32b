# -*- test-case-name: tests.test_cli -*-
"""Allow ``python -m relay.cli``."""
import sys

from relay.cli import main

sys.exit(main())
