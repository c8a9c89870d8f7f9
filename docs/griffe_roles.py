"""A griffe extension for the API reference: reST-style roles in docstrings become cross-references.

The docstrings write ``:func:`bench.run.store.writer``` and ``:class:`~bench.core.case.Case```
(Sphinx's roles) inside Google-ish prose. Markdown would show the role's name as text; this turns
each one into an optional autoref: a link where the target is documented in the site, plain code
where it is not (so ``mkdocs build --strict`` does not fail on a target the reference leaves out).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|data|attr|exc|obj|const):`(~?)([\w.]+)(?:\(\))?`")


def _autoref(match: re.Match[str], module: str) -> str:
    short, target = match.group(1), match.group(2)
    title = target.rsplit(".", 1)[-1] if short else target
    identifier = target if "." in target else f"{module}.{target}"  # a bare name: one of its own module
    return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'


class Roles(griffe.Extension):
    """Rewrite the roles of every docstring when its object is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None or ":`" not in obj.docstring.value:
            return
        module = obj.module.path if not obj.is_module else obj.path
        obj.docstring.value = ROLE.sub(lambda m: _autoref(m, module), obj.docstring.value)
