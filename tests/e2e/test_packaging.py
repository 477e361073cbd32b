# -*- test-case-name: tests.e2e.test_packaging -*-
"""
The project installs as a package: a non-editable C{pip install .} into a
fresh virtualenv gives a working C{twistd relay} plugin, the packaged schema
files and a C{relay} console script.

No network: the new venv is made without pip, the project is installed into
it with C{--no-deps --no-build-isolation} by the pip of the running venv
(C{pip --python NEWVENV/bin/python}), and a C{.pth} file lends it the running
venv's site-packages for the dependencies (Twisted, setuptools, ...).  The
source is copied first so that building leaves nothing in the working tree.
"""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from tests.support.daemon import REPO

PIP = os.path.join(os.path.dirname(sys.executable), "pip")


def _unavailable():
    if not os.path.exists(PIP):
        return "no pip next to %s" % (sys.executable,)
    try:
        import setuptools  # noqa: F401
    except ImportError:
        return "setuptools is not installed, nothing can build the package offline"
    try:
        import venv  # noqa: F401
    except ImportError:
        return "the venv module is not available"
    return None


def _copy_source(destination):
    ignore = shutil.ignore_patterns(".git", "_trial_temp*", "build", "dist", "*.egg-info",
                                    "__pycache__", "*.pyc", ".venv", ".venv-oldest",
                                    "dropin.cache")
    shutil.copytree(REPO, destination, ignore=ignore)


def _run(args, cwd, env=None):
    result = subprocess.run(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, timeout=300)
    return result.returncode, result.stdout.decode("utf-8", "replace")


class InstallTests(unittest.TestCase):
    """
    A real C{pip install .} into a fresh venv gives the plugins and scripts.
    """

    timeout = 300

    @defer.inlineCallbacks
    def test_pip_install_gives_plugin_and_script(self):
        """
        After a non-editable C{pip install .} into a fresh venv, run from a
        directory outside the source tree: C{twistd --help} lists relay,
        C{twistd relay --help} shows its options, the schema files and the
        dashboard's page are packaged, the code runs from the installed copy, and the C{relay}
        console script exists and answers C{--help}.
        """
        egg_info = os.path.join(REPO, "relay.egg-info")
        had_egg_info = os.path.exists(egg_info)
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        yield threads.deferToThreadPool(reactor, reactor.getThreadPool(),
                                        self._install, work)
        venv = os.path.join(work, "venv")
        python = os.path.join(venv, "bin", "python")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        outside = os.path.join(work, "elsewhere")
        os.makedirs(outside)

        code, out = _run([python, "-c", "from twisted.scripts.twistd import run; run()",
                          "--help"], outside, env)
        self.assertEqual(code, 0, out)
        self.assertTrue(any(line.split()[:1] == ["relay"] for line in out.splitlines()), out)

        code, out = _run([python, "-c", "from twisted.scripts.twistd import run; run()",
                          "relay", "--help"], outside, env)
        self.assertEqual(code, 0, out)
        self.assertIn("--batch-delay-ms=", out)

        code, out = _run([python, "-c",
                          "import relay.store as s, twisted.plugins.relay_plugin as p;"
                          " print(s.__file__); print(p.__file__);"
                          " print(len(s.schema_scripts()))"], outside, env)
        self.assertEqual(code, 0, out)
        store_file, plugin_file, scripts = out.split()
        site = os.path.realpath(venv)
        self.assertTrue(os.path.realpath(store_file).startswith(site), store_file)
        # The plugin file is installed in the new venv (twisted itself may
        # come from the venv this test runs in, which can hold an install of
        # its own, so which copy Python imports first proves nothing).
        installed = glob.glob(os.path.join(venv, "lib", "python*", "site-packages", "twisted",
                                           "plugins", "relay_plugin.py"))
        self.assertEqual(len(installed), 1, installed)
        self.assertTrue(os.path.basename(plugin_file) == "relay_plugin.py", plugin_file)
        self.assertGreaterEqual(int(scripts), 1)

        # The dashboard's page is package data (issue 11).
        code, out = _run([python, "-c", "import os, relay.web.resources as r;"
                          " print(os.path.realpath(r.STATIC)); print(*sorted(os.listdir(r.STATIC)))"],
                         outside, env)
        self.assertEqual(code, 0, out)
        static, files = out.split("\n", 1)
        self.assertTrue(static.startswith(site), static)
        self.assertEqual(files.split(), ["app.css", "app.js", "index.html"])

        script = os.path.join(venv, "bin", "relay")
        self.assertTrue(os.access(script, os.X_OK), "no relay console script")
        code, out = _run([script, "--help"], outside, env)
        self.assertEqual(code, 0, out)
        self.assertIn("usage: relay", out)

        # Nothing was built inside the working tree (the install ran on a
        # copy; an egg-info left by an earlier install of the tree is not
        # this test's doing).
        if not had_egg_info:
            self.assertFalse(os.path.exists(egg_info))

    def _install(self, work):
        source = os.path.join(work, "src")
        _copy_source(source)
        venv = os.path.join(work, "venv")
        code, out = _run([sys.executable, "-m", "venv", "--without-pip", venv], work)
        if code != 0:
            raise AssertionError("venv creation failed:\n" + out)
        python = os.path.join(venv, "bin", "python")
        code, out = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         work)
        if code != 0:
            raise AssertionError(out)
        new_site = out.strip()
        # Lend the fresh venv our dependencies (after its own site-packages).
        with open(os.path.join(new_site, "_relay_test_deps.pth"), "w") as f:
            f.write(sysconfig.get_paths()["purelib"] + "\n")
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1")
        env.pop("PYTHONPATH", None)
        code, out = _run([PIP, "--python", python, "install", "--no-deps",
                          "--no-build-isolation", "--no-cache-dir", "--quiet", source],
                         work, env)
        if code != 0:
            raise AssertionError("pip install failed:\n" + out)


_reason = _unavailable()
if _reason is not None:
    InstallTests.skip = _reason
