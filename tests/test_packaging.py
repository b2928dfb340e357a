"""The distribution installs as one top-level package, `mu_llama`, and never collides with PyPI's `encoders`/`adapters`.
Also: imports run one way (encoders/ and adapters/ never reach into mu_llama's own modules; the library never imports
the CLI, recipes or demo; every package sits on a layer and imports only its own layer and those below; no import
cycle, lazy imports counted), and the console script works."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, *, pythonpath: list[Path] | None = None, cwd: Path) -> str:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(map(str, pythonpath))
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (whl,) = out.glob("mu_llama-*.whl")
    return whl


def test_wheel_has_a_single_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"mu_llama"}, top
    assert "mu_llama/encoders/__init__.py" in names
    assert "mu_llama/adapters/__init__.py" in names
    assert not any(n.startswith(("encoders/", "adapters/")) for n in names)


def test_neither_shadows_nor_is_shadowed_by_pypi_namesakes(tmp_path):
    # Stand-ins for PyPI's top-level `encoders` and `adapters`, placed FIRST on sys.path.
    for name in ("encoders", "adapters"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"WHO = 'pypi-{name}'\n")
    code = (
        "import encoders, adapters, mu_llama.encoders as me, mu_llama.adapters as ma;"
        "print(encoders.WHO, adapters.WHO, me.__file__, ma.__file__)"
    )
    # From a neutral directory (not the repo root, which would put our folders on sys.path as plain names).
    who_e, who_a, ours_e, ours_a = _run(code, pythonpath=[tmp_path], cwd=tmp_path).split()
    assert (who_e, who_a) == ("pypi-encoders", "pypi-adapters")
    assert Path(ours_e).resolve() == (ROOT / "encoders" / "__init__.py").resolve()
    assert Path(ours_a).resolve() == (ROOT / "adapters" / "__init__.py").resolve()


def test_installing_us_adds_no_top_level_encoders_or_adapters(tmp_path):
    found = _run("import importlib.util as u; print(u.find_spec('encoders') is None, u.find_spec('adapters') is None)",
                 cwd=tmp_path)
    assert found == "True True"


# The library's layers, bottom first (a package is what sits directly under mu_llama: a subpackage or a module).
# A package may import its own layer and those below, never one above; within a layer the cycle test keeps the
# arrows one way. The signal module sits beside the encoders because their descriptors are one of its callers.
LAYERS: tuple[tuple[str, set[str]], ...] = (
    ("foundation", {"errors", "isolate"}),
    ("parts", {"encoders", "adapters", "signal", "audio", "llm", "facts", "prompts", "decoding", "fusion"}),
    ("emotion, a leaf that the tagger and the generator use", {"emotion"}),
    ("data, measures and figures", {"corpus", "eval", "plots"}),
    ("the model", {"tagger", "model", "tasks", "embed", "convert"}),
    ("applications", {"generate", "label"}),
    ("programs: recipes and the demo", {"recipes", "demo"}),
    ("the command line", {"cli", "__main__"}),
)


def _import_graph():
    """scripts/import_graph.py: the package tree's imports read with ast (lazy ones included)."""
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _imports(path: Path) -> set[str]:
    mods: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.update(f"{node.module}.{a.name}" for a in node.names)   # `from mu_llama import signal` too
    return mods


def test_imports_run_one_way():
    leaf_ok = ("mu_llama.errors", "mu_llama.signal", "mu_llama.encoders", "mu_llama.adapters")
    for folder in ("encoders", "adapters"):
        for f in (ROOT / folder).rglob("*.py"):
            bad = {m for m in _imports(f) if m.startswith("mu_llama") and not m.startswith(leaf_ok)}
            assert not bad, f"{f.relative_to(ROOT)} imports {bad}"
            assert not {m for m in _imports(f) if m.split(".")[0] in ("encoders", "adapters")}, \
                f"{f.relative_to(ROOT)} imports a bare top-level encoders/adapters (PyPI's), not ours"
    for f in [*(ROOT / "mu_llama").rglob("*.py"), *(ROOT / "encoders").rglob("*.py"), *(ROOT / "adapters").rglob("*.py")]:
        rel = f.relative_to(ROOT).as_posix()
        if rel.startswith(("mu_llama/cli/", "mu_llama/recipes/")) or rel == "mu_llama/__main__.py":
            continue
        bad = {m for m in _imports(f) if m.startswith(("mu_llama.cli", "mu_llama.recipes", "mu_llama.demo", "demo", "bench"))}
        assert not bad, f"library module {rel} imports {bad}"
    # Package level, lazy imports included: each package on a layer, every arrow down or level.
    graph = _import_graph()
    layer = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}
    units = {graph.short(graph.unit(m)) for m in graph.modules()} - {"mu_llama"}
    assert units <= set(layer), f"packages on no layer (place them in LAYERS): {sorted(units - set(layer))}"
    upward = []
    for (a, b), es in graph.package_edges(graph.module_edges()).items():
        la, lb = layer[graph.short(a)], layer[graph.short(b)]
        if la < lb:
            where = ", ".join(f"{e.src} line {e.line}" for e in sorted(es, key=lambda e: (e.src, e.line)))
            upward.append(f"{graph.short(a)} ({LAYERS[la][0]}) -> {graph.short(b)} ({LAYERS[lb][0]}): {where}")
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_no_import_cycle_between_modules_or_packages():
    graph = _import_graph()
    edges = graph.module_edges()
    assert any(e.lazy for e in edges) and any(e.src == "mu_llama.encoders.mert" and e.dst == "mu_llama.encoders.base"
                                             for e in edges)      # the reader sees lazy and relative imports
    module_cycles = graph.cycles(graph.graph_of((e.src, e.dst) for e in edges))
    assert not module_cycles, f"module import cycles: {module_cycles}"
    package_cycles = graph.cycles(graph.graph_of(graph.package_edges(edges)))
    assert not package_cycles, f"package import cycles: {package_cycles}"


def test_the_cycle_check_counts_lazy_and_relative_imports(tmp_path):
    graph = _import_graph()
    (tmp_path / "mu_llama" / "pkg").mkdir(parents=True)
    (tmp_path / "mu_llama" / "__init__.py").write_text("")
    (tmp_path / "mu_llama" / "pkg" / "__init__.py").write_text("")
    (tmp_path / "mu_llama" / "pkg" / "a.py").write_text("def f():\n    from mu_llama.other import g\n")
    (tmp_path / "mu_llama" / "other.py").write_text("from .pkg import a\n")
    for folder in ("encoders", "adapters", "demo"):
        (tmp_path / folder).mkdir()
    edges = graph.module_edges(tmp_path)
    assert {(e.src, e.dst, e.lazy) for e in edges} == {("mu_llama.pkg.a", "mu_llama.other", True),
                                                       ("mu_llama.other", "mu_llama.pkg.a", False)}
    assert graph.cycles(graph.graph_of((e.src, e.dst) for e in edges)) == [["mu_llama.other", "mu_llama.pkg.a"]]
    assert graph.cycles(graph.graph_of(graph.package_edges(edges))) == [["mu_llama.other", "mu_llama.pkg"]]


def test_console_script_and_module_entry_point(tmp_path):
    for cmd in (["mu-llama", "--help"], [sys.executable, "-m", "mu_llama", "--help"]):
        out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "embed" in out.stdout


def test_programs_are_verbs_not_module_mains():
    """Every program runs as a `mu-llama` verb: outside mu_llama/cli/ no module has a __main__ block or builds its own
    ArgumentParser (the recipes under mu_llama/recipes/ are functions that the verbs call)."""
    for f in [*(ROOT / "mu_llama").rglob("*.py"), *(ROOT / "encoders").rglob("*.py"), *(ROOT / "adapters").rglob("*.py")]:
        rel = f.relative_to(ROOT).as_posix()
        if rel.startswith("mu_llama/cli/") or rel == "mu_llama/__main__.py":
            continue
        for node in ast.walk(ast.parse(f.read_text(), filename=rel)):
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "__name__":
                pytest.fail(f"{rel}:{node.lineno} runs as a program (`if __name__ == ...`): make it a recipe and a verb")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "ArgumentParser":
                pytest.fail(f"{rel}:{node.lineno} parses its own flags: flags belong to a verb under mu_llama/cli/")


def test_every_verb_answers_help(capsys):
    from mu_llama.cli.main import VERBS, build_parser

    for verb in VERBS:
        with pytest.raises(SystemExit) as exit_:
            build_parser(verb).parse_args([verb, "--help"])
        assert exit_.value.code == 0, verb
        assert capsys.readouterr().out.startswith(f"usage: mu-llama {verb}"), verb
