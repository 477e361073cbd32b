# -*- test-case-name: tests.test_sync_spill -*-
"""
The spill directory: batches the ingest service did not take, kept on disk
until it does.

A spill file is one batch, gzip-compressed JSON
C{{"version": 1, "daemon_id", "workspace_id", "seqs": [...], "messages": [...]}},
named C{<ms>-<counter>-<uuid4>.spill.gz}: the UUID makes names unique across
processes, the time and a per-process counter make name order the order
they were written (oldest first).  A file rewritten after a split or a dead
letter becomes C{<its name>.<part>.spill.gz}, keeping its place.  A file is written under a temporary name,
fsynced, renamed into place and the directory fsynced, so a crash leaves
either no file or a whole one.  Files are deleted only after the ingest
answered 2xx for them.  A file refused as a whole (it cannot be read, or
the ingest refuses it for what it is, not for our credentials) is moved
into C{rejected/} under the directory, kept for an operator, and counted
in L{SpillDir.rejected}; the files behind it go on.
"""

import gzip
import itertools
import os
import uuid
import zlib

import orjson
from twisted.logger import Logger

from relay.sync.wire import Item

SUFFIX = ".spill.gz"
TMP_PREFIX = ".tmp-"
REJECTED = "rejected"


class UnreadableSpill(Exception):
    """
    A spill file that does not hold a batch.
    """


class SpillDir:
    """
    @param path: the directory (created when missing).
    @param max_bytes: no file is written once the files hold this much.
    @param clock: provides C{seconds()} for the names.
    """

    log = Logger()

    def __init__(self, path, max_bytes, clock):
        self.path = path
        self.max_bytes = max_bytes
        self._clock = clock
        self._counter = itertools.count()
        os.makedirs(path, exist_ok=True)
        self.rejected_path = os.path.join(path, REJECTED)
        #: How many files are in C{rejected/} (set aside, kept); the
        #: directory is made when the first file is moved there.
        self.rejected = 0
        if os.path.isdir(self.rejected_path):
            self.rejected = sum(1 for n in os.listdir(self.rejected_path) if n.endswith(SUFFIX))
        self._sizes = {}
        for name in os.listdir(path):
            full = os.path.join(path, name)
            if name.startswith(TMP_PREFIX):
                # A write that never finished: its batch is still behind the
                # cursor (the cursor moves only after the rename), so the
                # half file holds nothing that is not in the store.
                self.log.warn("Removing unfinished spill file {name}", name=name)
                os.unlink(full)
            elif name.endswith(SUFFIX):
                self._sizes[name] = os.path.getsize(full)

    @property
    def files(self):
        return len(self._sizes)

    @property
    def bytes(self):
        return sum(self._sizes.values())

    def names(self):
        """
        The spill files, oldest first.
        """
        return sorted(self._sizes)

    def has_room(self):
        return self.bytes < self.max_bytes

    def write(self, daemon_id, workspace_id, items, replacing=None, part=0):
        """
        Write C{items} as one spill file, durably.

        @param replacing: the name of a spill file this one replaces (after
            a split or a dead letter); the new name is that name plus
            C{".<part>"}, so it keeps its place in the replay order.
        @return: the file's name.
        @raise OSError: when the disk refuses; nothing was written then.
        """
        body = b"".join([
            orjson.dumps({"version": 1, "daemon_id": daemon_id, "workspace_id": workspace_id,
                          "seqs": [i.seq for i in items]})[:-1],
            b',"messages":[', b",".join(i.json for i in items), b"]}",
        ])
        data = gzip.compress(body, compresslevel=6, mtime=0)
        if replacing is not None:
            name = "{}.{}{}".format(replacing[:-len(SUFFIX)], part, SUFFIX)
        else:
            name = "{:013d}-{:06d}-{}{}".format(
                int(self._clock.seconds() * 1000), next(self._counter) % 1000000,
                uuid.uuid4().hex, SUFFIX)
        tmp = os.path.join(self.path, TMP_PREFIX + name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.rename(tmp, os.path.join(self.path, name))
        self._fsync_dir()
        self._sizes[name] = len(data)
        return name

    def read(self, name):
        """
        @return: C{(daemon_id, workspace_id, items)} from the file C{name}.
        @raise UnreadableSpill: the file is not a spill file; it has been
            moved into C{rejected/} (L{reject}) and is kept.
        """
        full = os.path.join(self.path, name)
        try:
            with open(full, "rb") as f:
                doc = orjson.loads(gzip.decompress(f.read()))
            seqs = doc["seqs"]
            messages = doc["messages"]
            if len(seqs) != len(messages) or not messages:
                raise ValueError("{} seqs for {} messages".format(len(seqs), len(messages)))
            items = [Item(seq=int(s), id=m["id"], json=orjson.dumps(m)) for s, m in zip(seqs, messages)]
        except (OSError, EOFError, zlib.error, orjson.JSONDecodeError, KeyError, TypeError,
                ValueError) as e:
            self.reject(name)
            raise UnreadableSpill("{}: {}".format(name, e))
        return doc.get("daemon_id"), doc.get("workspace_id"), items

    def remove(self, name):
        """
        Delete C{name}: the ingest confirmed it.
        """
        os.unlink(os.path.join(self.path, name))
        self._sizes.pop(name, None)
        self._fsync_dir()

    def reject(self, name):
        """
        Move C{name} into C{rejected/} (kept as it is, out of the replay
        order).  When even the rename fails the file is forgotten for this
        process (so it cannot block the others) and left where it is.

        @return: the path it is kept at.
        """
        full = os.path.join(self.path, name)
        self._sizes.pop(name, None)
        target = os.path.join(self.rejected_path, name)
        try:
            os.makedirs(self.rejected_path, exist_ok=True)
            os.rename(full, target)
        except OSError as e:
            self.log.error("Could not move spill file {name} aside ({error}); it stays in "
                           "{path} and is skipped until a restart", name=name, error=str(e),
                           path=self.path)
            return full
        self.rejected += 1
        self._fsync_dir()
        return target

    def _fsync_dir(self):
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
