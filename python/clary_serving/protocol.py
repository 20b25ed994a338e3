"""Frames between the Rust front end and a worker.

A frame is a big-endian u32 header length, a JSON header, then the raw bodies of the items the
header lists (each item carries its body's length). Bodies are never re-encoded.
"""

import json
import struct

_LEN = struct.Struct(">I")


class FrameReader:
    def __init__(self, sock):
        self._file = sock.makefile("rb", buffering=1 << 16)

    def _exact(self, n):
        data = self._file.read(n)
        if data is None or len(data) != n:
            raise EOFError("the model server closed the connection")
        return data

    def read(self):
        (size,) = _LEN.unpack(self._exact(4))
        header = json.loads(self._exact(size))
        bodies = [self._exact(item["len"]) for item in header.get("items", ())]
        return header, bodies


def write_frame(sock, header, bodies=()):
    raw = json.dumps(header, separators=(",", ":")).encode()
    sock.sendall(b"".join([_LEN.pack(len(raw)), raw, *bodies]))
