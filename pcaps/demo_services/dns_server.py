"""A tiny authoritative UDP DNS responder for ``*.shop.local`` (127.0.0.53:53), stdlib only.

A queries for names in the zone get one A record; AAAA (or other types) for
names in the zone get NOERROR with no answers; names outside the zone get
NXDOMAIN.
"""

from __future__ import annotations

import socket
import struct
import threading

from .common import QCLASS_IN, QTYPE_A, ZONE, decode_name

TTL = 60


def answer(query: bytes) -> bytes | None:
    if len(query) < 12:
        return None
    qid, flags, qdcount, _an, _ns, _ar = struct.unpack("!HHHHHH", query[:12])
    if flags & 0x8000 or qdcount != 1:
        return None
    name, end = decode_name(query, 12)
    qtype, qclass = struct.unpack("!HH", query[end : end + 4])
    question = query[12 : end + 4]
    rd = flags & 0x0100
    key = name.lower().rstrip(".")
    if key not in ZONE:
        rflags = 0x8400 | rd | 3  # QR, AA, NXDOMAIN
        return struct.pack("!HHHHHH", qid, rflags, 1, 0, 0, 0) + question
    rflags = 0x8400 | rd  # QR, AA, NOERROR
    if qtype == QTYPE_A and qclass == QCLASS_IN:
        rr = struct.pack("!HHHIH", 0xC00C, QTYPE_A, QCLASS_IN, TTL, 4) + socket.inet_aton(ZONE[key])
        return struct.pack("!HHHHHH", qid, rflags, 1, 1, 0, 0) + question + rr
    return struct.pack("!HHHHHH", qid, rflags, 1, 0, 0, 0) + question


class DNSServer:
    def __init__(self, host: str, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="dns", daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            try:
                reply = answer(data)
            except (IndexError, struct.error, UnicodeDecodeError, ValueError):
                reply = None
            if reply:
                self.sock.sendto(reply, peer)

    def start(self) -> DNSServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        self.sock.close()
