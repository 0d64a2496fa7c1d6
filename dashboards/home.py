"""Home: what each page does, one card per page, and what the run store holds."""

from __future__ import annotations

import html
from collections import Counter

import panel as pn

from workbench.dashboards.shell import PAGES, counted, every_from_load, served, shell, store_missing
from workbench.runs import RunStore

CARDS_CSS = """
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 16px; }
.card { display: block; border: 1px solid #dde3ea; border-radius: 8px; padding: 14px 16px; color: inherit;
        text-decoration: none; background: #fff; box-shadow: 0 1px 2px rgba(0,0,0,.05); }
.card:hover { border-color: #2f5d8a; box-shadow: 0 2px 8px rgba(47,93,138,.18); }
.card h2 { margin: 0 0 .4em 0; color: #2f5d8a; font-size: 18px; }
.card p { margin: 0; color: #444; font-size: 14px; line-height: 1.4; }
.store { margin-top: 18px; color: #555; font-size: 14px; }
"""


def store_summary(runs_dir: str, rows: list[dict] | None = None, unreadable: list[str] | None = None) -> str:
    """One line: how many runs of each kind and status the store holds, and how many folders it left out as not
    readable (rows, unreadable: its catalog and the folders it left out, read when rows is not given)."""
    if rows is None:
        store = RunStore(runs_dir)
        rows, unreadable = store.list(), store.unreadable_runs
    # a store of damaged runs only is not empty, and its runs are not gone: the Runs page names each and why
    left_out = (f" Left out, not readable as runs: {counted(len(unreadable), 'folder')} (the Runs page says why)."
                if unreadable else "")
    if not rows:
        if left_out:
            return f"The run store <code>{html.escape(runs_dir)}</code> holds no readable run.{left_out}"
        return (f"The run store <code>{html.escape(runs_dir)}</code> is empty{store_missing(runs_dir)}: start a "
                "search on the Search page.")
    # a run.json's own words (a shared run's kind may be any text): escaped, as the cards' are
    kinds = ", ".join(f"{n} {html.escape(str(k))}" for k, n in Counter(r["kind"] for r in rows).most_common())
    states = ", ".join(f"{n} {html.escape(str(s))}" for s, n in Counter(r["status"] for r in rows).most_common())
    return f"<code>{html.escape(runs_dir)}</code> holds {counted(len(rows), 'run')}: {kinds} ({states}).{left_out}"


def home_page(runs_dir: str = "runs", recent: int = 4) -> pn.template.FastListTemplate:
    """The / page: what the store `runs_dir` holds, its `recent` newest runs as cards, and the way to each page."""
    from workbench.dashboards.runs import FOLLOW_MS, Gallery, RunsModel

    cards = "".join(f'<a class="card" href="./{p.slug}"><h2>{html.escape(p.title)}</h2>'
                    f"<p>{html.escape(p.description)}</p></a>" for p in PAGES.values())
    runs = RunsModel(runs_dir=runs_dir, limit=recent)
    body = pn.pane.HTML("", stylesheets=[CARDS_CSS], sizing_mode="stretch_width", name="home-cards")
    heading = pn.pane.Markdown("## Latest runs ([all runs](./runs))", margin=(10, 10, 0, 10),
                               stylesheets=["h2 { font-size: 1.17em; margin: 0.5em 0; }"], disable_anchors=True)
    latest = Gallery(runs_dir, name="home-latest")

    def draw() -> None:
        summary = store_summary(runs_dir, runs._rows, runs.unreadable)
        body.object = f'<div class="cards">{cards}</div><p class="store">{summary}</p>'
        latest.show([runs.card(r) for r in runs.shown()])
        heading.visible = latest.layout.visible = bool(runs.ids)

    draw()
    if served():
        # the summary and the latest cards follow the store (a running run's count, runs started or removed;
        # they were the page's first look for good)
        every_from_load(lambda: runs.follow() and draw(), FOLLOW_MS)
    main = [body, heading, latest.layout]
    return shell(None, main, title="Home", description="ASAL substrates, searches and atlases; evolved merge "
                 "recipes, CycleQD archives, NAMM caches and Transformer² experts. Every page also runs alone: "
                 "panel serve dashboards/PAGE.py")
