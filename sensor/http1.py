"""HTTP/0.9, 1.0 and 1.1 for one TCP connection, parsed passively (sans-I/O).

:class:`HTTP1Parser` parses one direction: bytes (and gaps) in, message events out.  It keeps
one receive buffer (a ``bytearray`` plus a read offset, compacted when the offset passes half
of it), so the cost per byte is constant however messages are split across segments.
:class:`HTTP1Connection` owns the two parsers, tells each what it needs to know about the
other (a response to HEAD has no body; a 2xx to CONNECT starts a tunnel; a request without a
version is answered by a bare HTTP/0.9 body), pairs requests with responses in order
(pipelining, keep-alive) and emits :class:`~sensor.transaction.Transaction` objects.

Being a passive observer, it is lenient where an endpoint would be strict: bare LF line
ends, any method token, URIs with spaces, missing reason phrases, folded headers.  What it
can't parse it counts (``stats.anomaly``) and resynchronises at the next line that starts a
message.  After a gap (bytes missing from the capture) inside a body of known length the
body continues (flagged); elsewhere the parser resynchronises.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable

from .body import Body
from .limits import Limits
from .stats import Stats
from .transaction import (
    FLAG_CONNECT,
    FLAG_GAP,
    FLAG_HTTP09,
    FLAG_INCOMPLETE,
    FLAG_MALFORMED,
    FLAG_NO_REQUEST,
    FLAG_NO_RESPONSE,
    FLAG_SMUGGLING,
    FLAG_UPGRADE,
    Transaction,
)

# Methods accepted on a request line without a version (HTTP/0.9 style).
SIMPLE_METHODS = frozenset(
    b"GET POST HEAD PUT DELETE OPTIONS TRACE CONNECT PATCH PROPFIND PROPPATCH MKCOL COPY MOVE "
    b"LOCK UNLOCK QUERY SEARCH REPORT".split()
)
_METHOD = re.compile(rb"[A-Za-z][A-Za-z0-9_-]{0,31}\Z")
_VERSION_TAIL = re.compile(rb"HTTP/(\d)\.(\d)\Z")
_STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d)[ \t]+(\d{3,9})(?:[ \t]+(.*)|[ \t]*)\Z", re.S)
_FAST_REQUEST = re.compile(rb"([A-Z][A-Z0-9_-]{0,31}) ([!-~]+) HTTP/(1\.[01])\r?\n")
# (values are captured as "anything ending in a non-blank", never lazily: linear time on any input)
_FAST_STATUS = re.compile(rb"HTTP/(1\.[01]) ([1-5][0-9][0-9]) ?((?:[^\r\n]*[^ \t\r\n])?)[ \t]*\r?\n")
_HEAD_END = re.compile(rb"\n\r?\n")
_HEADER_BLOCK = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\r\n]*\r?\n)*")
_HEADER_PAIR_STR = re.compile(r"([^:\r\n]+):[ \t]*((?:[^\r\n]*[^ \t\r\n])?)[ \t]*\r?\n")
_HEADER_PAIR = re.compile(rb"([^:\r\n]+):[ \t]*((?:[^\r\n]*[^ \t\r\n])?)[ \t]*\r?\n")
# Resynchronisation targets: a line that starts a message.
_RESYNC_REQ = re.compile(rb"(?:^|\n)([A-Za-z][A-Za-z0-9_-]{0,31} [^\r\n]* HTTP/\d\.\d\r?\n)")
_RESYNC_RESP = re.compile(rb"(?:^|\n)(HTTP/\d\.\d[ \t]+\d{3}(?![0-9]))")
_HEADER_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+[ \t]*:")
_MORE_LINES = re.compile(rb"[^\r\n]")
_TOKEN_PREFIX = re.compile(rb"[A-Za-z][A-Za-z0-9_-]{0,31}")
_LOOKS_REQ = re.compile(rb"[A-Za-z][A-Za-z0-9_-]{0,31} ")

_MAX_CL = 1 << 62
_HEX = re.compile(rb"[0-9A-Fa-f]+")

# parser states
START, HEAD, BODY_CL, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILERS, BODY_EOF, RESYNC, TUNNEL, DEAD = range(11)


def version_at_end(line: bytes) -> tuple[bytes, str] | None:
    """``b"GET /x HTTP/1.1"`` -> ``(b"GET /x ", "1.1")``; None without a trailing version.
    Linear in the line length whatever it holds (no regex backtracking over spaces)."""
    t = line.rstrip(b" \t")
    i = t.rfind(b"HTTP/")
    if i <= 0 or t[i - 1] not in (32, 9):
        return None
    m = _VERSION_TAIL.match(t, i)
    if m is None:
        return None
    return t[:i], f"{m.group(1).decode()}.{m.group(2).decode()}"


def _text(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


class Message:
    """A request or response under construction (mutable; becomes part of a Transaction)."""

    __slots__ = (
        "is_request", "ts", "ts_end", "method", "uri", "version", "status", "reason", "headers",
        "body", "flags", "complete", "interim", "req_method", "hmap", "dups",
    )

    def __init__(self, is_request: bool, ts: float):
        self.is_request = is_request
        self.ts = ts
        self.ts_end: float | None = None
        self.method: str | None = None
        self.uri: str | None = None
        self.version: str | None = None
        self.status: int | None = None
        self.reason: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.body: Body | None = None
        self.flags: set[str] = set()
        self.complete = False
        self.interim: list[int] = []
        self.req_method: str | None = None  # responses: the method of the request answered
        self.hmap: dict[str, str] = {}  # lower-case name -> first value
        self.dups = False  # some header name appears more than once

    def header(self, name: str) -> str | None:
        """First value of a header; ``name`` in lower case."""
        return self.hmap.get(name)

    def header_all(self, name: str) -> list[str]:
        if not self.dups:
            v = self.hmap.get(name)
            return [] if v is None else [v]
        return [v for k, v in self.headers if k.lower() == name]


class HTTP1Parser:
    """One direction of an HTTP/1 connection.  ``conn`` receives the events."""

    def __init__(self, conn: HTTP1Connection, is_request: bool, limits: Limits, stats: Stats, resync: bool):
        self.conn = conn
        self.is_request = is_request
        self.limits = limits
        self.stats = stats
        self.buf = bytearray()
        self.pos = 0
        self.scan = 0  # where to resume looking for the end of a head
        self.state = RESYNC if resync else START
        self.first = not resync  # the next message is the first bytes of the direction
        self.tunnel_check = False  # after CONNECT: only a versioned request line continues HTTP
        self.msg: Message | None = None
        self.remaining = 0
        self.ts = 0.0
        self.resync_bytes = 0
        self.messages = 0
        self.undecided = False  # a versionless request line waits for what follows it
        self.final = False  # no more bytes will come before a decision is needed

    # ---- input -------------------------------------------------------------------------------
    def feed(self, data: bytes, ts: float) -> None:
        self.ts = ts
        st = self.state
        if st >= TUNNEL:
            return
        buf = self.buf
        if self.pos == len(buf):
            # nothing pending: body bytes go straight to the body, without buffering
            if buf:
                buf.clear()
                self.pos = self.scan = 0
            if st == BODY_EOF:
                self.msg.body.feed(data)
                return
            if st == BODY_CL:
                n = self.remaining
                if len(data) < n:
                    self.msg.body.feed(data)
                    self.remaining = n - len(data)
                    return
                self.msg.body.feed(data[:n] if len(data) > n else data)
                self.remaining = 0
                self._finish()
                self.state = START
                if len(data) == n:
                    return
                data = data[n:]
        elif self.pos > (len(buf) >> 1):
            del buf[: self.pos]
            self.scan -= self.pos
            self.pos = 0
        buf += data
        self._run()

    def gap(self, n: int, ts: float) -> None:
        self.ts = ts
        st = self.state
        if st in (DEAD, TUNNEL):
            return
        self.stats.anomaly("http.gap")
        msg = self.msg
        if st == BODY_EOF and msg is not None:
            msg.body.gap(n)
            return
        if st == BODY_CL and msg is not None and not self._buffered():
            take = min(n, self.remaining)
            msg.body.gap(take)
            self.remaining -= take
            n -= take
            if not self.remaining:
                self._finish()
                self.state = START
            if n == 0:
                return
        if st == CHUNK_DATA and msg is not None and not self._buffered() and n <= self.remaining:
            msg.body.gap(n)
            self.remaining -= n
            if not self.remaining:
                self.state = CHUNK_END
            return
        # framing lost
        if msg is not None:
            msg.flags.add(FLAG_GAP)
            if st == HEAD:
                self._head_lost()
            else:
                self._finish(incomplete=True)
        self.buf.clear()
        self.pos = self.scan = 0
        self.state = RESYNC

    def eof(self, ts: float) -> None:
        """No more bytes in this direction."""
        self.ts = ts
        self.final = True
        if self.undecided:
            self._run()
        if self.state == START and self._buffered() and self.is_request:
            # a final request line without its terminating line end
            line = bytes(self.buf[self.pos :]).strip()
            if line:
                self.buf += b"\n"
                self._run()
        if self.state == HEAD and self._buffered():
            # head cut short by the end of the connection: keep what we have
            self.buf += b"\n\n"
            self._run()
        msg = self.msg
        if msg is not None:
            if self.state == BODY_EOF:
                self._finish()
            else:
                self._finish(incomplete=True)
        self.state = DEAD

    def decide(self) -> None:
        """The peer spoke: a versionless request line waiting for more is complete as it is."""
        if self.undecided:
            self.final = True
            self._run()
            self.final = False

    def _buffered(self) -> int:
        return len(self.buf) - self.pos

    def _text(self, b: bytes) -> str:
        """UTF-8, else Latin-1 (every byte kept) with the anomaly counted."""
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            self.stats.anomaly("http.invalid_utf8")
            return b.decode("latin-1")

    # ---- state machine -----------------------------------------------------------------------
    def _run(self) -> None:
        while self.pos < len(self.buf):
            st = self.state
            if st == START:
                if not self._start():
                    return
            elif st == HEAD:
                if not self._head():
                    return
            elif st == BODY_CL:
                self._body_cl()
            elif st == CHUNK_SIZE:
                if not self._chunk_size():
                    return
            elif st == CHUNK_DATA:
                self._chunk_data()
            elif st == CHUNK_END:
                if not self._chunk_end():
                    return
            elif st == TRAILERS:
                if not self._trailers():
                    return
            elif st == BODY_EOF:
                data = bytes(self.buf[self.pos :])
                self.pos = len(self.buf)
                self._body_bytes(data)
            elif st == RESYNC:
                if not self._resync():
                    return
            else:  # TUNNEL, DEAD
                self.pos = len(self.buf)
                return

    def _start(self) -> bool:
        buf, pos = self.buf, self.pos
        # skip blank lines between messages
        while pos < len(buf) and buf[pos] in (13, 10):
            pos += 1
        self.pos = pos
        if pos >= len(buf):
            return False
        if not self.tunnel_check:
            # fast path: a well-formed HTTP/1.x start line, in one C-speed match
            m = (_FAST_REQUEST if self.is_request else _FAST_STATUS).match(buf, pos)
            if m is not None:
                msg = self._new_message()
                if self.is_request:
                    msg.method = m.group(1).decode("ascii")
                    msg.uri = m.group(2).decode("ascii")
                    msg.version = m.group(3).decode("ascii")
                else:
                    msg.version = m.group(1).decode("ascii")
                    msg.status = int(m.group(2))
                    msg.reason = self._text(m.group(3))
                self.pos = m.end()
                self.scan = self.pos - 1
                self.state = HEAD
                return True
        if self.tunnel_check:
            if self.is_request:
                if _TOKEN_PREFIX.fullmatch(buf, pos) and len(buf) - pos < 32:
                    return False  # "GE": wait for the rest of the method
                ok = _LOOKS_REQ.match(buf, pos) is not None
            else:
                ok = buf[pos : pos + 5] == b"HTTP/"[: len(buf) - pos]
            if not ok:
                self.state = DEAD  # the tunnel carries something else (TLS, SMTP, ...)
                return False
        if self.is_request:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) - pos > self.limits.max_header_bytes:
                    self._lost("http.request_line_too_long")
                    self.messages += 1  # an HTTP message all the same: resynchronise, don't give up
                    return True
                return False
            line = bytes(buf[pos:nl]).rstrip(b"\r")
            return self._request_line(line, nl + 1)
        if buf[pos : pos + 5] != b"HTTP/"[: len(buf) - pos]:
            return self._not_a_status_line()
        if len(buf) - pos < 5:
            return False
        nl = buf.find(b"\n", pos)
        if nl < 0:
            if len(buf) - pos > self.limits.max_header_bytes:
                self._lost("http.status_line_too_long")
                self.messages += 1  # an HTTP message all the same: resynchronise, don't give up
                return True
            return False
        line = bytes(buf[pos:nl]).rstrip(b"\r")
        m = _STATUS_LINE.match(line)
        if m is None:
            self.stats.anomaly("http.bad_status_line")
            self._lost(None)
            return True
        msg = self._new_message()
        msg.version = f"{m.group(1).decode()}.{m.group(2).decode()}"
        msg.status = int(m.group(3))
        msg.reason = self._text(m.group(4).strip()) if m.group(4) else ""
        self.pos = nl + 1
        self.scan = nl
        self.state = HEAD
        return True

    def _request_line(self, line: bytes, after: int) -> bool:
        first = self.first
        method, _, rest = line.partition(b" ")
        rest = rest.lstrip(b" \t")
        vm = version_at_end(b" " + rest)
        valid_method = _METHOD.match(method) is not None
        if vm is not None:
            uri = vm[0].strip(b" \t")
            if self.tunnel_check and not valid_method:
                self.state = DEAD
                return False
            msg = self._new_message()
            msg.version = vm[1]
            if valid_method:
                msg.method = method.decode("ascii")
                msg.uri = self._text(uri)
            else:
                msg.flags.add(FLAG_MALFORMED)
                self.stats.anomaly("http.bad_request_line")
            self.pos = after
            self.scan = after - 1
            self.state = HEAD
            return True
        if self.tunnel_check:
            self.state = DEAD
            return False
        uri = rest.strip(b" \t")
        if method in SIMPLE_METHODS and uri and after >= len(self.buf) and not self.final:
            # Nothing follows the line yet: HTTP/0.9, or a sloppy request whose headers are
            # still in flight.  Decide when more bytes come, the server answers, or at the end.
            self.undecided = True
            return False
        self.undecided = False
        if method in SIMPLE_METHODS and uri and _MORE_LINES.match(self.buf, after):
            # no version, but more lines follow: a sloppy request with headers, not HTTP/0.9
            msg = self._new_message()
            msg.method = method.decode("ascii")
            msg.uri = self._text(uri)
            msg.flags.add(FLAG_MALFORMED)
            self.stats.anomaly("http.request_line_without_version")
            self.pos = after
            self.scan = after - 1
            self.state = HEAD
            return True
        if method in SIMPLE_METHODS and uri:
            # HTTP/0.9 simple request: the line is the whole request
            msg = self._new_message()
            msg.method = method.decode("ascii")
            msg.uri = self._text(uri)
            msg.version = "0.9"
            msg.flags.add(FLAG_HTTP09)
            self.pos = after
            self._finish()
            self.state = START
            return True
        self.stats.anomaly("http.bad_request_line")
        if first:
            # The connection's first bytes are not a request we can read.  An unknown method
            # is recorded once (a probe or a broken client); a known method without a target
            # asks for nothing and is only counted.
            if method not in SIMPLE_METHODS:
                msg = self._new_message()
                msg.flags.add(FLAG_MALFORMED)
                self._finish()
            self.conn.give_up()
            self.state = DEAD
            return False
        self._lost(None)
        return True

    def _not_a_status_line(self) -> bool:
        if self.conn.expects_http09():
            msg = self._new_message()
            msg.version = "0.9"
            msg.status = 0
            msg.flags.add(FLAG_HTTP09)
            msg.body = Body(None, self.limits.body_cap, self.limits.decompressed_cap)
            self.conn.response_head(msg)
            self.state = BODY_EOF
            return True
        self.stats.anomaly("http.bad_status_line")
        self._lost(None)
        return True

    def _new_message(self) -> Message:
        msg = Message(self.is_request, self.ts)
        self.msg = msg
        self.first = False
        self.messages += 1
        if self.is_request:
            self.conn.request_head(msg)  # pair as soon as the start line is known
        return msg

    def _head(self) -> bool:
        buf = self.buf
        pos = self.pos
        if buf[pos : pos + 1] == b"\n" or buf[pos : pos + 2] == b"\r\n":
            # no header lines at all: the start line is followed by the blank line
            self.pos = pos + (1 if buf[pos] == 10 else 2)
            self._head_done()
            return True
        if buf[pos : pos + 1] == b"\r" and pos + 1 == len(buf):
            return False
        m = _HEAD_END.search(buf, max(self.scan, pos))
        if m is None:
            if len(buf) - self.pos > self.limits.max_header_bytes:
                self.stats.anomaly("http.header_too_long")
                self._head_lost()
                self.buf.clear()
                self.pos = self.scan = 0
                self.state = RESYNC
                return False
            self.scan = max(self.pos, len(buf) - 2)
            return False
        end = m.end()
        self._headers(bytes(buf[self.pos : m.start() + 1]), self.msg)
        self.pos = end
        self._head_done()
        return True

    def _headers(self, block: bytes, msg: Message) -> None:
        """Parse header lines into ``msg.headers`` (and its lower-case index ``msg.hmap``)."""
        out = msg.headers
        hmap = msg.hmap
        if _HEADER_BLOCK.fullmatch(block) and block.count(b"\n") + len(out) <= self.limits.max_headers:
            # fast path: well-formed lines (one C-speed pass)
            if block.isascii():
                pairs = _HEADER_PAIR_STR.findall(block.decode("ascii"))
            else:
                pairs = [(k.decode("latin-1"), self._text(v)) for k, v in _HEADER_PAIR.findall(block)]
            out += pairs
            for k, v in pairs:
                kl = k.lower()
                if kl in hmap:
                    msg.dups = True
                else:
                    hmap[kl] = v
            return
        limit = self.limits.max_headers
        for raw in block.split(b"\n"):
            line = raw.rstrip(b"\r")
            if not line:
                continue
            if line[0] in (32, 9) and out:  # obsolete line folding
                k, v = out[-1]
                out[-1] = (k, v + " " + self._text(line.strip()))
                if hmap.get(k.lower()) == v:
                    hmap[k.lower()] = out[-1][1]
                continue
            name, colon, value = line.partition(b":")
            if not colon:
                self.stats.anomaly("http.bad_header_line")
                continue
            if name[-1:] in (b" ", b"\t"):
                # "Transfer-Encoding : chunked": servers must reject it, some proxies strip
                # the space; on a framing header that is request smuggling
                self.stats.anomaly("http.space_before_colon")
                if name.strip().lower() in (b"transfer-encoding", b"content-length"):
                    msg.flags.add(FLAG_SMUGGLING)
            if len(out) >= limit:
                self.stats.anomaly("http.too_many_headers")
                continue
            k, v = name.strip().decode("latin-1"), self._text(value.strip())
            out.append((k, v))
            kl = k.lower()
            if kl in hmap:
                msg.dups = True
            else:
                hmap[kl] = v

    def _head_lost(self) -> None:
        """A head we started could not be completed: keep the start line, drop the rest."""
        msg = self.msg
        if msg is not None:
            msg.flags.add(FLAG_INCOMPLETE)
            self._finish(incomplete=True)

    def _head_done(self) -> None:
        msg = self.msg
        if not self.is_request:
            if 100 <= msg.status < 200 and msg.status != 101:
                self.conn.interim(msg)
                self.msg = None
                self.state = START
                return
            self.conn.response_head(msg)
            if self.msg is None:  # CONNECT accepted: the connection finished it
                return
            if self.state in (TUNNEL, DEAD):  # the connection switched protocol
                self._finish()
                return
        self._framing(msg)

    def _framing(self, msg: Message) -> None:
        limits = self.limits
        hmap = msg.hmap
        if self.is_request and "transfer-encoding" not in hmap and "content-length" not in hmap:
            self._finish()  # the common GET: no body
            self.state = START
            return
        if not self.is_request and not self.conn.response_has_body(msg):
            self._finish()
            self.state = START
            return
        msg.body = body = Body(hmap.get("content-encoding"), limits.body_cap, limits.decompressed_cap)
        ctype = hmap.get("content-type")
        if ctype is not None and ctype[:1] in "mM ":
            body.line_mode = ctype.lstrip().lower().startswith(("multipart/", "message/"))
        if not msg.dups and "transfer-encoding" not in hmap:
            # fast path: one Content-Length (or none)
            v = hmap.get("content-length")
            if v is not None and self._content_length(v):
                return
        te = msg.header_all("transfer-encoding")
        cls = msg.header_all("content-length")
        if te and "chunked" in te[-1].lower():
            if cls:
                msg.flags.add(FLAG_SMUGGLING)
                self.stats.anomaly("http.te_and_cl")
            self.state = CHUNK_SIZE
            return
        if cls:
            values = {v.strip() for c in cls for v in c.split(",")}
            if len(values) > 1:
                msg.flags.add(FLAG_SMUGGLING)
                self.stats.anomaly("http.conflicting_content_length")
            if self._content_length(cls[0].split(",")[0].strip()):
                return
            msg.flags.add(FLAG_SMUGGLING)
            self.stats.anomaly("http.bad_content_length")
            if self.is_request:
                self._finish()
                self.state = START
                return
        if self.is_request:
            self._finish()
            self.state = START
        else:
            # Zeek reads such a body line by line unless it is compressed or the connection closes
            body.line_mode = body.line_mode or not (
                body._layers or "close" in (msg.header("connection") or "").lower() or msg.version == "1.0"
            )
            self.state = BODY_EOF

    def _content_length(self, v: str) -> bool:
        """Frame the body by a Content-Length value; False if the value is not a valid length."""
        if not (v.isascii() and v.isdigit()) or int(v) > _MAX_CL:  # "1²" is a digit to isdigit()
            return False
        n = int(v)
        if n == 0:
            self._finish()
            self.state = START
        else:
            self.remaining = n
            self.state = BODY_CL
        return True

    def _body_bytes(self, data: bytes) -> None:
        self.msg.body.feed(data)

    def _body_cl(self) -> None:
        n = min(self.remaining, len(self.buf) - self.pos)
        self._body_bytes(bytes(self.buf[self.pos : self.pos + n]))
        self.pos += n
        self.remaining -= n
        if not self.remaining:
            self._finish()
            self.state = START

    def _chunk_size(self) -> bool:
        buf = self.buf
        nl = buf.find(b"\n", self.pos)
        if nl < 0:
            if len(buf) - self.pos > 1024:
                self._bad_chunk()
                return True
            return False
        line = bytes(buf[self.pos : nl]).strip()
        size_txt = line.split(b";", 1)[0].strip()
        self.pos = nl + 1
        if not size_txt:
            return True  # tolerate an extra blank line
        if _HEX.fullmatch(size_txt) is None:  # int(x, 16) would take "0x1f", "+1f", "1_f"
            self._bad_chunk()
            return True
        size = int(size_txt, 16)
        if size > _MAX_CL:
            self._bad_chunk()
            return True
        if size == 0:
            self.state = TRAILERS
            self.scan = self.pos
        else:
            self.remaining = size
            self.state = CHUNK_DATA
        return True

    def _bad_chunk(self) -> None:
        self.stats.anomaly("http.bad_chunk")
        self.msg.flags.add(FLAG_MALFORMED)
        self._finish(incomplete=True)
        self.state = RESYNC

    def _chunk_data(self) -> None:
        n = min(self.remaining, len(self.buf) - self.pos)
        self._body_bytes(bytes(self.buf[self.pos : self.pos + n]))
        self.pos += n
        self.remaining -= n
        if not self.remaining:
            self.state = CHUNK_END

    def _chunk_end(self) -> bool:
        buf, pos = self.buf, self.pos
        if buf[pos] == 13:
            if pos + 1 >= len(buf):
                return False
            pos += 1
        if buf[pos] == 10:
            self.pos = pos + 1
        else:
            self.stats.anomaly("http.chunk_missing_crlf")
        self.state = CHUNK_SIZE
        return True

    def _trailers(self) -> bool:
        buf, pos = self.buf, self.pos
        if buf[pos : pos + 2] == b"\r\n" or buf[pos : pos + 1] == b"\n":
            self.pos = pos + (2 if buf[pos] == 13 else 1)
            self._finish()
            self.state = START
            return True
        if buf[pos] == 13 and pos + 1 >= len(buf):
            return False
        m = _HEAD_END.search(buf, max(self.scan, pos))
        if m is None:
            if len(buf) - pos > self.limits.max_header_bytes:
                self.stats.anomaly("http.header_too_long")
                self._finish(incomplete=True)
                self.state = RESYNC
                return True
            self.scan = max(pos, len(buf) - 2)
            return False
        self._headers(bytes(buf[pos : m.start() + 1]), self.msg)
        self.pos = m.end()
        self._finish()
        self.state = START
        return True

    def _lost(self, anomaly: str | None) -> None:
        if anomaly:
            self.stats.anomaly(anomaly)
        self.state = RESYNC
        if self.pos < len(self.buf):
            self.pos += 1  # never resynchronise on the very line that just failed

    def _resync(self) -> bool:
        pat = _RESYNC_REQ if self.is_request else _RESYNC_RESP
        buf = self.buf
        m = pat.search(buf, self.pos)
        if m is None:
            keep = 40
            skipped = max(0, len(buf) - self.pos - keep)
            self.resync_bytes += skipped
            self.pos += skipped
            if self.resync_bytes > self.limits.detect_bytes and not self.messages:
                self.conn.give_up()
                self.state = DEAD
            return False
        skipped = m.start(1) - self.pos
        if skipped:
            self.stats.anomaly("http.resync_skipped_bytes", skipped)
        self.pos = m.start(1)
        self.state = START
        return True

    def _finish(self, incomplete: bool = False) -> None:
        msg = self.msg
        if msg is None:
            return
        self.msg = None
        msg.ts_end = self.ts
        if incomplete:
            msg.flags.add(FLAG_INCOMPLETE)
        msg.complete = True
        self.conn.message_done(msg)

    def stop(self, state: int) -> bytes:
        """Stop parsing this direction (tunnel, upgrade); return the bytes not parsed yet."""
        self.state = state
        rest = bytes(self.buf[self.pos :])
        self.buf.clear()
        self.pos = self.scan = 0
        return rest


class _Exchange:
    __slots__ = ("req", "resp")

    def __init__(self, req: Message | None, resp: Message | None):
        self.req = req
        self.resp = resp


class HTTP1Connection:
    """Pairs the two directions' messages into Transactions.  Also a ``tcp.StreamHandler``."""

    def __init__(
        self,
        client_dir: int,
        client: tuple[bytes, int],
        server: tuple[bytes, int],
        limits: Limits,
        stats: Stats,
        emit: Callable[[Transaction], None],
        resync: tuple[bool, bool] = (False, False),
    ):
        self.client_dir = client_dir
        self.client = client
        self.server = server
        self.limits = limits
        self.stats = stats
        self.emit = emit
        req = HTTP1Parser(self, True, limits, stats, resync[client_dir])
        resp = HTTP1Parser(self, False, limits, stats, resync[1 - client_dir])
        self.parsers = (req, resp) if client_dir == 0 else (resp, req)
        self.req_parser, self.resp_parser = req, resp
        self.waiting: deque[_Exchange] = deque()  # requests without a response head yet
        self.open: list[_Exchange] = []  # exchanges not yet emitted, in order
        self.switch_to: str | None = None  # "h2c" after an accepted Upgrade: h2c
        self.upgrade_request: Transaction | None = None
        self.gave_up = False
        self.leftover: list[bytes] = [b"", b""]  # per direction, bytes after a protocol switch

    # ---- tcp.StreamHandler -------------------------------------------------------------------
    def data(self, d: int, payload: bytes, ts: float) -> None:
        if d != self.client_dir and self.req_parser.undecided:
            self.req_parser.decide()
        self.parsers[d].feed(payload, ts)

    def gap(self, d: int, n: int, ts: float) -> None:
        self.parsers[d].gap(n, ts)
        if d == self.client_dir:
            for ex in self.open:
                if ex.req is not None and not ex.req.complete:
                    ex.req.flags.add(FLAG_GAP)

    def fin(self, d: int, ts: float) -> None:
        self.parsers[d].eof(ts)

    def end(self, ts: float, reason: str = "") -> None:
        for p in self.parsers:
            if p.state != DEAD:
                p.eof(ts)
        for ex in self.open:
            self._emit(ex)
        self.open.clear()
        self.waiting.clear()

    # ---- callbacks from the parsers ----------------------------------------------------------
    def request_head(self, msg: Message) -> None:
        ex = _Exchange(msg, None)
        if len(self.waiting) >= self.limits.max_pending_requests:
            self.stats.anomaly("http.too_many_pending_requests")
            old = self.waiting.popleft()
            self._emit(old)
            self.open.remove(old)
        self.waiting.append(ex)
        self.open.append(ex)

    def message_done(self, msg: Message) -> None:
        self._flush()

    def interim(self, msg: Message) -> None:
        if self.waiting:
            req = self.waiting[0].req
            req.interim.append(msg.status)
        else:
            self.stats.anomaly("http.interim_without_request")

    def response_head(self, msg: Message) -> None:
        if self.waiting:
            ex = self.waiting.popleft()
            ex.resp = msg
            msg.interim = ex.req.interim
        else:
            ex = _Exchange(None, msg)
            self.open.append(ex)
            self.stats.anomaly("http.response_without_request")
        req = ex.req
        if req is None:
            return
        msg.req_method = req.method
        if msg.status == 101:
            msg.flags.add(FLAG_UPGRADE)
            upgrade = (msg.header("upgrade") or req.header("upgrade") or "").lower()
            if "h2c" in upgrade:
                self.switch_to = "h2c"
            for d, p in enumerate(self.parsers):
                self.leftover[d] = p.stop(TUNNEL)
        elif req.method == "CONNECT" and 200 <= msg.status < 300:
            msg.flags.add(FLAG_CONNECT)
            self.resp_parser.msg = msg
            self.resp_parser._finish()
            # The tunnel may carry plain HTTP (a proxy): keep reading only if it does.
            for p in self.parsers:
                p.buf.clear()
                p.pos = p.scan = 0
                p.state = START
                p.tunnel_check = True

    def response_has_body(self, msg: Message) -> bool:
        s = msg.status
        if s < 200 or s == 204 or s == 304:
            return False
        return not (msg.req_method == "HEAD" or (msg.req_method == "CONNECT" and s < 300))

    def expects_http09(self) -> bool:
        return bool(self.waiting) and self.waiting[0].req.version in ("0.9", None)

    def give_up(self) -> None:
        """Not HTTP after all (or hopelessly broken): stop parsing both directions."""
        self.gave_up = True
        for p in self.parsers:
            p.stop(DEAD)

    # ---- emission ----------------------------------------------------------------------------
    def _flush(self) -> None:
        if not self.open:
            return
        keep = []
        for ex in self.open:
            req, resp = ex.req, ex.resp
            if resp is not None and resp.complete and (req is None or req.complete):
                self._emit(ex)
            else:
                keep.append(ex)
        self.open = keep

    def _emit(self, ex: _Exchange) -> None:
        req, resp = ex.req, ex.resp
        flags = _NO_FLAGS
        if req is None or resp is None or req.flags or resp.flags or (req.body and req.body.flags) or (
            resp.body and resp.body.flags
        ):
            flags = self._flags(req, resp)
        qbody, qlen, qwire = _body_fields(req.body if req is not None else None)
        rbody, rlen, rwire = _body_fields(resp.body if resp is not None else None)
        # the exchange speaks the lower of the two versions (an HTTP/1.0 peer makes it HTTP/1.0)
        v1 = req.version if req is not None else None
        v2 = resp.version if resp is not None else None
        version = min(v1, v2) if v1 and v2 else (v1 or v2 or "1.1")
        tx = Transaction(
            req.ts if req is not None else resp.ts,
            self.client[0], self.client[1], self.server[0], self.server[1],
            _PROTOCOLS.get(version) or f"HTTP/{version}",
            req.method if req is not None else None,
            req.uri if req is not None else None,
            v1,
            tuple(req.headers) if req is not None else (),
            qbody, qlen, qwire,
            resp.ts if resp is not None else None,
            resp.ts_end if resp is not None else (req.ts_end if req is not None else None),
            resp.status if resp is not None else None,
            resp.reason if resp is not None else None,
            v2,
            tuple(resp.headers) if resp is not None else (),
            rbody, rlen, rwire,
            tuple(req.interim) if req is not None and req.interim else (),
            None,
            flags,
        )
        if self.switch_to == "h2c" and resp is not None and resp.status == 101:
            self.upgrade_request = tx
        self.stats.transactions += 1
        self.emit(tx)

    @staticmethod
    def _flags(req: Message | None, resp: Message | None) -> frozenset[str]:
        flags: set[str] = set()
        if req is None:
            flags.add(FLAG_NO_REQUEST)
        else:
            flags |= req.flags
            if req.body is not None:
                flags |= req.body.flags
        if resp is None:
            flags.add(FLAG_NO_RESPONSE)
        else:
            flags |= resp.flags
            if resp.body is not None:
                flags |= resp.body.flags
        return frozenset(flags)


_NO_FLAGS: frozenset[str] = frozenset()
_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0", "0.9": "HTTP/0.9"}


def _body_fields(body: Body | None) -> tuple[bytes, int, int]:
    if body is None:
        return b"", 0, 0
    dlen, wlen = body.lengths()
    return body.data(), dlen, wlen
