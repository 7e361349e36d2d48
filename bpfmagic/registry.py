"""The Session's registry: what it has loaded (modules), the session prog arrays, the
chains described as data, and the lookups by name, under the one lock every change
and read holds. It creates arrays, frees modules (their slots and the pins they
made) and unloads by name. ``SessionPins``: the session's directory in bpffs."""

from __future__ import annotations

import contextlib
import os
import threading

from . import progarray as prog_arrays
from .errors import EnvironmentProblem, NotFound, SlotError, UsageProblem
from .kernel import pins
from .kernel.progtypes import PROG_TYPE_NAMES, prog_type_name, prog_type_value
from .module import Module


class SessionPins:
    """/sys/fs/bpf/bpfmagic/<pid>/s<N>: where a session pins its arrays and counters
    (pins.py: a trusted root, a directory locked for the process's life), made on first
    need; and the by-name pins its loads made, unlinked once no module holds them."""

    def __init__(self, serial: int):
        self.serial = serial
        self.path: str | None = None
        self.made: set[str] = set()  # pins its loads made for maps pinned by name (LIBBPF_PIN_BY_NAME)

    def directory(self) -> str:
        if self.path is None:
            from .kernel import env  # late: `python -m bpfmagic.kernel.env` must not find it loaded already

            status = env.ensure_bpffs()
            if not env.is_mounted("/sys/fs/bpf", "bpf"):
                raise EnvironmentProblem(f"bpffs is not mounted and could not be ({status}); run: mount -t bpf bpf /sys/fs/bpf")
            self.path = pins.process_dir().session_dir(self.serial)
        return self.path

    def name_dir(self) -> str:
        """<directory>/by-name: where --core cells' LIBBPF_PIN_BY_NAME maps are pinned (libbpf's
        pin root), so that cells of this session share them and nothing another process pinned
        under /sys/fs/bpf is taken in their place. Removed with the session."""
        path = os.path.join(self.directory(), pins.NAME_PINS)
        pins.make_dir(path)
        return path

    def record_made(self, made: dict[str, bool]) -> None:
        """{path: made by this load} of a load's by-name pins: the ones it made are the session's to remove."""
        self.made.update(path for path, new in made.items() if new)

    def release(self, paths, held: set[str]) -> None:
        for path in paths:
            if path in self.made and path not in held:
                pins.remove_pin(path)
                self.made.discard(path)

    def empty_by_name(self) -> None:
        """Whatever a load pinned by name and no module recorded (a load libbpf failed half-way)."""
        if self.path:
            pins.empty_dir(os.path.join(self.path, pins.NAME_PINS))
        self.made.clear()

    def remove(self) -> None:
        """The session's directories, once empty. The process's own directory stays (locked)
        until the process dies: its reaper removes it."""
        if self.path:
            for path in (os.path.join(self.path, "calls"), os.path.join(self.path, pins.NAME_PINS), self.path):
                with contextlib.suppress(OSError):
                    os.rmdir(path)


class Registry:
    """modules, arrays, chains (each by name) and the lock; see the module's docstring."""

    def __init__(self, pin_space: SessionPins, describe_privileges):
        self.lock = threading.RLock()
        self.modules: dict[str, Module] = {}
        self.arrays: dict[str, prog_arrays.ProgArray] = {}
        self.chains: dict = {}  # name -> experiments.chain.Chain
        self.pins = pin_space
        self.on_unload: list = []  # callables run with a Module before it is freed
        self._describe_privileges = describe_privileges  # for the error of a pin directory refused

    # ------------------------------------------------------------ lookups
    def module(self, name: str) -> Module:
        try:
            return self.modules[name]
        except KeyError:
            raise NotFound(f"no module {name!r} (modules: {', '.join(self.modules) or 'none'})", "module", name, tuple(self.modules)) from None

    def array(self, name: str) -> prog_arrays.ProgArray:
        try:
            return self.arrays[name]
        except KeyError:
            known = ", ".join(self.arrays) or "none yet"
            raise SlotError(
                f"no prog array {name!r} in this session (arrays: {known}); declare it with "
                f"BPF_PROG_ARRAY({name}, N) in a cell or `%bpf progarray {name} N`",
                array=name,
                hint=f"%bpf progarray {name} N",
            ) from None

    def observers(self, name: str) -> list[tuple[str, str]]:
        """(module, target) of the fentry/fexit/freplace attachments other modules hold on module NAME's programs."""
        return [
            (m.name, att.target.text)
            for m in self.modules.values()
            if m.name != name
            for att in m.attachments
            if att.target.traced_program and att.target.traced_program[0] == name
        ]

    def unload_advice(self, array_name: str) -> str:
        """How to free session array ARRAY_NAME: the modules that use it go first."""
        users = [
            m.name
            for m in self.modules.values()
            if array_name in m.tables or any(d.name == array_name for d in m.syntax.arrays) or m.syntax.uses(array_name)
        ]
        steps = [f"`%bpf unload {n}`" for n in users] + [f"`%bpf unload {array_name}`"]
        return ", ".join(steps) + " (or `%bpf reset`)"

    # ------------------------------------------------------------ arrays
    def progarray(self, name: str, size: int, type: str | None, keys: str | None, names: dict[str, int | None]) -> prog_arrays.ProgArray:
        """Create the session array NAME (or return it when it exists with the same size);
        NAMES: slot names for indices (None: the lowest free one). Every argument is checked
        before anything is created or changed."""
        prog_arrays.check_name("array", name)  # the C name, whole: the kernel keeps 15 characters of it
        if not isinstance(size, int) or not 1 <= size <= prog_arrays.MAX_ARRAY_SIZE:
            raise UsageProblem(f"array {name}: size must be an integer between 1 and {prog_arrays.MAX_ARRAY_SIZE}", array=name)
        if type is not None:
            try:
                type = prog_type_name(PROG_TYPE_NAMES[prog_type_value(type)])
            except ValueError as e:
                raise UsageProblem(f"array {name}: {e}", array=name) from None
        if keys not in (None, "syscalls"):
            raise UsageProblem(f"array {name}: keys can be 'syscalls' (got {keys!r})", array=name)
        if names and (keys == "syscalls" or (name in self.arrays and self.arrays[name].keys == "syscalls")):
            raise SlotError(f"{name} is keyed by syscall names; it takes no --slots", array=name)
        for key, index in names.items():
            prog_arrays.check_name("slot", key)
            if index is not None and not 0 <= index < size:
                raise SlotError(f"{name}[{key}={index}]: index out of range 0..{size - 1}", array=name, key=key)
        with self.lock:
            array = self.arrays.get(name)
            if array is not None:
                self._check_existing(array, size, type, keys, names)
                if keys is not None:
                    array.keys = keys
            else:
                array = self.arrays[name] = self._create(name, size, type, keys)
            if type is not None:
                array.declared_type = type
            for key, index in names.items():
                if index is None:
                    array.resolve(key, allocate=True)
                else:
                    array.names[key] = index
            return array

    def _check_existing(self, existing: prog_arrays.ProgArray, size: int, type, keys, names) -> None:
        name = existing.name
        if existing.size != size:
            raise SlotError(
                f"array {name} exists with {existing.size} slots, not {size}; `%bpf unload {name}` or `%bpf reset` first",
                array=name,
                hint=f"%bpf unload {name}",
            )
        if type is not None and existing.owner_type and existing.owner_type != type:
            raise SlotError(f"array {name} already holds {existing.owner_type} programs, not {type}", array=name)
        if keys is not None and keys != existing.keys and (existing.names or existing.keys is not None):
            compiled_in = {r.key for m in self.modules.values() for r in m.syntax.slot_refs if r.array == name}
            if keys != "syscalls" or not existing.rekey_to_syscalls(compiled_in):
                named = ", ".join(f"{n}={i}" for n, i in existing.names.items()) or existing.keys
                raise SlotError(
                    f"array {name} already has keys ({named}); run `%bpf progarray {name} "
                    f"{existing.size} --keys {keys}` before the cells that use it, or `%bpf reset`",
                    array=name,
                )
        for key, index in names.items():
            owner = next((n for n, i in existing.names.items() if i == index and n != key), None)
            if index is not None and owner:
                raise SlotError(f"{name}[{index}] is already named {owner!r}", array=name, key=key)

    def _create(self, name: str, size: int, type, keys) -> prog_arrays.ProgArray:
        try:
            directory = self.pins.directory()
        except PermissionError as e:  # said as what it is, not a traceback
            raise EnvironmentProblem(
                f"array {name}: cannot create the pin directory "
                f"{e.filename if os.path.isabs(str(e.filename or '')) else pins.PIN_ROOT} "
                f"({e.strerror}); session prog arrays are pinned in bpffs, and this process has "
                f"{self._describe_privileges()}. Run Jupyter as root, or have root create "
                f"{pins.PIN_ROOT} owned by this user",
                array=name,
                errno=e.errno,
            ) from None
        return prog_arrays.create(name, size, os.path.join(directory, name), type, keys, lock=self.lock)

    # ------------------------------------------------------------ teardown
    def free_module(self, module: Module, successor: Module | None = None) -> list[str]:
        """Free MODULE; returns the slots that emptied (ARRAY[KEY] with what was in them).
        SUCCESSOR: the new version of a re-run cell, which keeps the slots it took and the
        pins it shares with MODULE."""
        for hook in list(self.on_unload):
            with contextlib.suppress(Exception):  # a hook's failure must not keep the module loaded
                hook(module)
        emptied = [line for array in self.arrays.values() for line in array.release(module)]
        module.free()
        self.release_pins(module, successor)
        return emptied

    def release_pins(self, module: Module, successor: Module | None = None) -> None:
        """Unlink the pins this session made for MODULE's maps that no other loaded module
        (nor SUCCESSOR, the version replacing it) holds. Pins it found and reused stay."""
        held = {
            path
            for m in [*self.modules.values(), successor]
            if m is not None and m is not module and m.object is not None and not m.closed
            for path in m.object.pins
        }
        self.pins.release(module.object.pins if module.object is not None else (), held)

    def unload(self, name: str) -> list[str]:
        """Detach and free module NAME (or the prog array NAME when no module has that name)."""
        with self.lock:
            if name in self.modules:
                observers = self.observers(name)
                if observers:
                    # Their links would keep the freed programs running in the kernel, traced by no one's code
                    users = ", ".join(f"{m} ({t})" for m, t in observers)
                    raise UsageProblem(f"{name} is traced by {users}: unload {', '.join(sorted({m for m, _ in observers}))} first")
                return self.free_module(self.modules.pop(name))
            if name in self.arrays:
                users = [m.name for m in self.modules.values() if name in m.tables]
                if users:
                    raise UsageProblem(f"array {name} is used by {', '.join(users)}: unload those first", array=name)
                self.arrays.pop(name).close()
                return []
            raise UsageProblem(
                f"nothing named {name!r} is loaded (modules: {', '.join(self.modules) or 'none'}; arrays: {', '.join(self.arrays) or 'none'})"
            )

    def reset(self) -> None:
        """Every module freed, every array closed, the chains forgotten, the session's by-name pins gone."""
        with self.lock:
            for name in list(self.modules):
                self.free_module(self.modules.pop(name))
            for name in list(self.arrays):
                self.arrays.pop(name).close()
            self.chains.clear()
            self.pins.empty_by_name()

    def __repr__(self) -> str:
        return f"<Registry: modules {', '.join(self.modules) or '-'}; arrays {', '.join(self.arrays) or '-'}>"
