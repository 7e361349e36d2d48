"""The one way from a name to a map view: ``view_of(session, module, table)``
(``module["t"]``, ``module.map("t")``) and ``find(session, name)``
(``Session.map``) open the view class of the map's type, as BCC's ``Table()``
picks a table class."""

from __future__ import annotations

from ..errors import NotFound, UsageProblem
from . import kinds  # noqa: F401  (registers the view class of each map type)
from .kinds import SessionArrayView
from .view import MapView, global_sections, view_class


def open_view(session, module, table: str) -> MapView:
    """The view of map TABLE of MODULE, of the class its map type calls for."""
    sections = global_sections(module)
    is_globals = table not in module.tables and table in sections
    map_type = module.object.map_handle(sections[table] if is_globals else table).map_type
    return view_class(map_type, is_globals)(session, module, table)


def view_of(session, module, table: str) -> MapView:
    """The map TABLE of MODULE: a table, or (--core) a global-variable section (bss, data, rodata)."""
    table = table.lstrip(".")  # ".bss" and "bss" alike
    sections = global_sections(module)
    if table not in module.tables and table not in sections:
        names = module.tables + [f".{g}" for g in sections]
        raise NotFound(f"{module.name} has no table {table!r} (tables: {', '.join(names) or 'none'})", "table", table, tuple(names))
    return open_view(session, module, table)


def find(session, name: str) -> MapView:
    """The map NAME: TABLE when only one module has it, else MODULE.TABLE."""
    mod_name, dot, table = name.partition(".")
    if dot:
        module = session.modules.get(mod_name)
        if module is None:
            raise NotFound(
                f"no module {mod_name!r} (modules: {', '.join(session.modules) or 'none'}); a map of an unloaded module is gone with it",
                "module",
                mod_name,
                tuple(session.modules),
            )
        return view_of(session, module, table)
    owners = [m for m in session.modules.values() if name in m.tables]
    if name in session.arrays and not owners:  # a session prog array no loaded cell declares
        return SessionArrayView(session, name)
    if len(owners) == 1 or (owners and name in session.arrays):  # a session prog array: any declaring cell's view
        return open_view(session, owners[0], name)
    if len(owners) > 1:
        raise UsageProblem(f"several modules have a table {name!r}: name one of {', '.join(f'{m.name}.{name}' for m in owners)}")
    known = [f"{m.name}.{t}" for m in session.modules.values() for t in m.tables]
    raise NotFound(f"no map {name!r}; maps: {', '.join(known) or 'none (no module is loaded)'}", "map", name, tuple(known))
