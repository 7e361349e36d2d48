"""The Session's instruments: kernel run stats (the bpf_enable_stats fd it holds), the
per-call-site counters (sites.py), the path maps (experiments/paths.py), and the per-CPU
cursor of chains described as data (experiments/chain.py); whether cells loaded from
now on record paths. ``using()`` sets them for a block and puts them back after (the
benches measure bare calls inside ``with session.instrumentation(stats=False, paths=False)``).
What a backend needs of them for one load is a ``backends.LoadContext``."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

from .errors import EnvironmentProblem
from .kernel import libbpf, pins
from .sites import CallSites


class Instrumentation:
    """See the module's docstring. ``pin_dir``: the session's pin directory, made on first call."""

    def __init__(self, pin_dir: Callable[[], str], lock: threading.RLock):
        self.lock = lock
        self._pin_dir = pin_dir
        self._stats_fd: int | None = None
        self.sites = CallSites(self.pin_counter_map)  # per call site counters, their map made on first use
        self.path_maps = None  # experiments.paths.PathMaps once paths were enabled
        self.cursor: tuple[int, str] | None = None  # (fd, pin) of chains' per-CPU position
        self.paths_enabled = False

    # ------------------------------------------------------------ run stats
    def enable_stats(self) -> None:
        with self.lock:
            if self._stats_fd is None:
                try:
                    self._stats_fd = libbpf.enable_stats()
                except OSError as e:
                    raise EnvironmentProblem(
                        f"the kernel refused to turn run-time stats on ({e.strerror}); it needs CAP_SYS_ADMIN or root", errno=e.errno
                    ) from None

    def disable_stats(self) -> None:
        with self.lock:  # closed once: a second close could hit a reused fd number
            if self._stats_fd is not None:
                os.close(self._stats_fd)
                self._stats_fd = None

    @property
    def stats_enabled(self) -> bool:
        return self._stats_fd is not None

    # ------------------------------------------------------------ paths, sites, cursor
    def enable_paths(self) -> None:
        with self.lock:
            self.ensure_path_maps()
            self.paths_enabled = True

    def disable_paths(self) -> None:
        self.paths_enabled = False

    def ensure_path_maps(self):
        """The session's path maps, made on first need and after a reset."""
        if self.path_maps is None:
            from .experiments.paths import PathMaps

            self.path_maps = PathMaps.create(self._pin_dir())
        return self.path_maps

    def allocate_sites(self, syntax, req) -> int | None:
        """A base for one load's call-site counters; None when the cell has no tail call,
        counting is off, or the map is full (then only per-slot counts)."""
        if not (req.count_calls or req.paths) or not (syntax.tail_calls or req.paths):
            return None
        if req.paths:
            self.ensure_path_maps()  # freed by a reset while paths stay on
        return self.sites.allocate(syntax, req.name)

    def pin_counter_map(self, fd: int, name: str) -> str:
        """Pin session map FD as calls/NAME; returns the pin. The fd stays the caller's, also
        when the pin fails."""
        pin = os.path.join(self._pin_dir(), "calls", name)
        pins.make_dir(os.path.dirname(pin))  # 0700 whatever the umask, as progarray makes it
        libbpf.obj_pin(fd, pin)
        return pin

    def cursor_map(self) -> tuple[int, str]:
        """(fd, pin) of the per-CPU position a run has in a chain described as data."""
        if self.cursor is None:
            fd = libbpf.map_create(libbpf.BPF_MAP_TYPE_PERCPU_ARRAY, "bm_cursor", 4, 4, 1)
            try:
                self.cursor = (fd, self.pin_counter_map(fd, "bm_cursor"))
            except OSError:
                os.close(fd)
                raise
        return self.cursor

    def free(self) -> None:
        """The per-call-site counters, the path maps and the cursor (made again by the next load that needs them)."""
        self.sites.free()
        if self.path_maps is not None:
            self.path_maps.close()
            self.path_maps = None
        if self.cursor is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.cursor[1])
            os.close(self.cursor[0])
            self.cursor = None

    # ------------------------------------------------------------ for a block
    @contextlib.contextmanager
    def using(self, stats: bool | None = None, paths: bool | None = None) -> Iterator[Instrumentation]:
        """Run stats on or off (``stats``), path recording of the cells loaded in the block on
        or off (``paths``), for the block; None leaves one as it is. Both are put back after."""
        had_stats, had_paths = self.stats_enabled, self.paths_enabled
        if stats is False:
            self.disable_stats()
        elif stats:
            self.enable_stats()
        if paths:
            self.enable_paths()
        elif paths is False:
            self.paths_enabled = False
        try:
            yield self
        finally:
            self.paths_enabled = had_paths
            if had_stats and not self.stats_enabled:
                self.enable_stats()
            elif not had_stats and self.stats_enabled:
                self.disable_stats()
