"""`workbench serve`: one Panel server with a page per area, an index, liveness, inline resources."""

from __future__ import annotations

from pathlib import Path

import panel as pn

PAGES = ("lab", "search", "runs", "atlas", "merge")


def pages(runs_dir: str = "runs") -> dict:
    from workbench.dashboards.atlas import atlas_page
    from workbench.dashboards.lab import lab_page
    from workbench.dashboards.merge import merge_page
    from workbench.dashboards.runs import runs_page
    from workbench.dashboards.search import search_page

    def runs():  # a function, not functools.partial: Panel would display a partial object as text
        return runs_page(runs_dir)

    def search():
        return search_page(runs_dir)

    def atlas():
        return atlas_page(runs_dir)

    def lab():
        return lab_page(runs_dir=runs_dir)

    def merge():
        return merge_page(runs_dir)

    return {"lab": lab, "search": search, "runs": runs, "atlas": atlas, "merge": merge}


def serve(port: int = 5006, runs_dir: str = "runs", address: str = "127.0.0.1", show: bool = False,
          threaded: bool = False):
    """Start the server (blocking unless threaded); each page gets a fresh model per browser session."""
    pn.extension("tabulator", inline=True)
    # our own index: Panel's default one loads fonts and a logo from CDNs, which fail offline
    index = str(Path(__file__).with_name("index.html"))
    return pn.serve(pages(runs_dir), port=port, address=address, show=show, liveness=True, index=index,
                    title={k: f"workbench · {k}" for k in PAGES}, threaded=threaded,
                    websocket_origin=[f"{address}:{port}", f"localhost:{port}"])
