# -*- test-case-name: tests.test_federation -*-
"""
This daemon's copy of the workspace directory: for each agent name, the
daemon that is its home (where its latest HELLO was), whether it is online
there, since when, and the directory version of that change.
"""

import attr


@attr.s(slots=True)
class Entry:
    name = attr.ib()
    home = attr.ib()
    online = attr.ib()
    since_ms = attr.ib()
    version = attr.ib()

    def to_json(self):
        return {"name": self.name, "home": self.home, "online": self.online,
                "since_ms": self.since_ms, "version": self.version}


class Directory:
    """
    @ivar version: the highest directory version seen (what the next poll
        asks for changes after).
    """

    def __init__(self, me):
        self.me = me
        self.version = 0
        self.entries = {}

    def __len__(self):
        return len(self.entries)

    def home_of(self, name):
        entry = self.entries.get(name)
        return entry.home if entry is not None else None

    def home_elsewhere(self, name):
        """
        Whether C{name} is at home on another daemon (a name at home
        nowhere waits here, as a local one does).
        """
        entry = self.entries.get(name)
        return entry is not None and entry.home != self.me

    def apply(self, rows):
        """
        Take the changed C{rows} of a poll answer (dicts with name, home,
        online, since_ms, version); an older change than the one held is
        ignored.

        @return: the L{Entry}s that changed, in version order.
        @raise ValueError: on a row of the wrong shape.
        """
        changed = []
        for row in rows:
            name, home, version = row["name"], row["home"], row["version"]
            if not (isinstance(name, str) and isinstance(home, str)
                    and isinstance(version, int) and not isinstance(version, bool)):
                raise ValueError("bad directory row: %r" % (row,))
            self.version = max(self.version, version)
            entry = self.entries.get(name)
            if entry is not None and entry.version >= version:
                continue
            entry = Entry(name, home, bool(row.get("online")), row.get("since_ms"), version)
            self.entries[name] = entry
            changed.append(entry)
        return changed

    def listing(self, limit=1000):
        """
        The entries as JSON-able dicts, by name (at most C{limit}).
        """
        return [self.entries[n].to_json() for n in sorted(self.entries)[:limit]]
