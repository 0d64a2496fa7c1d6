"""The notebooks draw offline: the cells that load HoloViews' and Panel's JavaScript put it inline in the output
(from cdn.bokeh.org and cdn.holoviz.org, every plot stayed blank without a network, as a probe of the executed
notebooks found), and a plot shown after them brings its stylesheets inline too. Each distinct loading cell runs in
a kernel of its own."""

import json
import re
from pathlib import Path

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
LOADING = re.compile(r"^(?:import (?:holoviews as hv|panel as pn)|(?:hv|pn)\.extension\(.*)$", re.M)


def _loading_code(path: Path) -> str:
    """The notebook's lines that import HoloViews or Panel and load their JavaScript, in order."""
    cells = json.loads(path.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return "\n".join(m.group(0) for source in code for m in LOADING.finditer(source))


def test_every_notebook_that_plots_loads_its_javascript_inline():
    import nbformat
    from nbclient import NotebookClient

    loading = {path.name: _loading_code(path) for path in NOTEBOOKS}
    plotting = {name: code for name, code in loading.items() if code}
    assert len(plotting) >= 6, loading
    for name, code in plotting.items():
        assert "extension(" in code, f"{name} imports HoloViews or Panel but loads no JavaScript for them"
    # then the workbench's figures load the other plotting backend: that wrote Bokeh's and Panel's loaders from
    # the CDN into the cell's output, after the notebook's own inline load (and alone in a notebook like 04)
    figures = nbformat.v4.new_code_cell("from workbench import figures\nfigures.holoviews()\nNone")
    # and a plot shown as the notebooks show theirs: HoloViews' display linked Panel's stylesheets on the CDN
    shown = nbformat.v4.new_code_cell("figures.holoviews().Curve([3.0, 2.0, 1.0])")
    for code in [*sorted(set(plotting.values())), ""]:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code), figures, *([shown] if code else [])])
        NotebookClient(nb, timeout=180, kernel_name="python3").execute()
        text = nbformat.writes(nb)
        users = [name for name, c in plotting.items() if c == code] or ["a notebook without a loading cell"]
        assert not re.search(r"cdn\.(?:bokeh|holoviz)\.org", text), f"{users} load BokehJS or Panel from a CDN"
        assert nb.cells[1].outputs == [], f"{users}: workbench.figures wrote {nb.cells[1].outputs}"
        if code:
            assert len(text) > 1_000_000, f"{users}: no inline BokehJS in the output ({len(text)} characters)"
