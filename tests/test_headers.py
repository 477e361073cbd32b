# -*- test-case-name: tests.test_headers -*-
"""
The C{test-case-name} headers stay right: every module of C{relay/} names,
on its first line, test modules that exist and import, and so does every
script in C{benchmarks/} (on the line after its C{#!} line, where there is
one).  C{trial --testmodule relay/x.py} and editors read these headers to
run a module's tests; a header naming a module that was moved or never
written silently runs nothing.
"""

import importlib
import os
import re

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The header as trial reads it (C{twisted.scripts.trial.loadLocalVariables}).
HEADER = re.compile(r"^# -\*- test-case-name: (?P<names>[\w.]+(?:,[\w.]+)*) -\*-$")


def modules(top):
    """
    The C{.py} files under C{top} (relative to the project root), sorted.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    return found


def header(path):
    """
    The test module names of C{path}'s header, or None when its header
    line is not a C{test-case-name} header.  The header line is the first,
    or the second after a C{#!} line.
    """
    with open(path, encoding="utf-8") as f:
        line = f.readline()
        if line.startswith("#!"):
            line = f.readline()
    match = HEADER.match(line.rstrip("\n"))
    return match.group("names").split(",") if match else None


class HeaderTests(unittest.TestCase):
    """
    Every module says which tests cover it, and those tests exist.
    """

    def check(self, top):
        missing, wrong = [], []
        for path in modules(top):
            rel = os.path.relpath(path, ROOT)
            names = header(path)
            if names is None:
                missing.append(rel)
                continue
            for name in names:
                try:
                    importlib.import_module(name)
                except ImportError as e:
                    wrong.append("{} names {} ({})".format(rel, name, e))
        self.assertEqual((missing, wrong), ([], []),
                         "modules without a test-case-name header, and headers naming test "
                         "modules that do not import")

    def test_relay_modules(self):
        """
        Every module of C{relay/} has a C{test-case-name} header on its first
        line naming test modules that import.
        """
        self.check("relay")

    def test_benchmarks(self):
        """
        Every script in C{benchmarks/} has a C{test-case-name} header (after
        its C{#!} line) naming test modules that import.
        """
        self.check("benchmarks")

    def test_relay_header_is_the_first_line(self):
        """
        In C{relay/} the header is the very first line (no C{#!} there).
        """
        late = []
        for path in modules("relay"):
            with open(path, encoding="utf-8") as f:
                if not HEADER.match(f.readline().rstrip("\n")):
                    late.append(os.path.relpath(path, ROOT))
        self.assertEqual(late, [])

    def test_check_catches_a_bad_header(self):
        """
        The check itself: a missing header and a header naming a module
        that does not exist are both found.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        plain = os.path.join(directory, "plain.py")
        with open(plain, "w") as f:
            f.write('"""No header."""\n')
        script = os.path.join(directory, "script.py")
        with open(script, "w") as f:
            f.write("#!/usr/bin/env python\n# -*- test-case-name: tests.test_no_such_module -*-\n")
        self.assertIsNone(header(plain))
        self.assertEqual(header(script), ["tests.test_no_such_module"])
        self.assertRaises(ImportError, importlib.import_module, "tests.test_no_such_module")
