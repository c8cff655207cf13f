"""Live capture with libpcap (through ctypes: no compiled extension, one C call per packet).

:class:`LiveSource` opens an interface (promiscuous by default), hands the BPF filter to the
kernel, and yields records ``(ts, linktype, data)`` exactly like a capture file, so the
replay pipeline runs unchanged.  ``join_fanout`` puts the socket into a Linux PACKET_FANOUT
group hashed on the flow (both directions land in the same member), for several workers.
:class:`RotatingPcapWriter` keeps a copy of what was captured in size-rotated files.

Errors are :class:`LiveError` with a one-line message that says what to do.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import socket
import struct
import time
from collections.abc import Iterator

PCAP_ERRBUF_SIZE = 256
_ERRORS = {
    -5: "no such interface",  # PCAP_ERROR_NO_SUCH_DEVICE
    -8: "permission denied",  # PCAP_ERROR_PERM_DENIED
    -9: "interface is not up",  # PCAP_ERROR_IFACE_NOT_UP
    -4: "already activated",
    -3: "cannot capture on this interface in monitor mode",
}
SOL_PACKET, PACKET_FANOUT, PACKET_FANOUT_HASH = 263, 18, 0


class LiveError(Exception):
    """Capture cannot start (one line for the user)."""


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _PktHdr(ctypes.Structure):
    _fields_ = [("ts", _Timeval), ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


class _Stat(ctypes.Structure):
    _fields_ = [("ps_recv", ctypes.c_uint), ("ps_drop", ctypes.c_uint), ("ps_ifdrop", ctypes.c_uint)]


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("pcap") or "libpcap.so.0.8"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        raise LiveError("libpcap not found: install it (apt-get install libpcap0.8)") from None
    lib.pcap_create.restype = ctypes.c_void_p
    lib.pcap_create.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    for fn in ("pcap_set_snaplen", "pcap_set_promisc", "pcap_set_timeout", "pcap_set_buffer_size",
               "pcap_set_immediate_mode"):
        getattr(lib, fn).argtypes = [ctypes.c_void_p, ctypes.c_int]
    for fn in ("pcap_activate", "pcap_datalink", "pcap_fileno"):
        getattr(lib, fn).argtypes = [ctypes.c_void_p]
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_statustostr.restype = ctypes.c_char_p
    lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram), ctypes.c_char_p,
                                 ctypes.c_int, ctypes.c_uint32]
    lib.pcap_setfilter.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram)]
    lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
    lib.pcap_next_ex.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.POINTER(_PktHdr)),
                                 ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte))]
    lib.pcap_stats.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Stat)]
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    lib.pcap_breakloop.argtypes = [ctypes.c_void_p]
    lib.pcap_setnonblock.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p]
    lib.pcap_get_selectable_fd.argtypes = [ctypes.c_void_p]
    return lib


class LiveSource:
    """Packets from a network interface, as ``(ts, linktype, data)`` records."""

    def __init__(self, iface: str, bpf: str | None = None, snaplen: int = 262144,
                 promisc: bool = True, buffer_mb: int = 64, timeout_ms: int = 100):
        self.iface = iface
        self.lib = lib = _lib()
        err = ctypes.create_string_buffer(PCAP_ERRBUF_SIZE)
        self.p = lib.pcap_create(iface.encode(), err)
        if not self.p:
            raise LiveError(f"{iface}: {err.value.decode(errors='replace')}")
        lib.pcap_set_snaplen(self.p, snaplen)
        lib.pcap_set_promisc(self.p, 1 if promisc else 0)
        lib.pcap_set_timeout(self.p, timeout_ms)
        lib.pcap_set_buffer_size(self.p, buffer_mb << 20)
        rc = lib.pcap_activate(self.p)
        if rc < 0:
            msg = lib.pcap_geterr(self.p).decode(errors="replace")
            lib.pcap_close(self.p)
            self.p = None
            if rc == -5:
                raise LiveError(f"{iface}: no such interface (see: ip link)")
            if rc == -8:
                raise LiveError(f"{iface}: permission denied: run as root, or grant the capability: "
                                f"setcap cap_net_raw,cap_net_admin=eip $(readlink -f $(which python3))")
            raise LiveError(f"{iface}: {_ERRORS.get(rc, msg) or msg}")
        self.linktype = lib.pcap_datalink(self.p)
        if bpf:
            self._filter(bpf)
        # non-blocking reads + our own poll: a quiet interface never blocks stop() or idle work
        lib.pcap_setnonblock(self.p, 1, err)
        self.fd = lib.pcap_get_selectable_fd(self.p)
        self.timeout_ms = timeout_ms
        self.stopped = False
        self.packets = 0
        self.bytes = 0

    def _filter(self, bpf: str) -> None:
        prog = _BpfProgram()
        if self.lib.pcap_compile(self.p, ctypes.byref(prog), bpf.encode(), 1, 0xFFFFFFFF) < 0:
            msg = self.lib.pcap_geterr(self.p).decode(errors="replace")
            self.close()
            raise LiveError(f"bad BPF filter {bpf!r}: {msg}")
        rc = self.lib.pcap_setfilter(self.p, ctypes.byref(prog))
        self.lib.pcap_freecode(ctypes.byref(prog))
        if rc < 0:
            msg = self.lib.pcap_geterr(self.p).decode(errors="replace")
            self.close()
            raise LiveError(f"cannot set BPF filter {bpf!r}: {msg}")

    def join_fanout(self, group: int) -> None:
        """Share the interface with other processes: the kernel hashes each flow to one member."""
        fd = self.lib.pcap_fileno(self.p)
        s = socket.socket(fileno=os.dup(fd))  # the same kernel socket; closing the dup leaves pcap's
        try:
            s.setsockopt(SOL_PACKET, PACKET_FANOUT, (group & 0xFFFF) | (PACKET_FANOUT_HASH << 16))
        except OSError as e:
            raise LiveError(f"{self.iface}: PACKET_FANOUT not available ({e})") from None
        finally:
            s.close()

    def __iter__(self) -> Iterator[tuple[float, int, bytes]]:
        """Records until stop(); yields ``None`` on read timeouts so callers can do idle work."""
        lib, p = self.lib, self.p
        hdr = ctypes.POINTER(_PktHdr)()
        data = ctypes.POINTER(ctypes.c_ubyte)()
        next_ex = lib.pcap_next_ex
        string_at = ctypes.string_at
        linktype = self.linktype
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while not self.stopped:
            rc = next_ex(p, ctypes.byref(hdr), ctypes.byref(data))
            if rc == 1:
                h = hdr.contents
                caplen = h.caplen
                self.packets += 1
                self.bytes += caplen
                yield h.ts.tv_sec + h.ts.tv_usec * 1e-6, linktype, string_at(data, caplen)
            elif rc == 0:
                if not poller.poll(self.timeout_ms):
                    yield None  # type: ignore[misc]  # quiet: a chance to flush and sweep
            else:
                if self.stopped:
                    return
                raise LiveError(f"{self.iface}: capture error: {lib.pcap_geterr(p).decode(errors='replace')}")

    def stop(self) -> None:
        self.stopped = True

    def kernel_stats(self) -> dict[str, int]:
        st = _Stat()
        if self.p and self.lib.pcap_stats(self.p, ctypes.byref(st)) == 0:
            return {"received": st.ps_recv, "dropped": st.ps_drop, "if_dropped": st.ps_ifdrop}
        return {}

    def close(self) -> None:
        if self.p:
            self.lib.pcap_close(self.p)
            self.p = None


class RotatingPcapWriter:
    """Write records to ``DIR/capture-YYYYmmdd-HHMMSS.pcap`` files of at most ``rotate_mb``
    MB, keeping the newest ``keep`` files (mode 0600)."""

    def __init__(self, directory: str, linktype: int, rotate_mb: int = 100, keep: int = 10,
                 snaplen: int = 262144):
        self.dir = directory
        self.linktype = linktype
        self.limit = rotate_mb << 20
        self.keep = keep
        self.snaplen = snaplen
        os.makedirs(directory, exist_ok=True)
        self.f = None
        self.size = 0
        self.files: list[str] = []
        self._n = 0

    def _open(self) -> None:
        if self.f is not None:
            self.f.close()
        self._n += 1
        name = os.path.join(self.dir, time.strftime("capture-%Y%m%d-%H%M%S") + f"-{self._n:04d}.pcap")
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.f = os.fdopen(fd, "wb", buffering=1 << 20)
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, self.snaplen, self.linktype))
        self.size = 24
        self.files.append(name)
        while len(self.files) > self.keep:
            old = self.files.pop(0)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old)

    def write(self, ts: float, data: bytes) -> None:
        if self.f is None or self.size + len(data) + 16 > self.limit:
            self._open()
        sec = int(ts)
        self.f.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(data), len(data)))
        self.f.write(data)
        self.size += 16 + len(data)

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
