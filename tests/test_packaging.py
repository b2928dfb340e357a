"""The distribution installs as one top-level package, `mu_llama`, and never collides with PyPI's `encoders`/`adapters`.
Also: imports run one way (encoders/ and adapters/ never reach into mu_llama's own modules; the library never imports
the CLI, recipes or demo), and the console script works."""

from __future__ import annotations

import ast
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


def _imports(path: Path) -> set[str]:
    mods: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module)
    return mods


def test_imports_run_one_way():
    leaf_ok = ("mu_llama.errors", "mu_llama.encoders", "mu_llama.adapters")
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


def test_console_script_and_module_entry_point(tmp_path):
    for cmd in (["mu-llama", "--help"], [sys.executable, "-m", "mu_llama", "--help"]):
        out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "embed" in out.stdout
