"""The wheel a researcher gets from `pip install .` (not the editable install every other test uses) holds the whole
package: each package folder and each file the packages read at run time (the reference .npz files, Lenia's pattern
.json through importlib.resources). A package missing from pyproject's `packages` or a data file outside the
package-data globs works in the editable install and the tests, and fails only for such a user."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


def _source_files() -> list[str]:
    """The repository's files as git sees them, committed or new (not ignored: not data/zoo, build/, bytecode):
    the source tree, so that a file added later is covered without editing this test."""
    try:
        listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        pytest.skip("git is not installed: the source tree's files cannot be told from generated ones")
    if listed.returncode != 0:
        pytest.skip("not a git checkout (an sdist?): the source tree's files cannot be told from generated ones")
    return [p for p in listed.stdout.split("\0") if p and (ROOT / p).is_file()]


def _expected(files: list[str], package_dir: dict[str, str]) -> dict[str, str]:
    """{path in the wheel: source path} for every file under a package root of pyproject's package-dir: each
    package's modules and each non-Python file next to them."""
    roots = {src.strip("/"): name.replace(".", "/") for name, src in package_dir.items()}
    assert all(src and "/" not in src for src in roots), f"package-dir roots are top-level folders here: {roots}"
    expected = {}
    for path in files:
        top, _, rest = path.partition("/")
        if top in roots and rest:
            expected[f"{roots[top]}/{rest}"] = path
    return expected


def test_wheel_holds_every_package_and_data_file(tmp_path):
    files = _source_files()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dir = config["tool"]["setuptools"]["package-dir"]
    expected = _expected(files, package_dir)
    init_dirs = {str(Path(p).parent) for p in expected if p.endswith("/__init__.py")}
    assert {"workbench", "workbench/data", "workbench/kernels", "workbench/qd"} <= init_dirs  # the mapping applies
    # Built from a copy of the package folders and the top-level files (pyproject.toml, README.md, LICENSE,
    # MANIFEST.in): a build/ or *.egg-info left in the checkout (a stale module in build/lib) cannot reach this
    # wheel, and the checkout gets no build outputs.
    src = tmp_path / "src"
    for path in [*expected.values(), *(p for p in files if "/" not in p)]:
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_bytes((ROOT / path).read_bytes())
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "--quiet", "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("workbench-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    missing = sorted(expected.keys() - names)
    packages = sorted({str(Path(p).parent).replace("/", ".") for p in missing if p.endswith("/__init__.py")})
    data = [expected[p] for p in missing if not p.endswith(".py")]
    assert not missing, (f"the wheel lacks {len(missing)} file(s) of the source tree: packages not in pyproject's "
                         f"[tool.setuptools] packages: {packages}; files outside [tool.setuptools.package-data]: "
                         f"{data}; all: {[expected[p] for p in missing]}")
    assert "workbench = workbench.entry:run" in entry_points  # the `workbench` command
