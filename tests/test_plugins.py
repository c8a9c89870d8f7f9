"""Plugins: --plugin, VPTBENCH_PLUGINS and entry points, loaded here and in every worker."""

import importlib.metadata
import json
import sys
import textwrap

import pytest

import backbones
from bench import cli
from bench.core import plugins
from bench.core.errors import UsageError

PRUNER = textwrap.dedent('''
    import backbones

    @backbones.register_pruner("{name}")
    def _pruner(t):
        """Keep the earliest frames."""
        return -t.pos.float()
''')


@pytest.fixture
def clean(monkeypatch):
    """A fresh plugin state; the modules and pruners a test loads are forgotten afterwards."""
    monkeypatch.setattr(plugins, "_LOADED", {})
    monkeypatch.delenv(plugins.ENV, raising=False)
    before, path = set(sys.modules), list(sys.path)
    yield
    for name in [p for p in backbones.pruners() if p.startswith("plug_")]:
        backbones.unregister_pruner(name)
    for name in set(sys.modules) - before:
        if name.startswith("plug_") or name.startswith("plugpkg"):
            del sys.modules[name]
    sys.path[:] = path


def _write(directory, module, pruner):
    path = directory / f"{module}.py"
    path.write_text(PRUNER.format(name=pruner))
    return path


def test_plugin_file_registers_its_pruner_for_the_command(tmp_path, clean, capsys):
    path = _write(tmp_path, "plug_first", "plug_first")
    assert cli.main(["list", "pruners", "--json", "--plugin", str(path)]) == 0
    names = [p["name"] for p in json.loads(capsys.readouterr().out)]
    assert names[:5] == ["tps", "tpc", "tpa", "tpmo", "tome"] and "plug_first" in names
    assert plugins.loaded() == [plugins.Plugin("plug_first", str(tmp_path), f"--plugin {path}")]


def test_env_variable_and_module_names_are_found_next_to_the_user(tmp_path, clean, monkeypatch):
    _write(tmp_path, "plug_env", "plug_env")
    (tmp_path / "plugpkg").mkdir()
    (tmp_path / "plugpkg" / "__init__.py").write_text("")
    _write(tmp_path / "plugpkg", "plug_sub", "plug_sub")
    monkeypatch.chdir(tmp_path)  # module names resolve in the current directory, as `python -m` does
    monkeypatch.setenv(plugins.ENV, "plug_env, plugpkg.plug_sub")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    loaded = plugins.load()
    assert {"plug_env", "plug_sub"} <= set(backbones.pruners())
    # Workers import them from where they were found, whatever their own directory.
    assert [(p.module, p.path) for p in loaded] == [("plug_env", str(tmp_path)), ("plugpkg.plug_sub", str(tmp_path))]
    assert plugins.load() == loaded  # imported once


def test_entry_points_are_loaded(tmp_path, clean, monkeypatch):
    _write(tmp_path, "plug_ep", "plug_ep")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint(name="lab", value="plug_ep", group=plugins.GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [ep] if group == plugins.GROUP else [])
    assert [p.origin for p in plugins.load()] == ["entry point lab"]
    assert "plug_ep" in backbones.pruners()


@pytest.mark.parametrize(
    "source, message",
    [
        ("raise RuntimeError('no GPU here')", r"plugin 'plug_bad' \(--plugin .*\) failed to import: RuntimeError: no GPU here"),
        ("import not_a_module_anywhere", "failed to import: ModuleNotFoundError: No module named 'not_a_module_anywhere'"),
    ],
)
def test_a_plugin_that_fails_to_import_is_one_line_and_exit_2(tmp_path, clean, capsys, source, message):
    path = tmp_path / "plug_bad.py"
    path.write_text(source + "\n")
    assert cli.main(["list", "--plugin", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert __import__("re").search(message, err)


def test_plugin_names_that_cannot_be_modules_are_usage_errors(tmp_path, clean):
    with pytest.raises(UsageError, match="no such Python file"):
        plugins.load([str(tmp_path / "missing.py")])
    with pytest.raises(UsageError, match="expected a module name"):
        plugins.load(["not a module"])


def test_workers_get_the_loaded_plugins_and_the_user_backbone_modules(tmp_path, clean):
    path = _write(tmp_path, "plug_task", "plug_task")
    plugins.load([str(path)])
    (tmp_path / "plugpkg").mkdir()
    (tmp_path / "plugpkg" / "__init__.py").write_text("")
    (tmp_path / "plugpkg" / "net.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    __import__("plugpkg.net")
    task = plugins.for_task(["plugpkg.net"])
    assert [(p.module, p.path) for p in task] == [("plug_task", str(tmp_path)), ("plugpkg.net", str(tmp_path))]


def test_a_case_task_imports_its_plugins_before_the_case_as_a_slurm_job_would(tmp_path, clean):
    from bench.core.case import Case
    from bench.core.results import read_records
    from bench.run.jobs import BenchJob
    from bench.run.store import new_part
    from bench.run.task import CaseTask

    folder = tmp_path / "lab"
    folder.mkdir()
    _write(folder, "plug_worker", "plug_worker")  # not imported in this process yet
    case = Case("mixste", "single", frames=27, size="tiny", pruner="plug_worker")
    job = BenchJob(metrics=("params",))
    part = new_part(tmp_path, case, "r", job.expected(case), "")
    task = CaseTask(case, job, "r", str(tmp_path), str(part), plugins=(plugins.Plugin("plug_worker", str(folder)),))
    assert "plug_worker" not in backbones.pruners()
    task()
    (rec,) = read_records(tmp_path)
    assert (rec["metric"], rec["status"], rec["pruner"]) == ("params", "ok", "plug_worker")


@pytest.mark.parametrize(("command", "option"), [(["profile"], "--pruner"), (["run"], "--pruners"),
                                                 (["accuracy"], "--pruners"), (["sweep"], "--pruners")])  # fmt: skip
def test_help_lists_every_registered_pruner_and_recoverer(command, option, tmp_path, clean, capsys):
    """--help reads the registries when it is printed: built-ins, one registered here, and a --plugin's before it."""
    backbones.register_pruner("plug_here")(lambda t: -t.pos.float())
    path = _write(tmp_path, "plug_file", "plug_file")
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command, "--plugin", str(path), "--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    pruners = " | ".join(backbones.pruners())
    assert {"tps", "tpc", "tpa", "tpmo", "tome", "plug_here", "plug_file"} <= set(backbones.pruners())
    assert pruners in help_text, help_text
    assert " | ".join(backbones.recoverers()) in help_text
    assert help_text.index(option) < help_text.index(pruners)
