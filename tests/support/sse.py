"""
Reading what the dashboard's event stream writes (L{relay.web.sse}): the
unit tests of the stream and of the metrics share these.
"""

import orjson


def accepted(n, body="hi"):
    return dict(id="m-%d" % n, seq=n, sender="alice", to="bob", topic=None,
                payload={"kind": "message", "body": body}, recipients=["bob"], ts=1000)


def records(data):
    """
    [(kind, fields)] of the SSE records in a chunked response body, a
    C{batch} record unpacked into its events.
    """
    out = []
    kind = None
    for line in data.split(b"\n"):
        line = line.rstrip(b"\r")
        if line.startswith(b"event: "):
            kind = line[7:].decode()
        elif line.startswith(b"data: ") and kind is not None:
            fields = orjson.loads(line[6:])
            if kind == "batch":
                out.extend(event(item) for item in fields)
            else:
                out.append((kind, fields))
            kind = None
    return out


def event(item):
    """
    (kind, fields) of one item of a batch record (an accepted event is a
    list of ACCEPTED_FIELDS values, another [kind, [values in FIELDS order]]).
    """
    from relay.events import FIELDS
    from relay.web.sse import ACCEPTED_FIELDS
    if item[0] == "accepted":
        return "accepted", dict(zip(ACCEPTED_FIELDS, item[1:]))
    assert len(item[1]) == len(FIELDS[item[0]]), item
    return item[0], dict(zip(FIELDS[item[0]], item[1]))
