"""The documentation: the README stays a front door, its links land, every page is in the site.

The site itself (mkdocs.yml, docs/) is built with ``mkdocs build --strict`` in CI; the last test
does the same here when the ``docs`` extra is installed.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"

# [text](target) and ![alt](target), not inside code: what GitHub and MkDocs turn into links.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _links(path: Path) -> list[str]:
    return LINK.findall(_prose(path.read_text(encoding="utf-8")))


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)  # http:, https:, mailto: are not files


def _slug(heading: str) -> str:
    """The anchor GitHub and MkDocs give a heading (ASCII headings: both agree)."""
    text = re.sub(r"`", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text))


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def _nav_pages() -> list[str]:
    """The pages named in mkdocs.yml's nav (``Title: page.md`` entries)."""
    text = MKDOCS_YML.read_text(encoding="utf-8")
    nav = text[text.index("\nnav:") :]
    return re.findall(r":\s*([\w./-]+\.md)\s*$", nav, re.M)


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 250, f"README.md has {len(lines)} lines: move the detail into a page of docs/"


def test_readme_quickstart_is_install_and_run_then_test():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## Quickstart\n\n```bash\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert commands == ['pip install torch==2.13.0 -e ".[dev,deploy]" && vptbench run', "pytest"]


def test_every_relative_link_in_the_readme_resolves():
    broken = []
    for target in filter(_relative, _links(README)):
        file, _, anchor = target.partition("#")
        dest = (README.parent / file) if file else README
        if not dest.is_file():
            broken.append(f"{target}: no file {dest.relative_to(ROOT)}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: {dest.relative_to(ROOT)} has no heading with anchor #{anchor}")
    assert not broken, "README.md: " + "; ".join(broken)


def test_the_readme_links_every_page():
    linked = {Path(t.partition("#")[0]).name for t in _links(README) if t.startswith("docs/")}
    missing = sorted(p.name for p in DOCS.glob("*.md") if p.name not in linked)
    assert not missing, f"pages the README does not link: {missing}"


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    nav = _nav_pages()
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert sorted(set(nav)) == pages, (
        f"in docs/ but not in the nav: {sorted(set(pages) - set(nav))}; "
        f"in the nav but not in docs/: {sorted(set(nav) - set(pages))}"
    )
    assert len(nav) == len(set(nav)), "a page is in the nav twice"


def test_every_relative_link_between_pages_resolves():
    """What ``mkdocs build --strict`` checks, for a checkout without the docs extra."""
    broken = []
    for page in sorted(DOCS.glob("*.md")):
        for target in filter(_relative, _links(page)):
            file, _, anchor = target.partition("#")
            dest = (page.parent / file) if file else page
            if not dest.is_file() or DOCS not in dest.resolve().parents:
                broken.append(f"{page.name}: {target} (not a file of docs/)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "; ".join(broken)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent is missing
        return False


@pytest.mark.skipif(
    not all(_installed(m) for m in ("mkdocs", "material", "mkdocstrings_handlers.python")),
    reason='the docs extra is not installed (pip install -e ".[docs]")',
)
def test_the_site_builds_with_strict(tmp_path):
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(MKDOCS_YML),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    reference = (tmp_path / "site" / "reference" / "index.html").read_text(encoding="utf-8")
    # The API reference is generated, with its docstrings' roles turned into code or links.
    assert 'id="bench.core.results.record"' in reference and 'id="backbones.create"' in reference
    assert ":func:`" not in reference and ":class:`" not in reference
    assert (tmp_path / "site" / "paper-cpu-efficiency-accuracy.png").is_file()


def test_extras_keep_the_quickstart_to_running_and_testing_and_ci_installs_the_rest():
    """The Quickstart's `dev` extra is what the tests need; lint tools and optuna are extras of their own, which
    .ci/run installs and runs; Getting started says what each extra is for."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]

    def names(extra: str) -> set[str]:
        return {re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower() for req in extras[extra]}

    assert not names("dev") & {"ruff", "mypy", "import-linter", "optuna"}
    assert {"pytest", "hypothesis"} <= names("dev")
    assert names("lint") == {"ruff", "mypy", "import-linter"} and names("search") == {"optuna"}
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    installed = re.search(r'-e "\.\[([\w,]+)\]"', ci).group(1).split(",")
    assert sorted(installed) == sorted(extras), "CI installs every extra"
    for command in ("ruff check", "mypy", "lint-imports", "pytest"):
        assert re.search(rf"^{re.escape(command)}\b", ci, re.M), command
    table = (DOCS / "getting-started.md").read_text(encoding="utf-8").split("## Extras", 1)[1]
    for extra in extras:
        assert f"| `{extra}` |" in table, f"Getting started does not say what `{extra}` is for"
    assert "chromium" in table.lower()  # the browser test's one dependency pip cannot install


# Words that tell the project's development history rather than what the tool does (the docs say what is,
# with each figure's date, machine and command).
HISTORY = re.compile(r"\bthis round\b|\bprevious round\b|\bthis session\b|\bbefore this (change|commit)\b|\bpredates\b"
                     r"|\bwe\b|\bour\b|\bno longer\b|\bused to\b|\bthe engineer\b|\bearlier version", re.I)  # fmt: skip


def test_the_docs_do_not_narrate_the_development_history():
    found = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}" for path in [README, *sorted(DOCS.glob("*.md"))]
             for i, line in enumerate(_prose(path.read_text(encoding="utf-8")).splitlines(), start=1)
             if HISTORY.search(line)]  # fmt: skip
    assert not found, "\n".join(found)
