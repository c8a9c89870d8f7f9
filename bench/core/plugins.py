"""Plugins: the user's modules that register backbones, pruners or recoverers, in every process.

A plugin is a Python module that registers what it brings when imported
(``backbones.register``, ``backbones.register_pruner``, ``backbones.register_recoverer``).
Three ways to name one, all loaded by every command before it does anything:

- ``--plugin MODULE`` (repeatable): a module name (``mylab.pruners``) or a ``.py`` file
  (``./my_pruner.py``); module names are also looked up in the current directory, as
  ``python -m`` would (after the rest of the path);
- ``VPTBENCH_PLUGINS``: the same, separated by commas (or ``os.pathsep``);
- the ``vptbench.plugins`` entry-point group of installed distributions, e.g. in
  ``pyproject.toml``: ``[project.entry-points."vptbench.plugins"] mylab = "mylab.pruners"``.

Workers (a local subprocess per case, a Slurm job) import the same modules before their case
runs: :func:`for_task` lists them as :class:`Plugin` s, each with the directory to put on
``sys.path`` first, so a module next to the user's script is found there too. A plugin that fails
to import is a user mistake: :class:`~bench.core.errors.UsageError`, one line.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

ENV = "VPTBENCH_PLUGINS"
GROUP = "vptbench.plugins"


@dataclass(frozen=True)
class Plugin:
    """A module to import, and the directory to put on ``sys.path`` first (None: already importable)."""

    module: str
    path: str | None = None
    origin: str = ""  # how the user named it: "--plugin x.py", "VPTBENCH_PLUGINS", "entry point mylab"

    def activate(self) -> None:
        """Import the module (once per process); UsageError naming the plugin if it fails."""
        if self.path and self.path not in sys.path:
            sys.path.insert(0, self.path)
        try:
            importlib.import_module(self.module)
        except Exception as e:  # anything a plugin raises on import is the plugin's problem
            text = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise UsageError(
                f"plugin {self.module!r} ({self.origin or 'plugin'}) failed to import: {type(e).__name__}"
                + (f": {text}" if text else "")
            ) from None


_LOADED: dict[str, Plugin] = {}  # module -> plugin, in load order: what workers import too


def _from_spec(spec: str, origin: str) -> Plugin:
    """A plugin from ``--plugin``/``VPTBENCH_PLUGINS`` text: a module name or a path to a .py file."""
    text = spec.strip()
    if text.endswith(".py") or os.sep in text:
        path = Path(text).expanduser().resolve()
        if not path.is_file() or path.suffix != ".py":
            raise UsageError(f"plugin {spec!r} ({origin}): no such Python file")
        if not path.stem.isidentifier():
            raise UsageError(f"plugin {spec!r} ({origin}): {path.name} is not an importable module name")
        return Plugin(path.stem, str(path.parent), origin)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", text):
        raise UsageError(f"plugin {spec!r} ({origin}): expected a module name (mylab.pruners) or a .py file")
    return Plugin(text, None, origin)


def from_env(value: str | None = None) -> list[Plugin]:
    """The plugins named in ``VPTBENCH_PLUGINS`` (or ``value``)."""
    value = os.environ.get(ENV, "") if value is None else value
    items = [s for s in re.split(rf"[,{re.escape(os.pathsep)}]", value) if s.strip()]
    return [_from_spec(s, ENV) for s in items]


def from_entry_points() -> list[Plugin]:
    """The modules of the ``vptbench.plugins`` entry points of the installed distributions."""
    return [Plugin(ep.module, None, f"entry point {ep.name}") for ep in importlib.metadata.entry_points(group=GROUP)]


def load(cli: Sequence[str] = ()) -> list[Plugin]:
    """Import the ``--plugin`` modules, then ``VPTBENCH_PLUGINS``, then the entry points.

    Returns them all (each imported once, also over repeated calls); UsageError for the first
    that cannot be imported.
    """
    found = [_from_spec(s, f"--plugin {s}") for s in cli] + from_env() + from_entry_points()
    if found and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # a module next to the user is found, as `python -m` would (last)
    for plugin in found:
        if plugin.module in _LOADED:
            continue
        plugin.activate()
        # Workers import it from where it was found here, whatever their own path and directory.
        _LOADED[plugin.module] = Plugin(plugin.module, plugin.path or for_module(plugin.module).path, plugin.origin)
    return list(_LOADED.values())


def loaded() -> list[Plugin]:
    """The plugins this process has loaded, in order."""
    return list(_LOADED.values())


def describe() -> list[dict[str, str | None]]:
    """The loaded plugins for ``meta.json``: module, where it was imported from, how it was named."""
    return [{"module": p.module, "path": p.path, "origin": p.origin} for p in _LOADED.values()]


def for_module(module: str) -> Plugin:
    """A plugin that imports ``module`` (already imported here) in another process.

    Its ``path`` is the directory that holds its top-level package, so a worker finds a module
    that sits next to the user's script although the script's directory is not on its path.
    """
    mod = sys.modules.get(module)
    file = getattr(mod, "__file__", None)
    if not file:
        return Plugin(module, None, "backbone module")
    root = Path(file).resolve().parent
    for _ in range(module.count(".") + (Path(file).name == "__init__.py")):
        root = root.parent
    return Plugin(module, str(root), "backbone module")


def for_task(modules: Iterable[str] = ()) -> tuple[Plugin, ...]:
    """What a worker imports before its case: the loaded plugins, then ``modules`` (user backbones)."""
    out = dict(_LOADED)
    for m in modules:
        out.setdefault(m, for_module(m))
    return tuple(out.values())


def activate_all(plugins: Iterable[Plugin]) -> None:
    """Import ``plugins`` in this process (a worker), in order."""
    for p in plugins:
        if p.module not in _LOADED:
            p.activate()
            _LOADED[p.module] = p
