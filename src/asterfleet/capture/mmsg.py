"""Many datagrams per system call: Linux ``recvmmsg(2)`` and ``sendmmsg(2)``.

Python's socket module reads and writes one datagram per call, and
asyncio's datagram transport reads one per event-loop turn. At hundreds of
thousands of HEP packets a second the per-call cost is the limit, so the
collector drains its UDP sockets with ``recvmmsg`` (up to ``batch``
datagrams per call) and the load generator sends with ``sendmmsg``. Both are
called through ctypes on the C library: nothing to build or install.

:func:`available` is False where the C library lacks them (not Linux): the
callers then fall back to one datagram per call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Sequence

MSG_DONTWAIT = 0x40


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    if not hasattr(lib, "recvmmsg") or not hasattr(lib, "sendmmsg"):
        return None
    lib.recvmmsg.argtypes = [
        ctypes.c_int,
        ctypes.POINTER(_Mmsghdr),
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_void_p,
    ]
    lib.recvmmsg.restype = ctypes.c_int
    lib.sendmmsg.argtypes = [ctypes.c_int, ctypes.POINTER(_Mmsghdr), ctypes.c_uint, ctypes.c_int]
    lib.sendmmsg.restype = ctypes.c_int
    return lib


_LIBC = _libc()


def available() -> bool:
    return _LIBC is not None


class Receiver:
    """Reads up to ``batch`` datagrams of at most ``size`` bytes per call."""

    def __init__(self, fd: int, batch: int = 256, size: int = 65535) -> None:
        if _LIBC is None:
            raise OSError(errno.ENOSYS, "recvmmsg is not available")
        self.fd = fd
        self.batch = batch
        self._buffers = (ctypes.c_char * (size * batch))()
        base = ctypes.addressof(self._buffers)
        self._iov = (_Iovec * batch)()
        self._msgs = (_Mmsghdr * batch)()
        for i in range(batch):
            self._iov[i].iov_base = base + i * size
            self._iov[i].iov_len = size
            hdr = self._msgs[i].msg_hdr
            hdr.msg_iov = ctypes.pointer(self._iov[i])
            hdr.msg_iovlen = 1
        self._view = memoryview(self._buffers).cast("B")
        self._size = size

    def receive(self) -> list[bytes]:
        """The datagrams waiting now (possibly none); never blocks."""
        assert _LIBC is not None
        n = _LIBC.recvmmsg(self.fd, self._msgs, self.batch, MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return []
            raise OSError(err, os.strerror(err))
        view, size, msgs = self._view, self._size, self._msgs
        return [bytes(view[i * size : i * size + msgs[i].msg_len]) for i in range(n)]


class Sender:
    """Sends a fixed list of datagrams on a connected socket, ``batch`` per call.

    The message headers are built once: each :meth:`send` is one system
    call per batch and no Python work per datagram.
    """

    def __init__(self, fd: int, packets: Sequence[bytes], batch: int = 64) -> None:
        if _LIBC is None:
            raise OSError(errno.ENOSYS, "sendmmsg is not available")
        self.fd = fd
        self._keep = [ctypes.create_string_buffer(p, len(p)) for p in packets]
        self._iov = (_Iovec * len(packets))()
        self._msgs = (_Mmsghdr * len(packets))()
        for i, buf in enumerate(self._keep):
            self._iov[i].iov_base = ctypes.addressof(buf)
            self._iov[i].iov_len = len(packets[i])
            hdr = self._msgs[i].msg_hdr
            hdr.msg_iov = ctypes.pointer(self._iov[i])
            hdr.msg_iovlen = 1
        self.count = len(packets)
        self.batch = batch
        self._size = ctypes.sizeof(_Mmsghdr)

    def send(self, start: int, count: int) -> int:
        """Send packets ``start .. start+count`` (within the list); how many went."""
        assert _LIBC is not None
        count = min(count, self.count - start)
        sent = 0
        base = ctypes.addressof(self._msgs) + start * self._size
        while sent < count:
            ptr = ctypes.cast(base + sent * self._size, ctypes.POINTER(_Mmsghdr))
            n = _LIBC.sendmmsg(self.fd, ptr, min(self.batch, count - sent), 0)
            if n < 0:
                err = ctypes.get_errno()
                if err in (errno.EAGAIN, errno.EINTR, errno.ENOBUFS, errno.ECONNREFUSED):
                    continue
                raise OSError(err, os.strerror(err))
            sent += n
        return sent
