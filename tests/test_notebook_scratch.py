"""The notebooks leave nothing behind: their runs and figures go to a scratch folder that goes with the kernel
(each nbmake run of `make test` left eight folders of runs, zoos and figures in the temp folder, ~30 MB a run)."""

import json
import re
import shutil
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
SCRATCH = re.compile(r"^scratch = (tempfile\.TemporaryDirectory\(prefix='workbench-nb-'\))", re.M)


def _code(path: Path) -> str:
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")


def test_notebooks_write_only_into_their_scratch_folder():
    writers = {path.name: _code(path) for path in NOTEBOOKS if "tempfile" in _code(path)}
    assert len(writers) >= 7, sorted(writers)
    for name, code in writers.items():
        assert "mkdtemp" not in code and "mkstemp" not in code, f"{name} makes a temp folder nobody removes"
        assert SCRATCH.search(code), f"{name} has no scratch folder"


def test_the_scratch_folder_goes_with_the_kernel():
    import nbformat
    from nbclient import NotebookClient

    line = SCRATCH.search(_code(NOTEBOOKS[1])).group(0)
    cell = nbformat.v4.new_code_cell(f"import tempfile\n{line}\nopen(scratch.name + '/x', 'w').close()\n"
                                     "print(scratch.name)")
    nb = nbformat.v4.new_notebook(cells=[cell])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    folder = Path(nb.cells[0].outputs[0]["text"].strip())
    assert folder.name.startswith("workbench-nb-"), folder
    assert not folder.exists(), f"{folder} outlived its kernel"


def test_jupyterlab_checkpoints_are_ignored_by_git():
    """JupyterLab (the README's way to open the notebooks) writes notebooks/.ipynb_checkpoints/ on opening one: it
    showed in `git status` as a folder to commit."""
    ignored = (NOTEBOOKS[0].parent.parent / ".gitignore").read_text().split()
    assert ".ipynb_checkpoints/" in ignored


@pytest.mark.parametrize("name", ["05_merge_recipes", "06_cycleqd"])
def test_fast_notebook_passes_over_a_real_zoo_without_its_tasks(name, quick_zoo, tmp_path):
    """With FAST = True a notebook takes the real zoo in data/zoo whenever it is there, and builds its own quick one
    otherwise: a real zoo built with other `--tasks` (here add and sort) is no zoo it can use (05 took it and
    failed: "zoo ../data/zoo has no model 'brackets'")."""
    import nbformat
    from nbclient import NotebookClient

    real = tmp_path / "data" / "zoo"
    shutil.copytree(quick_zoo, real)
    info = json.loads((real / "zoo.json").read_text())
    info["config"]["quick_build"] = False  # as `workbench zoo build --tasks add sort` writes it
    (real / "zoo.json").write_text(json.dumps(info))
    (tmp_path / "notebooks").mkdir()
    cells = json.loads((NOTEBOOKS[0].parent / f"{name}.ipynb").read_text())["cells"]
    first = next("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(first + "\nprint('zoo:', zoo.path, zoo.tasks)")])
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path / "notebooks")}}).execute()
    printed = "".join(o.get("text", "") for o in nb.cells[0].outputs if o["output_type"] == "stream")
    shown = printed.split("zoo: ")[-1]
    assert "workbench-nb-" in shown and "brackets" in shown, printed


def test_notebooks_are_stored_without_outputs():
    """The README's promise (Panel's and Bokeh's inline resources add megabytes per run notebook): a notebook run and
    saved in JupyterLab (its autosave does it unasked) is refused here, before it is committed."""
    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, \
                    f"{path.name} holds outputs: clear them (Edit > Clear Outputs of All Cells) before committing"
