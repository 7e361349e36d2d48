"""The kernel side of a stream: the reader of one event table (a ring
buffer's mmap or the backend's perf buffer, readers.py) drained by a thread
of its own from start to stop, and what the kernel says was lost.

Loss: the front end's instrumentation (bpfmagic.c.instrument) makes every
``TABLE.ringbuf_output`` / ``ringbuf_reserve`` / ``perf_submit`` call (and
``--core``'s ``bpf_ringbuf_*`` calls) bump a per-CPU counter when it fails
(ring full, perf buffer full or not open yet), so ``lost`` is exact for both
kinds of table; the backend says where the counter is (``loss_counter``)."""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time

from ..kernel import libbpf
from ..kernel.maptypes import MapType
from . import warn_from_thread as _warn
from .readers import DEFAULT_PERF_PAGES, PerfReader, RingReader
from .records import RecordType


class Consumer:
    """One event table consumed: its reader, drained by a thread (woken by epoll, and by
    an eventfd on stop) that hands every non-empty read to DELIVER (a list of batches)
    and, should the reader fail, the exception to FAILED before it exits. The kernel's
    counts (losses, records of another size, discarded records) stay readable after
    stop(). OBJ is the module's backend object; NAME names the stream in warnings."""

    poll_timeout = 0.5  # seconds; a safety net only: the eventfd wakes the thread on stop

    def __init__(self, obj, table: str, rtype: RecordType, name: str, deliver, failed, perf_pages: int = DEFAULT_PERF_PAGES):
        self.name = name
        self.rtype = rtype
        self._deliver, self._failed = deliver, failed
        self._stopping = False
        self._stopped = False
        self._size_warned = False
        self._reader_stats = {"kernel_lost": 0, "variable": 0, "discarded": 0}
        self._lost_base = 0
        self._lost_final: int | None = None
        self._lost_fd = self._lost_slot = None
        self._lost_size = 0
        counter = obj.loss_counter(table)  # (fd, slot, slots) of the front end's per-CPU loss counter
        if counter is not None:
            self._lost_fd, self._lost_slot, self._lost_size = counter
        map_fd = obj.map_handle(table).fd
        if int(libbpf.fdinfo(map_fd)["map_type"]) == MapType.RINGBUF:
            self.kind = "ringbuf"
            self._reader = RingReader(map_fd, rtype)
            self._fds = [map_fd]
        else:
            self.kind = "perf"
            self._reader = PerfReader(obj, table, rtype, perf_pages)
            self._fds = self._reader.fds()
        self.loss_counted = self._lost_fd is not None or self.kind == "perf"
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name=f"bpfmagic-stream-{name}", daemon=True)
        self._thread.start()

    # -------------------------------------------------- the thread
    def _run(self) -> None:
        ep = select.epoll()
        try:
            ep.register(self._wake, select.EPOLLIN)
            for fd in self._fds:
                ep.register(fd, select.EPOLLIN)
            while not self._stopping:
                ep.poll(self.poll_timeout)
                drained = self._drain()
                pause = self._reader.pause(drained) if drained else 0.0
                if pause > 0:
                    time.sleep(pause)
            self._drain()  # what arrived up to the stop
        except BaseException as e:  # a stream must not die silently, nor leave wait() hanging
            self._failed(e)
        finally:
            ep.close()
            self._deliver = self._failed = None  # they hold the stream: no cycle once the thread is done

    def _drain(self) -> int:
        batches = self._reader.read()
        if self._reader.variable and not self._size_warned:
            self._size_warned = True
            _warn(
                f"{self.name}: records of {self._reader.variable_length} bytes arrived where its struct has "
                f"{self.rtype.itemsize} ({self.rtype}); they are zero-padded or cut. If the struct has "
                f"bit-fields or packed/aligned fields, its columns are wrong"
            )
        if not batches:
            return 0
        self._deliver(batches)
        return sum(len(b) for b in batches)

    @property
    def alive(self) -> bool:
        """Whether the thread still runs."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """The thread drains what is in the buffer, exits and is joined (unless this is
        it); the reader (mmaps, perf buffers) is released; the counts are kept. Once."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping = True
        with contextlib.suppress(OSError):
            os.eventfd_write(self._wake, 1)
        if self._thread is not threading.current_thread():
            self._thread.join()
        self._lost_final = self._read_lost() if self._lost_fd is not None else None
        if self._reader is not None:
            self._reader_stats = self._live_reader_stats(self._reader)
            self._reader.close()
            self._reader = None
        with contextlib.suppress(OSError):
            os.close(self._wake)
        self._lost_fd = None

    # -------------------------------------------------- what the kernel counted
    def _read_lost_raw(self) -> int:
        if self._lost_fd is None:
            return 0
        return libbpf.percpu_u64_sums(self._lost_fd, self._lost_size)[self._lost_slot]

    def _read_lost(self) -> int:
        return self._read_lost_raw() - self._lost_base

    def reset_lost(self) -> None:
        """Count losses from zero from now on (the stream was cleared)."""
        self._lost_base = self._read_lost_raw() if self._lost_final is None else self._lost_final

    @property
    def lost(self) -> int | None:
        """Records the program could not write since reset_lost(); None when not ``loss_counted``."""
        if not self.loss_counted:
            return None
        if self._lost_final is not None:
            return self._lost_final
        if self._lost_fd is None:
            return self.stat("kernel_lost")
        return self._read_lost()

    @staticmethod
    def _live_reader_stats(r) -> dict:
        return {"kernel_lost": getattr(r, "kernel_lost", 0), "variable": r.variable, "discarded": r.discarded}

    def stat(self, key: str) -> int:
        """The reader's count KEY: kernel_lost (a perf buffer's LOST records), variable
        (records of another length than the struct), discarded (ring records discarded)."""
        reader = self._reader
        return self._reader_stats[key] if reader is None else self._live_reader_stats(reader)[key]
