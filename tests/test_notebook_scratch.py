"""The notebooks leave nothing behind: their runs and figures go to a scratch folder that goes with the kernel
(each nbmake run of `make test` left eight folders of runs, zoos and figures in the temp folder, ~30 MB a run)."""

import json
import re
from pathlib import Path

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
