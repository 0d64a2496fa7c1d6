"""The one app shell every page shares: a Panel Fast template (offline), navigation, page registry, helpers.

    shell("lab", main=[...], sidebar=[...])         # the page inside the workbench template
    PAGES["atlas"].title, PAGES["atlas"].description
    open_links("illuminate", run_id)                # [(title, url)]: the pages that open a run of that kind

Pages register here (PAGES) and so do the kinds of run they open (OPENERS): a new explorer adds one entry
to each and the navigation, the index and the Runs gallery pick it up.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import html
import logging
import os
import re
import threading
import urllib.parse
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import panel as pn
import param
from panel.io.resources import CDN_DIST
from panel.theme.fast import Fast
from panel.viewable import Viewable

# the pages' hover tooltips read as an .html export's do (dark, white text: figures.TOOLTIP_CSS says why)
from workbench.figures import TOOLTIP_CSS

if TYPE_CHECKING:
    from bokeh.document import Document

ACCENT = "#2f5d8a"


@dataclass(frozen=True)
class PageInfo:
    slug: str
    title: str
    description: str


PAGES: dict[str, PageInfo] = {p.slug: p for p in (
    PageInfo("lab", "Lab",
             "Play a substrate live: mutate θ, edit its parameters, load a run's best θ, trace an FM score."),
    PageInfo("search", "Search",
             "Launch an ASAL search in the background, watch its loss and best frame, stop and resume it."),
    PageInfo("runs", "Runs",
             "Every run in the store as a gallery: status, best score, open it where it fits, compare runs and seeds."),
    PageInfo("atlas", "Atlas",
             "An illumination run's population laid out by PCA, t-SNE or UMAP; click a cell (or give its number "
             "under Play) to play it."),
    PageInfo("merge", "Merge",
             "An evolved merge recipe: weights and densities per layer, DFS path, fitness, task vectors."),
    PageInfo("qd", "QD archives",
             "CycleQD archives generation by generation: elites, lineage, draws, children, baselines; MAP-Elites."),
    PageInfo("namm", "NAMM",
             "Type a prompt and watch a KV cache evict: per layer and head, kept tokens, scores, features, sizes."),
    PageInfo("experts", "Experts",
             "Transformer² SVF experts and their mixtures: z per layer, α per task, strategies vs base and LoRA; mix."),
)}

# kind of run -> the pages that open it, best fit first (a query string ?run=ID selects the run there)
OPENERS: dict[str, tuple[str, ...]] = {
    # the Search page last: it shows a search's progress (live while it runs in the server) and resumes it
    "target": ("lab", "search"),
    "openended": ("lab", "search"),
    "illuminate": ("atlas", "lab", "search"),
    "illuminate/map-elites": ("atlas", "qd", "lab", "search"),  # kind/algorithm: a MAP-Elites archive is a grid too
    "merge": ("merge",),
    "qd": ("qd",),
    "namm": ("namm",),
    "experts": ("experts",),
    "adapt": ("experts",),
    "sweep": ("lab",),  # the best rule of a Game of Life sweep plays there (the Search page opens searches only)
}


def register_opener(kind: str, *pages: str) -> None:
    """Let a new explorer open runs of `kind` (its page must be in PAGES)."""
    unknown = [p for p in pages if p not in PAGES]
    if unknown:
        raise ValueError(f"unknown page(s) {unknown}; pages are {sorted(PAGES)}")
    OPENERS[kind] = tuple(pages)


def open_links(kind: str | None, run_id: str, algorithm: str | None = None) -> list[tuple[str, str]]:
    """(page title, relative url) of every page that opens this run, best fit first; an entry for
    "kind/algorithm" wins over the kind's."""
    pages = OPENERS.get(f"{kind}/{algorithm}") if algorithm else None
    run = urllib.parse.quote(run_id, safe="")  # a qd run's id has a "+" (elite+svd), a space in a query string
    return [(PAGES[p].title, f"./{p}?run={run}") for p in (pages or OPENERS.get(kind or "", ()))]


#: a ring on the control the keyboard is on: Fast draws buttons with no outline at all when focused (a keyboard user
#: could not see where start, export or run was), and a focused field's border went light grey; the chosen button of
#: a group in white (its dark text on the accent read at 2.9:1), and so the option a MultiChoice's list has the
#: arrow keys on (2.9:1 too); a warning button (Search's stop) in dark text (white on Bokeh's light orange read at
#: 2.0:1) and a danger button (Runs' "yes, remove them for good") on a darker red (white on #d9534f: 4.0:1)
FOCUS_CSS = f"""
.bk-btn:focus-visible {{ outline: 2px solid {ACCENT}; outline-offset: 2px; }}
.bk-btn-group .bk-btn.bk-active {{ color: #fff !important; }}
input:focus-visible, select:focus-visible, textarea:focus-visible {{ box-shadow: 0 0 0 2px {ACCENT}; }}
.bk-tab:focus-visible {{ outline: 2px solid {ACCENT}; outline-offset: -2px; }}
.choices__list .choices__item--selectable.is-highlighted {{ color: #fff; }}
.bk-btn-warning:not([disabled]) {{ color: #1a1d21; }}
:host {{ --danger: #c9302c; --danger-hover: #b52b27; --danger-active: #ac2925; }}
"""

#: inline code (a command, a run id) in the theme's colour for code on its dark code blocks was light blue on white
#: (#82aaff, 2.3:1); code blocks keep theirs. A path or id longer than the line breaks within it (only where it would
#: not fit: a Runs count's store path ran past a phone's window)
INLINE_CODE_CSS = ":not(pre) > code { color: #1f4f82; overflow-wrap: break-word; }"


#: a MultiChoice's list short enough not to scroll (type to find the others): a list that scrolled took the keyboard
#: into it, closed, and the next Tab came back to the box, never past it (the Runs page's compare box at 8 runs)
UNTRAPPED = {"option_limit": 6, "search_option_limit": 6}


class OfflineFast(Fast):
    """Panel's Fast design without its Google-Fonts stylesheet: everything else is bundled with Panel and
    served by our own server, so the pages work without a network (the system sans-serif font instead); every
    control shows where the keyboard is (FOCUS_CSS), inline code reads (INLINE_CODE_CSS)."""

    modifiers = {**Fast.modifiers, Viewable: {"stylesheets": [*Fast.modifiers[Viewable]["stylesheets"], FOCUS_CSS,
                                                              INLINE_CODE_CSS]}}

    # the relative module path is resolved by class name (it would become offlinefast/...): name Panel's bundle
    _resources = {**{k: v for k, v in Fast._resources.items() if k != "font"},
                  "js_modules": {**Fast._resources["js_modules"],
                                 "fast-design": f"{CDN_DIST}bundled/fast/js/fast_design.js"}}


#: the current page's pill 17 % white over the accent: white text on it at 4.6:1 (at 22 %, 4.1:1). The links
#: scroll sideways within the header where they do not fit (a phone, a window at 200 % zoom): the template hides the
#: page's own overflow, so the links past its edge could not be reached, and the page slid sideways when the
#: keyboard went to one
NAV_CSS = """
:host { width: 100%; }
nav { display: flex; gap: .25em; align-items: center; height: 100%; font-size: 15px; overflow-x: auto;
      scrollbar-width: thin; }
nav a { color: #fff; text-decoration: none; padding: .35em .75em; border-radius: 4px; opacity: .85;
        white-space: nowrap; flex: none; }
nav a:hover { background: rgba(255,255,255,.15); opacity: 1; }
nav a.current { background: rgba(255,255,255,.17); opacity: 1; font-weight: 600; }
"""

DESCRIPTION_CSS = """
:host { width: 100%; }
.description { color: #555; font-size: 15px; margin: 0 0 .2em .1em; }
.page-heading { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%);
                white-space: nowrap; margin: 0; }
"""


#: the widest window that draws the sidebar over the page rather than beside it, and opens the page with it closed:
#: beside it (330 px) a phone's page was 30 px wide, and at 320 px the sidebar itself ran past the window's edge
NARROW_PX = 760

#: the template's own parts in a narrow window (the page cannot scroll sideways: the template hides its overflow):
#: the header's links take the room left (they pushed the header 900 px wide), the header's titles make way for
#: them (the page's title is the current link, and the page's heading), the sidebar is never wider than the window
NARROW_CSS = f"""
#header-items {{ flex: 1 1 0; width: auto; min-width: 0; }}
#header-items > * {{ min-width: 0; max-width: 100%; }}
#sidebar:not(.hidden) {{ min-width: min(var(--sidebar-width), calc(100vw - 17px));
                        max-width: min(var(--sidebar-width), calc(100vw - 17px)); }}
@media (max-width: {NARROW_PX}px) {{
  #header .title {{ display: none; }}
  #sidebar:not(.hidden) {{ position: absolute; z-index: 5; box-shadow: 2px 0 12px rgba(0,0,0,.25); }}
}}
"""

#: in a narrow window (NARROW_PX) the page opens with its sidebar closed: open, it would cover the page (the
#: toggle in the header opens it); the header's links scrolled to the current page's (Experts' was out of sight)
NARROW_JS = f"""
if (window.matchMedia("(max-width: {NARROW_PX}px)").matches && typeof closeNav === "function") {{
  const sidebar = document.getElementById("sidebar");
  if (sidebar && !sidebar.classList.contains("hidden")) closeNav();
}}
for (const host of document.querySelectorAll("#header-items *")) {{  // the current page's link in sight
  const current = host.shadowRoot && host.shadowRoot.querySelector("nav.pages a.current");
  if (current) {{ const nav = current.parentElement; nav.scrollLeft = current.offsetLeft - nav.offsetLeft - 40; }}
}}
"""


def nav(current: str | None) -> pn.pane.HTML:
    """Links to the index and every page; the current one highlighted, and said to be the current page (a screen
    reader heard nine alike links: the highlight was its colour only)."""
    items = [("", "Home")] + [(p.slug, p.title) for p in PAGES.values()]
    links = "".join(f'<a href="./{slug}" class="current" aria-current="page">{title}</a>' if slug == (current or "")
                    else f'<a href="./{slug}" class="">{title}</a>' for slug, title in items)
    return pn.pane.HTML(f'<nav class="pages" aria-label="Pages">{links}</nav>', stylesheets=[NAV_CSS],
                        sizing_mode="stretch_width", margin=0)


#: the class of a pane whose text the page changes as it works (a run's state, what an export wrote, why a run
#: could not be opened); SHELL_ROLES_JS makes its element a live region. The "-alert" one for errors.
LIVE_CLASS = "workbench-live"


def live(pane: pn.pane.PaneBase, urgent: bool = False) -> pn.pane.PaneBase:
    """The pane, announced by a screen reader whenever its text changes (role status, or alert when urgent): a
    started search's state or an export's "written …" changed on screen only, and a reader's user, whose focus
    stays on the button, heard nothing. Not for text that changes many times a second (the Lab's step count)."""
    pane.css_classes = [*pane.css_classes, f"{LIVE_CLASS}-alert" if urgent else LIVE_CLASS]
    return pane


#: Keys for the pages' tab headers (Bokeh's take focus but answer the mouse only): the left and right arrows (Home,
#: End) move the focus along the headers, Enter or Space opens the tab focused. The arrows do not open (a dynamic
#: tab draws its content on the server: held down, they would ask for each one). Like a click, a key opens nothing
#: under a busy veil nor a disabled tab. A dynamic Tabs draws its headers again when one opens: the focus goes on
#: to the new header at the same place (it fell to the page). One listener for the whole page: the headers live in
#: shadow roots, so the key's own target is read from its path.
TAB_KEYS_JS = """
if (!window.__workbench_tab_keys) {
  window.__workbench_tab_keys = true;
  const veiled = (node) => {  // under a busy spinner's veil: its own component or one around it
    for (let n = node; n; n = n.parentElement || (n.getRootNode() && n.getRootNode().host)) {
      if (n.classList && n.classList.contains("pn-loading")) return true;
    }
    return false;
  };
  document.addEventListener("keydown", (event) => {
    const tab = event.composedPath()[0];
    if (!(tab instanceof HTMLElement) || !tab.classList.contains("bk-tab") || event.altKey || event.ctrlKey ||
        event.metaKey) return;
    const row = tab.parentElement;
    const tabs = Array.from(row.querySelectorAll(":scope > .bk-tab"));
    const moves = {ArrowLeft: -1, ArrowRight: 1, Home: "first", End: "last"};
    if (event.key in moves) {
      event.preventDefault();
      const open = tabs.filter((t) => t === tab || !t.classList.contains("bk-disabled"));
      const move = moves[event.key], at = open.indexOf(tab);
      const next = move === "first" ? open[0] : move === "last" ? open[open.length - 1]
        : open[(at + move + open.length) % open.length];
      next.focus();
    } else if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();  // Space would scroll the page
      if (event.repeat || tab.classList.contains("bk-disabled") || veiled(row)) return;
      const index = tabs.indexOf(tab);
      const refocus = new MutationObserver(() => {
        const again = row.querySelectorAll(":scope > .bk-tab")[index];
        if (again && again !== tab) {
          refocus.disconnect();
          again.focus();
        }
      });
      refocus.observe(row, {childList: true});
      setTimeout(() => refocus.disconnect(), 5000);
      tab.click();
    }
  });
}
"""


#: Names for Panel's players' controls (the QD page's generations, NAMM's eviction steps): their buttons are icons
#: and their slider has no label, so a screen reader said "button" six times. The players on the page get them
#: once it is drawn (document_ready; a reader's browse mode moves neither focus nor pointer), and a player drawn
#: later or again when the keyboard or the pointer reaches it.
PLAYER_NAMES_JS = """
if (!window.__workbench_player_names) {
  window.__workbench_player_names = true;
  const buttons = ["slower", "first", "previous", "reverse", "pause", "play", "next", "last", "faster"];
  const name = (root) => {  // a player's shadow root: its controls without a name get one
    const title = root && root.querySelector ? root.querySelector(".pn-player-title") : null;
    if (title === null) return;  // not a player's
    for (const button of root.querySelectorAll("button:not([aria-label])")) {
      const word = buttons.find((b) => button.classList.contains(b));
      if (word) {
        button.setAttribute("aria-label", word);
        button.title = word;
      }
    }
    const label = Array.from(title.childNodes).filter((n) => n.nodeType === Node.TEXT_NODE)
      .map((n) => n.textContent).join("").replace(/:\\s*$/, "").trim();
    for (const slider of root.querySelectorAll("input[type=range]:not([aria-label])")) {
      if (label) slider.setAttribute("aria-label", label);
    }
  };
  const reached = (event) => {
    const target = event.composedPath()[0];
    if (target && target.getRootNode) name(target.getRootNode());
  };
  const all = (root) => {  // every shadow root of the page, the players' among them
    for (const el of root.querySelectorAll("*")) {
      if (el.shadowRoot) {
        name(el.shadowRoot);
        all(el.shadowRoot);
      }
    }
  };
  all(document);
  document.addEventListener("focusin", reached);
  document.addEventListener("pointerover", reached);
}
"""


#: Roles for the template's own parts, which Panel's Fast list template draws as plain elements: its main area
#: a `main` (a page had no main landmark to jump to), its header a `banner` (a `nav` holding the site's title and
#: our page links' `nav`: a navigation inside a navigation), its sidebar the page's controls (a `ul` whose children
#: are no list items: a reader announced "list, 1 item"); the link on the page's own title says it is the current
#: page, the full-screen buttons' icons are decorative (they were read as unnamed images, one per view). The live
#: panes (LIVE_CLASS) get role status or alert: at document_ready, and again for a pane drawn later as the
#: keyboard moves (a reader's user acts through the focus, so a pane is marked before the text it will say).
SHELL_ROLES_JS = """
if (!window.__workbench_roles) {
  window.__workbench_roles = true;
  const set = (el, attrs) => { if (el) for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v); };
  set(document.getElementById("header"), {role: "banner"});
  set(document.getElementById("main"), {role: "main"});
  const sidebar = document.getElementById("sidebar");
  set(sidebar, {role: "complementary", "aria-label": "Controls"});
  set(sidebar && sidebar.querySelector(":scope > ul"), {role: "none"});
  set(document.querySelector('#header .app-header a.title[href=""]'), {"aria-current": "page"});
  for (const icon of document.querySelectorAll(".fullscreen-button svg")) set(icon, {"aria-hidden": "true"});
  const live = (root) => {
    for (const el of root.querySelectorAll(".LIVE:not([role]), .LIVE-alert:not([role])")) {
      el.setAttribute("role", el.classList.contains("LIVE-alert") ? "alert" : "status");
    }
    for (const el of root.querySelectorAll("*")) {
      if (el.shadowRoot) live(el.shadowRoot);
    }
  };
  live(document);
  // at most twice a second: each walk visits every element of every shadow root (thousands on a full Runs page)
  let due = 0;
  document.addEventListener("focusin", () => {
    if (Date.now() >= due) { due = Date.now() + 500; live(document); }
  });
}
""".replace("LIVE", LIVE_CLASS)


#: the CSS variable a component's accessible name travels in (NAME_VAR): Panel passes no ARIA attribute to Bokeh,
#: but every component takes stylesheets, and a `:host` rule's variable is read back on the component's element
NAME_VAR = "--workbench-name"


def accessible_name(component: Viewable, label: str) -> Viewable:
    """The component named `label` for a screen reader (CONTROL_NAMES_JS reads it): a progress bar, a group of
    option buttons, a table, whose visible label Bokeh does not draw or ties to no control."""
    quoted = label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    component.stylesheets = [*component.stylesheets, f':host {{ {NAME_VAR}: "{quoted}"; }}']
    return component


def name_controls(items: Iterable[Any]) -> None:
    """Names from their Panel labels for the option groups, progress bars and tables among items (a RadioButtonGroup's
    label is no part of what Bokeh draws: a reader heard "PCA, t-SNE, UMAP" with nothing saying what they chose);
    a component named already (accessible_name) keeps its name."""
    kinds = (pn.widgets.RadioButtonGroup, pn.widgets.CheckButtonGroup, pn.indicators.Progress, pn.widgets.Tabulator)
    for item in items:
        if not isinstance(item, Viewable) or not hasattr(item, "select"):
            continue
        for widget in item.select(lambda o: isinstance(o, kinds)):
            named = any(NAME_VAR in str(sheet) for sheet in widget.stylesheets)
            if widget.label and not named:  # label: Panel deprecates a widget's name
                accessible_name(widget, widget.label)


#: Names for Bokeh's and Panel's controls that Chromium's accessibility tree had none for: a slider's handle, a
#: checkbox (its label a detached span), a MultiChoice's box, a progress bar and an option group (NAME_VAR, set in
#: Python), a chart (its title, its axes or the figure's own aria-label: role img; its canvases hidden, they were
#: read as unnamed "Canvas" nodes), a tab header (role tab, selected or not), a toolbar's "more tools", a table's
#: scrolling body, a checkbox ticking a table's row, a player's icons inside its named buttons, and the template's
#: sidebar toggle (a span: no keyboard could reach it). A number field's step buttons are hidden from it instead.
#: Bokeh draws its views at any time (a tab opened, a plot redrawn): the walk over its views runs at
#: document_ready, a few times while the page settles and, throttled, as the keyboard or pointer moves.
CONTROL_NAMES_JS = """
if (!window.__workbench_control_names) {
  window.__workbench_control_names = true;
  const set = (el, attrs) => {  // only what differs: a write re-renders nothing but costs a mutation record
    if (!el) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v != null && el.getAttribute(k) !== String(v)) el.setAttribute(k, v);
    }
  };
  const text = (v) => (v == null ? "" : typeof v === "object" ? String(v.text ?? "") : String(v)).trim();
  const given = (el) => {  // NAME_VAR of a component's element: a CSS string, quotes and escapes taken off
    const raw = el ? getComputedStyle(el).getPropertyValue("NAME_VAR").trim() : "";
    return raw.replace(/^"(.*)"$/s, "$1").replace(/\\\\(.)/g, "$1");
  };
  const plotName = (view) => {
    const m = view.model, title = text(m.title);
    if (title) return title;
    const own = view.el && view.el.getAttribute("aria-label");
    if (own) return own;
    const axes = [...(m.below || []), ...(m.left || [])].map((a) => text(a.axis_label)).filter(Boolean);
    return axes.length ? `chart of ${axes.join(" against ")}` : "chart";
  };
  const nameView = (view) => {
    const m = view.model, root = view.shadow_el, type = m.type || "";
    if (!root) return;
    const label = text(m.title) || given(view.el);
    for (const canvas of root.querySelectorAll("canvas")) set(canvas, {"aria-hidden": "true"});
    // a number field's step buttons: out of the reader's and the Tab key's way, as a native number field's are (its
    // field steps with the arrow keys and Page Up/Down); named after the field, get_by_label found three nodes
    for (const b of root.querySelectorAll(".bk-spin-btn")) set(b, {"aria-hidden": "true", tabindex: "-1"});
    if ("canvas_view" in view && view.canvas_view && view.canvas_view.shadow_el) {  // a plot
      const events = view.canvas_view.shadow_el.querySelector(".bk-events");
      set(events || view.el, {role: "img", "aria-label": plotName(view)});
      for (const canvas of view.canvas_view.shadow_el.querySelectorAll("canvas")) {
        set(canvas, {"aria-hidden": "true"});
      }
    }
    if (label) {
      const handles = root.querySelectorAll(".noUi-handle");
      handles.forEach((h, i) => set(h, {"aria-label": handles.length > 1 ? `${label}: ${i ? "upper" : "lower"}`
                                                                         : label}));
      set(root.querySelector(".choices"), {"aria-label": label});
      set(root.querySelector("progress"), {"aria-label": label});
      const group = root.querySelector(".bk-btn-group");
      if (group && /ButtonGroup/.test(type)) set(group, {role: "group", "aria-label": label});
      set(root.querySelector(".tabulator-tableholder"), {role: "region", "aria-label": label});
    }
    if (type === "Checkbox" && text(m.label)) {
      set(root.querySelector("input[type=checkbox]"), {"aria-label": text(m.label)});
    }
    if (/ButtonGroup/.test(type)) {  // which option is chosen: its colour only before
      for (const b of root.querySelectorAll(".bk-btn-group > .bk-btn")) {
        set(b, {"aria-pressed": String(b.classList.contains("bk-active"))});
      }
    }
    set(root.querySelector(".tabulator-tableholder:not([aria-label])"), {role: "region", "aria-label": "table"});
    for (const row of root.querySelectorAll(".tabulator-row")) {  // a ticked row: the run on it
      const box = row.querySelector("input[type=checkbox]");
      const cells = box ? Array.from(row.querySelectorAll(".tabulator-cell")) : [];  // the run's id, else the first
      const cell = row.querySelector('.tabulator-cell[tabulator-field="id"]') ||
        cells.find((c) => !c.contains(box) && c.textContent.trim());
      if (cell) set(box, {"aria-label": `tick ${cell.textContent.trim()}`});
    }
    set(root.querySelector(".tabulator-col input[type=checkbox]"), {"aria-label": "tick every row"});
    const headers = root.querySelector(".bk-tab") && root.querySelector(".bk-tab").parentElement;
    if (headers) {
      set(headers, {role: "tablist"});
      for (const tab of headers.querySelectorAll(":scope > .bk-tab")) {
        set(tab, {role: "tab", "aria-selected": String(tab.classList.contains("bk-active"))});
      }
    }
    set(root.querySelector(".bk-tool-overflow"), {role: "button", "aria-label": "more tools"});
    for (const icon of root.querySelectorAll("button[aria-label] svg, button[title] svg")) {
      set(icon, {"aria-hidden": "true"});
    }
  };
  const toggle = document.getElementById("sidebar-button");
  const sidebar = document.getElementById("sidebar");
  if (toggle) {  // the template's span: a button the keyboard reaches, saying whether the controls are shown
    const shown = () => String(!!sidebar && !sidebar.classList.contains("hidden"));
    set(toggle, {role: "button", tabindex: "0", "aria-label": "Show or hide controls", "aria-controls": "sidebar",
                 "aria-expanded": shown()});
    toggle.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); toggle.click(); }
    });
    toggle.addEventListener("click", () => setTimeout(() => set(toggle, {"aria-expanded": shown()}), 0));
  }
  const walk = () => {
    if (!window.Bokeh || !Bokeh.index) return;
    for (const view of Bokeh.index.all_views()) {
      try { nameView(view); } catch (e) { /* a view mid-render: the next walk names it */ }
    }
  };
  // at most twice a second, the last call kept: a click on a tab or an option must leave it marked selected
  let due = 0, pending = null;
  const soon = () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; due = Date.now() + 500; walk(); }, Math.max(0, due - Date.now()));
  };
  walk();
  for (const ms of [300, 1000, 2500, 5000]) setTimeout(walk, ms);  // views drawn as the page settles
  for (const kind of ["focusin", "pointerover", "click", "keyup"]) document.addEventListener(kind, soon, true);
}
""".replace("NAME_VAR", NAME_VAR)


class WorkbenchTemplate(pn.template.FastListTemplate):
    """Panel's FastListTemplate whose browser tab says the site and the page ("workbench · Lab"): the template's
    title, which its header shows beside the site's name, was the tab's too ("Lab", among other apps' tabs).
    Its tab headers answer the keyboard too (TAB_KEYS_JS), its players' controls have names (PLAYER_NAMES_JS), its
    parts have their roles and its live panes are announced (SHELL_ROLES_JS), its other controls and its charts have
    names (CONTROL_NAMES_JS)."""

    tab_title = param.String(default="workbench", doc="the browser tab's title (the document's)")

    def _init_doc(self, doc: Document | None = None, comm: Any = None, title: str | None = None,
                  notebook: bool = False, location: bool | Any = True) -> Document:
        # Panel titles the document by the template's title, whatever it is given (servable's, serve's)
        from bokeh.models import CustomJS
        from panel.io.document import create_doc_if_none_exists
        from panel.io.state import state

        # the models of the document are gathered once, not again at each of the template's roots: Bokeh walks every
        # model of every root at each add_root, which took 0.15 s of the 0.4 s a new session (a tab opened) of the
        # Lab page cost the server on a quiet machine. Panel's server_doc freezes them so for a page without a template
        document = create_doc_if_none_exists(doc)  # the document super() builds in (its own lookup: the same one)
        with document.models.freeze():
            document = super()._init_doc(document, comm, title, notebook, location)
        # Panel (1.9) adds the page's fake root to state._fake_roots and, at the session's end, takes out the one
        # it kept in self._refs, which it never fills: one id a session stayed for good (a list every widget
        # change of every session searches). Kept here, Panel's own _server_destroy takes it out. Found by its
        # document (state._views), not as the list's last: a page of another server thread may have come since.
        refs = getattr(self, "_refs", None)
        if isinstance(refs, dict) and document not in refs:
            ref = next((r for r in reversed(list(state._fake_roots))
                        if r not in refs.values() and len(state._views.get(r, ())) > 2
                        and state._views[r][2] is document), None)
            if ref is not None:
                refs[document] = ref
        document.title = self.tab_title
        # NARROW_JS first: CONTROL_NAMES_JS tells a screen reader whether the sidebar is open
        code = NARROW_JS + TAB_KEYS_JS + PLAYER_NAMES_JS + SHELL_ROLES_JS + CONTROL_NAMES_JS
        document.js_on_event("document_ready", CustomJS(code=code))
        return document


#: what a served page says when its websocket closes (the server stopped, the network dropped, the laptop slept).
#: Panel (1.9) turns off Bokeh's own connection notice and shows its own only with notifications on, which no page
#: had: a page that lost its server looked alive, its clicks did nothing and a search's progress stood still.
CONNECTION_LOST = ("Lost the connection to the workbench server: this page no longer updates or answers. Reload it "
                   "to reconnect (a search started here keeps running on the server).")


def connection_notice() -> Any:
    """A notification area that says CONNECTION_LOST when the page's websocket closes; None where no server serves
    the page (a notebook's cell has no connection of its own to lose)."""
    if not served():
        return None
    from panel.io.notifications import NotificationArea

    return NotificationArea(js_events={"connection_lost": {"type": "error", "message": CONNECTION_LOST}})


def shell(slug: str | None, main: Iterable[Any], sidebar: Iterable[Any] = (), *, standalone: bool = False,
          title: str | None = None, description: str | None = None) -> pn.template.FastListTemplate:
    """The page in the workbench template: title, one-line description, controls in the sidebar.
    standalone (`panel serve dashboards/X.py`) leaves out the links to the other pages, which are not served."""
    info = PAGES.get(slug or "")
    title = title or (info.title if info else "workbench")
    description = description or (info.description if info else "")
    # the page's title as its heading for screen readers (the header shows it, but not as a heading: a page had
    # none to jump to); seen, it would repeat the header
    head = pn.pane.HTML(f'<h1 class="page-heading">{html.escape(title)}</h1>'
                        f'<p class="description">{html.escape(description)}</p>', stylesheets=[DESCRIPTION_CSS],
                        sizing_mode="stretch_width", margin=(0, 10))
    sidebar, main = list(sidebar), list(main)
    name_controls([*sidebar, *main])
    quiet_closed_sessions()  # here too: a page served alone (panel serve dashboards/X.py) gets no serve()
    ordered_patches()
    local_stylesheets()
    if standalone:
        serial_blas()
    template = WorkbenchTemplate(
        tab_title=f"workbench · {title}" if info else "workbench", site="workbench", site_url="./", title=title,
        design=OfflineFast, accent=ACCENT,
        header_background=ACCENT, header=[] if standalone else [nav(slug)], sidebar=sidebar,
        collapsed_sidebar=not sidebar,
        main=[head, *main], main_layout=None, theme_toggle=False, sidebar_width=330,
        busy_indicator=None,  # Panel's is global: any session's periodic callback would spin it on every page
        notifications=connection_notice(),
        font="system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif",
        meta_description=description)
    template.config.raw_css = [*template.config.raw_css, NARROW_CSS, TOOLTIP_CSS]
    return template


def counted(n: int, noun: str) -> str:
    """"1 model", "3 models": a count and its noun for the pages' headers and titles ("1 models" before)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


#: a second-level heading drawn as the small one it was (h4): under the page's h1 a screen reader's outline skipped
#: two levels (h1, then h4)
SUBHEADING_CSS = "h2 { font-size: 1em; margin: 0.67em 0; }"


def subheading(title: str, margin: Any = (12, 10, 0, 10)) -> pn.pane.Markdown:
    """A second-level heading in small type: a sidebar's groups of controls, a panel beside the main view."""
    # no ¶ link to itself (Markdown puts one on h1–h3, which a screen reader reads out; h4 had none)
    return pn.pane.Markdown(f"## {title}", margin=margin, stylesheets=[SUBHEADING_CSS], disable_anchors=True)


def section(title: str) -> pn.pane.Markdown:
    """A heading between groups of sidebar controls."""
    return subheading(title)


#: the widest row of panels a view draws, axes, legends and colour bars included: what a notebook's output cell
#: holds in JupyterLab 4 at a 1280 px window with the file browser open (848 px, a lone Bokeh plot drawn with 5 px
#: margins each side; at 900 a view's third panel, a legend or a colour bar was cut there), and within the pages'
#: main area beside the sidebar (918 px in that window: it starts 362 px in; at 920 a row ran 2 px past)
ROW_WIDTH = 838


class ScrollBox(pn.Column):
    """A Column that scrolls sideways what does not fit it, and so does not ask its parents for its content's width:
    Panel gives a stretching layout the widest of its fixed-width parts as its minimum width, and passes it up (a
    838 px chart made the tabs, the main area, 838 px wide in any window)."""

    def _compute_sizing_mode(self, children: list, props: dict) -> dict:
        sizing = super()._compute_sizing_mode(children, props)
        sizing.pop("min_width", None)
        return sizing


def scrolls(view: Any, **params: Any) -> ScrollBox:
    """A chart or table in a box of its own that scrolls sideways where the window is narrower than it (a phone, a
    window at 400 % zoom): WCAG 1.4.10 lets a chart scroll, not the text around it, and the whole main area scrolled
    with the text between the charts. Where it fits (a desktop), the box is the view's own size. A tab's view: in
    a box that stretches (sizing_mode="stretch_width"), as Panel's stand-in for a hidden tab takes the box's size.
    It scrolls only in a narrow window (NARROW_PX): a box that scrolls clips what its view draws past its edges,
    and a chart's hover tooltip near its edge would be cut on a desktop."""
    sheets = [*params.pop("stylesheets", []), SCROLLS_WHEN_NARROW]
    return ScrollBox(view, margin=0, stylesheets=sheets, **params)


def when_narrow(rules: str, selector: str = ":host") -> str:
    """A stylesheet that applies `rules` to `selector` (the element itself: :host) in a narrow window (NARROW_PX)
    only: a phone's layout, a desktop's as it was."""
    return f"@media (max-width: {NARROW_PX}px) {{ {selector} {{ {rules} }} }}"


#: scrolls()'s box: sideways where a narrow window (NARROW_PX) is narrower than its view
SCROLLS_WHEN_NARROW = when_narrow("overflow-x: auto;")


#: a Row's stylesheet that wraps its parts one below the other in a narrow window (NARROW_PX): side by side, a side
#: card or a column of controls ran past a phone's window; a desktop's is as it was
WRAPS_WHEN_NARROW = when_narrow("flex-wrap: wrap;")

#: a fixed-width column of text and controls that is no wider than the window in a narrow window (NARROW_PX): its
#: fixed width made the whole main area that wide (a flex layout is never narrower than its parts' fixed widths)
FITS_WHEN_NARROW = when_narrow("width: auto !important; min-width: 0 !important; max-width: 100%;")


#: a stretching layout that may be narrower than a narrow window (NARROW_PX): Bokeh gives it the widest fixed width
#: of what it holds as its least (min-width), which FITS_WHEN_NARROW lets shrink, so that a 320 px prompt box made
#: the page 15 px wider than a phone's window all the same
SHRINKS_WHEN_NARROW = when_narrow("min-width: 0 !important;")


#: a Tabs' stylesheet that wraps its tab headers onto a second row where they do not fit (Bokeh's header cuts them
#: off: the Experts page's ninth tab, the Mixer, could not be reached in a 1400 px window); in a narrow window
#: (NARROW_PX) the tabs are no wider than it: Bokeh gives them the widest fixed width of a control in any tab as
#: their least (SHRINKS_WHEN_NARROW)
WRAPPED_TABS = ".bk-header, .bk-headers-wrapper, .bk-headers { flex-wrap: wrap; } " + SHRINKS_WHEN_NARROW


def placeholder(text: str, width: int = 520, height: int = 260, link: str = "") -> pn.pane.HTML:
    """What a plot shows before it has data (instead of empty 0–1 axes); `commands` in backticks are set as code
    (they showed their backticks); `link`, HTML after the text (a page that shows what is missing here). `width` at
    most: in a narrower window the box and its text take the window's width (a 520 px box cut its text at 320, and
    a pane's fixed width is the least its page's layouts take: the whole main area was 720 px wide); the 2 px right
    of the box were the pane's before."""
    box = (f"width:{width - 2}px;max-width:calc(100% - 2px);margin-right:2px;height:{height - 2}px;display:flex;"
           "align-items:center;justify-content:center;color:#5b6472;border:1px dashed #c9d0d9;border-radius:6px;"
           "font-size:14px;background:#fafbfc;text-align:center;padding:0 16px;box-sizing:border-box")
    body = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text)) + link
    return pn.pane.HTML(f'<div style="{box}"><span>{body}</span></div>', height=height, margin=(5, 10))


def in_page_words(message: str, fields: dict[str, str], bold: bool = True) -> str:
    """A message the library words for the command line ("needs --prompt TEXT or --target-image FILE"), in the
    words of a page whose fields are `fields` (flag -> the field's label): each flag named there becomes its
    field (in **bold**, or as plain text without `bold`: a message plain() shows), the value's placeholder after
    it (TEXT, FILE, K) dropped; other flags are left as they are."""
    def field(found: re.Match) -> str:
        flag = f"-{found.group(1)}"
        if flag not in fields:
            return found.group(0)
        return f"**{fields[flag]}**" if bold else fields[flag]

    # a flag's first "-" as plain() writes it at a line's start, an entity: a message that began with its flag
    # ("--frames 50 is more than --steps 8") kept it
    return re.sub(r"(?:-|&#45;)(-[a-z][a-z0-9-]*)(?: [A-Z]+\b(?![a-z]))?", field, message)


def store_missing(runs_dir: str | Path) -> str:
    """" (no such folder yet: …)" where the run store's folder does not exist (a typo in --runs looked like an
    empty store), else "": what an empty page's line adds."""
    return "" if Path(runs_dir).exists() else " (no such folder yet: the first run makes it)"


def query_value(args: dict[str, list[bytes]] | None, key: str) -> str | None:
    """The first ?key=VALUE of a session's arguments as text, None without one. Bytes that are not UTF-8 (a link
    percent-encoded in Latin-1, `?run=%E9`, or cut inside a letter) read as U+FFFD: decoded strictly, the page's
    build raised UnicodeDecodeError and the browser got an empty page (the traceback in the server's log only)."""
    values = (args or {}).get(key)
    return values[0].decode("utf-8", errors="replace") if values else None


def run_asked(args: dict[str, list[bytes]] | None, runs_dir: str | Path | None = None) -> str | None:
    """The run an address asks for (?run=ID, from a session's arguments), None when it asks for none: no ?run,
    or an empty or blank one (the Search page then shows the search its server runs; a blank id was refused as
    "no run ' '"). With runs_dir, a run folder of that very name (spaces and all) is taken as it is."""
    # a query string reads "+" as a space, and the ids runs are given hold "+" (a CycleQD run's "elite+svd") but
    # never spaces: an address typed or pasted with the id as printed opened "no run '…elite svd…'". A folder
    # copied or renamed with a space is a run too: its own links (quoted, %20) come back with the space.
    asked = (query_value(args, "run") or "").strip()
    if runs_dir is None or not (Path(runs_dir) / asked).is_dir():
        asked = asked.replace(" ", "+")
    return asked or None


def served() -> bool:
    """Whether the page being built is a server's session (else a test's or a notebook's: no address to follow,
    no periodic callbacks to add)."""
    return pn.state.curdoc is not None and pn.state.curdoc.session_context is not None


def every_from_load(callback: Callable[[], Any], period_ms: int) -> None:
    """Call `callback` every `period_ms` from the page's load on (the browser's document_ready), not from the
    session's start: until then Panel (1.9) drops the changes a layout makes (a Column's children swapped),
    counting on the browser to pull the whole document later; but a browser that has pulled it already (its
    scripts cached: a page opened from another page in the same tab) never gets them, and a view fed once (a
    finished run's, deduped after) kept its placeholder for good. No server: at once, as Panel's onload does."""
    pn.state.onload(lambda: pn.state.add_periodic_callback(callback, period=period_ms))


def address_at_load(location, model: Any) -> None:
    """Put the run on show (model.run_id) in the page's address once the browser has the page: a bare address or a
    ?run= prefix gets its full id, one refused the run shown. Written at build, the browser's first report of its
    own address took it out again."""
    pn.state.onload(lambda: address(location, run=model.run_id))


def run_while(callback: Any) -> Callable[[Any], None]:
    """A watcher of a boolean parameter (a player's `playing`) that starts the periodic `callback` when it turns
    True and stops it when it turns False. Not for a session that ended meanwhile (a member's load awaited while
    its tab closed): Panel then starts an unscoped task that no session's cleanup stops, ticking for good."""
    doc = pn.state.curdoc  # None where no server serves the page

    def follow(event: Any) -> None:
        if not event.new:
            callback.stop()
        elif doc is None or doc.session_context is not None:
            callback.start()

    return follow


def model_watchers(model: param.Parameterized) -> list[Any]:
    """Every watcher on the parameters of `model` (the instance's own): of their values, and of their own
    attributes (bounds, label, precedence…: a widget made with Panel's from_param watches those too, on the
    instance's copy of the parameter). What a part of a page that is rebuilt left on the model can be told from
    what was there before (lab.param_editor)."""
    found = [w for kinds in model.param.watchers.values() for ws in kinds.values() for w in ws]
    for name in model.param:
        found += [w for ws in model.param[name].watchers.values() for w in ws]
    return found


class Follower(param.Parameterized):
    """What a view that a page replaces later (another run shown, a refresh) is bound to instead of its model's
    parameters: `changed` fires when any of `names` of `model` changes, until `unwatch()`. Bound to the model's
    parameters directly (pn.bind), a view kept Panel's watchers on the model after the page had dropped it (Panel
    never takes them out), and with them its panes and figures, redrawn (to nothing) at every change: three
    watchers more each time a page rebuilt its views, for as long as the tab stayed open (a helper's leak audit)."""

    changed = param.Event()

    def __init__(self, model: param.Parameterized, names: list[str]) -> None:
        super().__init__()
        self._model = model
        self._watcher = model.param.watch(self._fire, names)

    def _fire(self, *_: Any) -> None:
        self.param.trigger("changed")

    def unwatch(self) -> None:
        """The view stops following the model (idempotent): the page is replacing it."""
        if self._watcher is not None:
            self._model.param.unwatch(self._watcher)
            self._watcher = None


def served_location():
    """The page's address (pn.state.location) where a server serves it, else None."""
    return pn.state.location if served() else None


def address(location, **query: str | int | None) -> None:
    """Set (a value) or drop (None) query parameters of the page's address, the others kept: ?run=ID of the run on
    show, so that a reload, a bookmark or a link come back to it (the Atlas and the Lab kept the run they opened
    with after another was shown, and a reload brought the first back). No address (None): nothing."""
    if location is None:
        return
    current = dict(urllib.parse.parse_qsl((location.search or "").lstrip("?")))
    for key, value in query.items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = str(value)
    search = "?" + urllib.parse.urlencode(current) if current else ""
    if search != (location.search or ""):
        location.search = search


def newest_readable(ids: Iterable[str], read: Callable[[str], Any]) -> tuple[str | None, Any, list[str]]:
    """The first of `ids` (newest first) whose files `read` reads, what it read (kept for the page's model), and
    why each before it could not be read (ValueError's words): a page's default run, passed over where damaged (the
    newest run's cut recipe.yaml or hand-edited run.json made the Merge and Experts pages a traceback before they
    were built); run_alert says the reasons (the model's `skipped`)."""
    skipped = []
    for run_id in ids:
        try:
            return run_id, read(run_id), skipped
        except ValueError as exc:
            skipped.append(str(exc))
    return None, None, skipped


def run_alert(model: Any, run: str | None = None) -> pn.pane.Alert:
    """Open `run`, or the URL's ?run=ID, in the page's model (its .choose(id)); the page's error line, showing
    why when the run could not be opened (an unknown id, a run of another kind), else why the newest runs were
    passed over (the model's `skipped`, where it has one), else hidden."""
    alert = live(pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width", margin=(0, 10)),
                 urgent=True)
    arg = run or run_asked(pn.state.session_args, getattr(model, "runs_dir", None))
    if arg:
        try:
            model.choose(arg)
        except ValueError as exc:
            alert.param.update(object=plain(str(exc)), visible=True)
    if not alert.visible:
        show_passed_over(alert, model)
    return alert


def show_passed_over(alert: pn.pane.Alert, model: Any, first: str = "") -> None:
    """The page's error line says `first` (why a run asked for cannot be shown), else the runs of its kinds `model`
    passed over (its `skipped`: runs the catalog left out, newer runs it could not read), or is hidden where there
    are none (a refresh after they were mended)."""
    text = first or passed_over_line(getattr(model, "skipped", None) or [])
    alert.param.update(object=plain(text), visible=bool(text))


def passed_over_line(skipped: list[str]) -> str:
    """A page's line for the runs of its kinds it passed over ("run ID: reason", each): "" for none."""
    # " · " between them: a reason that ends with its fix ran into the next run's words
    return f"Passed over: {' · '.join(skipped)}" if skipped else ""


def no_runs_page(slug: str, alert: pn.pane.Alert, text: str, standalone: bool = False):
    """A run explorer's page while its folder holds no run of its kinds: the note `text` (the command that
    makes one) and a sidebar that says what to do, so the page looks like its siblings."""
    hint = pn.pane.Markdown("No runs to show yet. Make one (see the note), then reload this page.",
                            sizing_mode="stretch_width")
    # in a Column that stretches: alone in the template's main area, the note's box took its 640 px in any window
    note = pn.Column(placeholder(text, 640, 200), sizing_mode="stretch_width")
    return shell(slug, [alert, note], [hint], standalone=standalone)


def put_back(widget: pn.widgets.Widget, read: Callable[[], Any]) -> None:
    """Show the value read() gives (the model's) in `widget` again after the page refused what the user typed
    there: in a served page on the next tick (a change made while the browser's own change is handled is not sent
    back to it), read then (the model may have changed meanwhile)."""
    if served():
        pn.state.curdoc.add_next_tick_callback(lambda: setattr(widget, "value", read()))
    else:
        widget.value = read()


def checked_int_input(model: Any, name: str, on_refused: Callable[[str], None] | None = None,
                      **kw: Any) -> pn.widgets.IntInput:
    """An IntInput for the Integer parameter `name` of `model` whose refusals the browser sees: a value the
    parameter refuses (out of its bounds, or the field emptied) is put back in the field to the value the model
    keeps, and on_refused(why) is told; on_refused("") when a value is taken after one. (from_param reverted the
    widget on the server only: the field kept showing the refused number while a search started with the old
    one.) label= names the field (default: the parameter's label). Bounds the model sets later (a run's members, a
    trace's tokens) are the ones a refusal names."""
    p = model.param[name]
    label = kw.pop("label", p.label)
    kw.setdefault("description", p.doc)  # as from_param's widgets: the parameter's doc as the field's tooltip
    # no start/end for the browser: Bokeh's input sends the bound for a number beyond it and keeps showing
    # the number typed; every number comes here, and one refused is put back
    widget = pn.widgets.IntInput(label=label, value=getattr(model, name), **kw)

    refused = [False]  # a refusal is on show: the next value taken clears it (on_refused(""))

    def to_model(event) -> None:
        if event.new == getattr(model, name):
            return
        low, high = model.param[name].bounds or (None, None)  # read now: a page may move them (a run's size)
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        try:
            if event.new is None:
                raise ValueError("it was left empty")
            setattr(model, name, event.new)
        except ValueError as exc:
            put_back(widget, lambda: getattr(model, name))
            if on_refused is not None:
                why = "it was left empty" if event.new is None else f"got {event.new}"
                on_refused(f"{label} takes a whole number {span} ({why}; kept {getattr(model, name)})"
                           if low is not None else str(exc))
                refused[0] = True
            return
        if refused[0] and on_refused is not None:
            refused[0] = False
            on_refused("")

    widget.param.watch(to_model, "value")
    model.param.watch(lambda event: setattr(widget, "value", event.new), name)
    return widget


def export_controls(write: Callable[..., Any]) -> tuple[pn.widgets.Select, pn.Row, pn.widgets.Button,
                                                      pn.pane.Markdown, pn.widgets.FileDownload]:
    """A run explorer's "export for a paper" controls: a format menu, the printed size (a column: a row of the
    figure's width in inches and its font, and the legend's new names), the export button and what it did: a
    status line, and once a file is written a button that downloads it to the browser (the file is on the
    server's disk). A click runs write(suffix, width=, font=, rename=) off the event loop (it writes the figure on
    show and returns the file's path; export_settings says what it is given) and says what it wrote, or why it
    could not (its ValueError, in the page's words; a folder it may not write: cannot_write).
    The status line is the page's to use as well (the download button hides while it says something else)."""
    from workbench.figures import COLUMN_WIDTH, FORMATS, PAGE_WIDTH, UNPRINTED

    # .csv too: the figure's numbers, a row per point (figures.figure_table), to re-plot in a paper's own style or
    # read (a chart is an image to a screen reader)
    fmt = pn.widgets.Select(label="Format", options=list(FORMATS), value=".png", sizing_mode="stretch_width")
    # empty: the figure's own size, as the CLI without --width. No start/end: the browser's bounds kept the
    # number typed on show and sent 0 (100 and 0.5 were exported as "got 0.0"); the export says what it takes
    width = pn.widgets.FloatInput(label="Width (in)", value=None, step=0.25,
                                  placeholder="its own", sizing_mode="stretch_width",
                                  description=f"the printed width in inches, text kept at 7-9 pt: a column "
                                              f"{COLUMN_WIDTH:g}, a two-column page {PAGE_WIDTH:g}, a one-column "
                                              f"NeurIPS/ICLR page 5.5; empty: the figure's own")
    font = pn.widgets.Select(label="Font", options=["sans", "serif"], value="sans", sizing_mode="stretch_width",
                             description="serif: STIX, Times-like, for a paper set in Times")
    legend = pn.widgets.TextAreaInput(label="Rename legend entries", rows=2, sizing_mode="stretch_width",
                                      placeholder="sigma=0.3, seed=1 → ours",
                                      description="one entry a line, NAME → NEW (or ->), as `figure --rename NAME "
                                                  "NEW`: a paper's names for the runs' settings; empty: as drawn")
    size = pn.Column(pn.Row(width, font, sizing_mode="stretch_width"), legend, sizing_mode="stretch_width")
    export = pn.widgets.Button(label="export", color="primary", sizing_mode="stretch_width")
    status = live(pn.pane.Markdown("", sizing_mode="stretch_width"))
    download = download_button()

    def offer_only_what_was_written(event) -> None:  # the page's other messages hide the last file's button
        if not str(event.new).startswith("written"):
            download.visible = False

    status.param.watch(offer_only_what_was_written, "object")

    # an .html figure fills its page in the page's own font; a .csv is the figure's numbers
    def unprinted_takes_no_size(event=None) -> None:
        width.disabled = font.disabled = fmt.value in UNPRINTED

    fmt.param.watch(unprinted_takes_no_size, "value")

    async def on_export(event):
        try:
            settings = export_settings(fmt.value, width.value, font.value, legend.value)
            path = await off_loop(functools.partial(write, fmt.value, **settings), busy=[export])
            status.object = as_text(f"written {code(path)}")  # the run's id in the path
            offer(download, path)
        except ValueError as exc:
            status.object = f"**cannot export:** {plain(page_words(str(exc)))}"
        except Exception as exc:  # noqa: BLE001 - a failure of the plotting library: said here, not only in the log
            if (refused := cannot_write(exc)) is not None:  # the folder's fault (a store served read-only), no bug's:
                status.object = f"**cannot export:** {plain(refused)}"  # said, with no traceback in the log
                return
            status.object = f"**export failed:** {plain(failed(exc))}"
            raise

    export.on_click(on_export)
    return fmt, size, export, status, download


def download_button() -> pn.widgets.FileDownload:
    """A button, hidden until `offer` hands it a file, that downloads a file the page wrote to the browser: the
    file is on the server's disk, and a browser elsewhere (an SSH tunnel to a GPU box) has no other way to it."""
    return pn.widgets.FileDownload(label="download", embed=False, visible=False, color="light",
                                   sizing_mode="stretch_width", stylesheets=[WRAPPED_BUTTON])


#: a button whose label wraps within it (a file's name ran past a sidebar's button and over its neighbour)
WRAPPED_BUTTON = ":host .bk-btn { white-space: normal; overflow-wrap: anywhere; height: auto; }"


def offer(download: pn.widgets.FileDownload, path: str | os.PathLike, what: str | None = None) -> None:
    """Show `download` for the file at `path`: "download NAME", or "download WHAT" (a short label where the button
    is narrow; the file keeps its name)."""
    name = os.path.basename(str(path))
    download.param.update(file=str(path), filename=name, label=f"download {what or name}", visible=True)


def export_settings(suffix: str, width: float | None, font: str, renames: str = "") -> dict[str, Any]:
    """What an export's write is given besides its format: the printed width and font of a .png, .svg or .pdf
    (figures.save's width and font; none for .html, which fills its page in the page's own font, or .csv, the
    figure's numbers: figures.UNPRINTED) and the legend's new names (parse_renames), any format."""
    from workbench.figures import UNPRINTED

    printed = {"width": None, "font": None} if suffix in UNPRINTED else \
        {"width": None if width is None else float(width), "font": None if font == "sans" else font}
    return {**printed, "rename": parse_renames(renames)}


#: what separates a legend entry's name from its new one on a line of the export's renames ("=" is in the names)
RENAME_ARROWS = ("→", "->")


def parse_renames(text: str) -> dict[str, str]:
    """The export controls' renames, one a line as NAME → NEW (or NAME -> NEW), as {NAME: NEW} for figures.save's
    rename; blank lines are skipped. A line without an arrow, or a name given twice (figures.rename_pairs), is
    refused (ValueError) in the `--rename` words page_words turns into the field's."""
    from workbench.figures import rename_pairs

    pairs = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        arrow = next((a for a in RENAME_ARROWS if a in line), None)
        if arrow is None:
            raise ValueError(f"--rename: write each line as NAME → NEW, got {line.strip()!r}")
        pairs.append(tuple(part.strip() for part in line.split(arrow, 1)))
    return rename_pairs(pairs)


#: the CLI flags the library's messages name, as the export controls label them
PAGE_WORDS = {"--width": "Width", "--font": "Font", "--rename": "Rename legend entries"}


#: errno -> what to do, for a write refused by the place written to (cannot_write); a page's words, not the CLI's
#: flags: the server's user is who writes (a colleague's store served read-only was "PermissionError: [Errno 13]")
_WRITE_HINTS = {
    errno.EACCES: "the server's user may not write there: check the folder's permissions, or serve a copy of the "
                  "runs in a folder it can write",
    errno.EPERM: "the server's user may not write there: check the folder's permissions",
    errno.EROFS: "a read-only file system: serve a copy of the runs in a folder that can be written",
    errno.ENOSPC: "free some space", errno.EDQUOT: "free some space (the disk quota is used up)",
    errno.ENOTDIR: "a file stands where a folder should be", errno.EEXIST: "a file stands where a folder should be",
}


def cannot_write(exc: BaseException) -> str | None:
    """Why a page's write (a snapshot, an export, a note, a run's folder) failed, where the cause is the place
    written to, not the code: the folder that refused it, the system's words and what to do, as plain text (as
    failed's; plain() it for Markdown): "runs: Permission denied (the server's user may not write there: …)".
    None for any other failure (said by failed() and raised, for the log's traceback). The folder named is the
    nearest one that exists: a new run's or an export's folder that could not be made does not exist, and its
    parent is what is read-only (a rename names the folder it moves within)."""
    if not isinstance(exc, OSError) or exc.errno not in _WRITE_HINTS:
        return None
    named = exc.filename2 if exc.filename2 is not None else exc.filename
    if named is None:  # a full disk names no file
        return f"{exc.strerror or exc} ({_WRITE_HINTS[exc.errno]})"
    path = Path(os.fsdecode(named))
    if exc.filename2 is not None:
        path = path.parent
    where = next((p for p in (path, *path.parents) if os.path.lexists(p)), path)
    return f"{where}: {exc.strerror or exc} ({_WRITE_HINTS[exc.errno]})"


def failed(exc: BaseException) -> str:
    """What a page says of a failure that is no ValueError (a library's, a bug): its type and first line, so that
    the page shows it and ends its "running…" instead of waiting for good while only the server's log tells why.
    Plain text, as the exception says it: plain() it for a Markdown pane (a message's <...>, a repr or a path,
    vanished there as HTML)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


#: characters Markdown reads as syntax, as entities inside a code span as_text writes as HTML (entities are text)
_MARKDOWN_SYNTAX = {c: f"&#{ord(c)};" for c in "\\`*_~[]()$!|"}
#: the characters of those that make Markdown outside a code span (emphasis, strikes, links, escapes, maths,
#: tables): "(", ")" and "!" make nothing once "[" and "]" are text, and a message reads better with them as they are
_TEXT_SYNTAX = {c: f"&#{ord(c)};" for c in "\\`*_~[]$|"}


def _code_span(span: str) -> str:
    """One `code` span of as_text: as it is where it holds no "<" (then nothing in it can be HTML, whatever
    Markdown makes of its backticks), else as a <code> element of its own with its text escaped."""
    inner = span[1:-1]
    return span if "<" not in inner else f"<code>{code_content(inner)}</code>"


def code_content(text: str) -> str:
    """`text` as the inside of a <code> element in Markdown: HTML escaped, and Markdown's syntax as entities (Markdown
    reads inline HTML's inside, so `*x*` there was emphasis)."""
    return "".join(_MARKDOWN_SYNTAX.get(c, c) for c in html.escape(text, quote=False))


def as_text(message: str) -> str:
    """`message` (a library's words: an error, a run id, a path) for a Markdown pane, with every "<" of it as an
    entity: a run folder named, a note or a config value written by someone else (a colleague's shared run, a
    downloaded one) holding HTML is shown as its text, never run in the page (a folder named
    `x<img src=x onerror=...>` ran its script on the Lab, Atlas, QD, Experts and Search pages). Markdown is kept
    (**bold**, `code`), and text escaped already (failed's) is left as it is. A plain `span` (one backtick each
    side, not escaped, on one line) holding a "<" becomes a <code> element whose text is escaped: the only "<" left
    are its own, so no reading of the backticks (a link's destination or title swallowing one, a run of two
    backticks pairing the one before it: Markdown's and this regex's differ) can let HTML through. Kept too: a
    <code> element of code(), and a hover tag `<code title="…">…</code>`, with nothing but escaped text inside
    (experts.model_text's "…/zoo/base" with the whole path on hover: shown as its markup, tags and all, once
    messages were escaped). Values put in a message are literal() or code(); a library's words are plain()."""
    return _around_code_spans(message, lambda text: text.replace("<", "&lt;"))


def _around_code_spans(message: str, outside: Callable[[str], str]) -> str:
    """`message` with its code spans (_CODE_SPANS) kept, a plain one holding "<" as a <code> element of its own
    (_code_span), and the text between them given to `outside`."""
    parts = _CODE_SPANS.split(message or "")
    return "".join((p if p.startswith("<code") else _code_span(p)) if i % 2 else outside(p)
                   for i, p in enumerate(parts))


#: as_text's code spans: one backtick each side (not escaped, on one line), or a <code> element of code() or
#: model_text (a hover title at most) with nothing but escaped text inside
_CODE_SPANS = re.compile(r"((?<![`\\])`[^`\n]+`(?!`)|<code(?: title=\"[^\"<>]*\")?>[^<>`]*</code>)")


#: what literal() writes for a character that is never text in Markdown as it is: "&" began an entity (a folder
#: named `R&amp;D` read "R&D", `&copy;` "©"), "<" HTML, the rest _TEXT_SYNTAX
_LITERAL = {"&": "&amp;", "<": "&lt;", **_TEXT_SYNTAX}
#: characters that make Markdown only where they stand: at a line's start (after its indent) a heading "#", a quote
#: ">", a list "-", "+" or "1." / "1)", a setext underline "=", a definition ":" (a value may start a line: the
#: page cannot tell); and the ones the pages' linkify reads as a web link or a mail address ("x.com", "weights.pt",
#: "http://…", "a@b"): a dot after any character but a space and before a letter (of any script: "é.com" and
#: "x.рф" are links too), "://", "mailto:" and "@". A line starts after "\n" or a lone "\r" (Markdown's too)
_MARKS = re.compile(r"(?m)(?:^|(?<=\r))[ \t]*(?:[#>+=:-]|\d{1,9}[.)](?=[ \t\r]|$))"
                    r"|(?<=\S)\.(?=[^\W\d_])|:(?=//)|(?i:(?<=mailto)):|@")


def literal(value: object) -> str:
    """`value` (a run id, a model's or task's name, a path: anyone's characters) for Markdown outside a code span,
    shown as its characters: every character Markdown reads as syntax, and "<" and "&", as an entity. A run folder
    named `a*b*` was "a<em>b</em>" in an alert, `_draft_` was in italics, `[x](y)` a link, `# x` a heading,
    `x.com` a link to the web."""
    text = str(value)
    marked = {m.end() - 1 for m in _MARKS.finditer(text)}  # each match ends with the character that makes Markdown
    return "".join(f"&#{ord(c)};" if i in marked else _LITERAL.get(c, c) for i, c in enumerate(text))


def code(value: object) -> str:
    """`value` as a code span that shows it as it is, whatever it holds: `value` in backticks where that reads back
    as `value` (no backtick, "<" or line break in it, no space at its ends), else a <code> element of its escaped
    text (as_text keeps both)."""
    text = str(value)
    if text and not re.search(r"[`<\n]", text) and text == text.strip():
        return f"`{text}`"
    return f"<code>{code_content(text)}</code>"


def plain(message: str) -> str:
    """A library's words (an error, a note: plain text whose only Markdown is its `code` spans, as the command line
    shows them) for a Markdown pane: as_text, with every Markdown character outside the code spans shown as itself
    (literal): "no run 'a*b*'" read "no run 'a<em>b</em>'"."""
    return _around_code_spans(message, literal)


class TextMultiChoice(pn.widgets.MultiChoice):
    """A MultiChoice whose options (run ids: folder names anyone may have made) are shown as text: Bokeh's menu
    (choices.js, with allowHTML on) drew an option's HTML, and a run folder named `x<img src=x onerror=...>` ran its
    script as the Runs page opened. The browser gets each option escaped; its choice comes back unescaped."""

    def _process_param_change(self, params: dict[str, Any]) -> dict[str, Any]:
        props = super()._process_param_change(params)
        for key in ("options", "value"):
            if key in props:
                props[key] = [html.escape(str(v), quote=False) for v in props[key]]
        return props

    def _process_property_change(self, props: dict[str, Any]) -> dict[str, Any]:
        if "value" in props:
            props = {**props, "value": [html.unescape(v) for v in props["value"]]}
        return super()._process_property_change(props)


def ids_digest(ids) -> str:
    """8 hex digits that name a set of run ids in an export's file name, whatever their order (the same runs, the
    same file): the Runs page's comparison, the QD page's baselines pooled over seeds."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:8]


def page_words(message: str) -> str:
    """A library message naming the fix as a `workbench figure` flag, reworded for the export controls."""
    for flag, label in PAGE_WORDS.items():
        message = message.replace(flag, label)
    return message


class PageThread:
    """Calls into a page's Bokeh document from any thread. Raw Bokeh models may only change on the
    server's event loop while the document is locked; work that runs on a worker thread hands its
    display updates to `call`, which runs them there (directly when already inside a locked callback, or
    when not served; else queued to one)."""

    def __init__(self) -> None:
        self.doc = pn.state.curdoc
        self.loop_thread = threading.get_ident()

    def call(self, fn: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self.loop_thread and self._locked():
            fn(*args)
        else:
            self.call_later(fn, *args)

    def _locked(self) -> bool:
        """Whether the document may change here and now: unserved, or inside one of Bokeh's locked callbacks.
        The event loop also runs code outside them: Panel hands a click that arrives while an earlier change
        of the page is still pending (a slider moved, then "step") to a task of its own, and a raw model
        changed there makes Bokeh raise ("_pending_writes should be non-None ...") and the update is lost."""
        session = getattr(getattr(self.doc, "session_context", None), "session", None)
        return session is None or session._pending_writes is not None

    def call_later(self, fn: Callable[..., None], *args: Any) -> None:
        """Like call, but from the event loop too it queues fn behind the document's pending updates (in
        order with those of worker threads) instead of running it now."""
        doc = self.doc
        if doc is None or doc.session_context is None:
            fn(*args)
            return
        def locked() -> None:
            # never raise out of a locked callback: Bokeh then drops the changes it queued for the browser
            # (this update's and, with ordered_patches, Panel's), and later messages name models it never got
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - logged: the page goes on with its other updates
                logging.getLogger("workbench.dashboards").exception(
                    "a page update failed (%s)", getattr(fn, "__qualname__", repr(fn)))

        try:
            doc.add_next_tick_callback(locked)
        except Exception:  # noqa: BLE001 - the session closed while the work ran: nobody to show it to
            return

    def wrap(self, fn: Callable[..., None]) -> Callable[..., None]:
        return lambda *args: self.call(fn, *args)


async def off_loop(fn: Callable[..., Any], *args: Any, busy: Iterable[pn.viewable.Viewable] = ()) -> Any:
    """Run fn(*args) on a worker thread, the given components showing a busy spinner meanwhile: the
    server's event loop keeps serving every other session (and this one's other widgets)."""
    busy = list(busy)
    page = PageThread()
    # The spinner goes on and off through the document's next-tick queue, the queue the worker's own display
    # updates take (PageThread, Panel's scheduled changes): set directly from this coroutine, Panel writes the
    # change to the socket outside Bokeh's lock, and when a write was under way it queued "on" behind it while
    # "off", an instant later, went out first — the spinner then stayed for good (the Lab's load button).
    page.call_later(_set_loading, busy, True)
    try:
        return await asyncio.to_thread(fn, *args)
    finally:
        page.call_later(_set_loading, busy, False)


# component -> off_loop calls under way that show its spinner. Weak: a tab closed mid-work never runs its "off",
# and a count kept by id() would then pass to whichever later component got the same id (a spinner for good).
_BUSY: weakref.WeakKeyDictionary[pn.viewable.Viewable, int] = weakref.WeakKeyDictionary()


def _set_loading(items: list[pn.viewable.Viewable], value: bool) -> None:
    """Counted per component: two calls that share one (a load and a substrate switch on the Lab's frame) keep
    its spinner until the last of them ends. Runs on the event loop (or where off_loop runs, unserved)."""
    for item in items:
        count = _BUSY.get(item, 0) + (1 if value else -1)
        if count > 0:
            _BUSY[item] = count
        else:
            _BUSY.pop(item, None)
        item.loading = count > 0


class _ClosedSessionNoise(logging.Filter):
    """Drops the log records Bokeh and Tornado write when a browser tab closes while the server still works
    for it: a message of the closed tab handled after its session was detached (AssertionError in
    bokeh.server.connection), and sends to the closed websocket. Any other error still gets through."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            return not (_detached_session(exc) or type(exc).__name__ in ("WebSocketClosedError", "StreamClosedError"))
        text = record.getMessage()
        if "Failed sending message as connection was closed" in text:
            return False
        if "AssertionError()" in text and "error handling message" in text:
            return False  # bokeh.server.protocol_handler logs the same error again without a traceback
        return True


def _detached_session(exc: BaseException) -> bool:
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return (isinstance(exc, AssertionError) and last is not None and last.tb_frame.f_code.co_name == "session"
            and last.tb_frame.f_code.co_filename.endswith("connection.py"))


def quiet_closed_sessions() -> None:
    """Install the closed-tab filter on the loggers that report it (idempotent)."""
    for name in ("bokeh.server.views.ws", "bokeh.server.protocol_handler", "asyncio", "tornado.application"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ClosedSessionNoise) for f in logger.filters):
            logger.addFilter(_ClosedSessionNoise())


@functools.cache
def ordered_patches() -> None:
    """Page updates reach the browser in the order they were made (once per process; pages call it).

    Bokeh serialises a change when it is made, and sends a model's full definition only the first time; later
    messages name it by id. Inside one of Bokeh's locked callbacks (our next-tick updates: PageThread, the
    spinners) Panel does not leave its widgets' changes to Bokeh, which queues them in order behind the
    callback: it writes them to the socket itself, at once or, while the socket is busy, from a task of its
    own that retries every 10 ms. Later updates of the page then went out first: every Lab load of a run
    reordered a few messages, and when a late one held the definition of a model that an early one named,
    the browser failed with "reference pNNNN isn't known" (the Lab's load of a run from the gallery, about one
    load in 60 under the Chromium tests; the websocket frames showed the definition arriving after the
    reference). Inside a locked callback these changes now go back to Bokeh's own queue, in order; outside
    one (Panel's handling of a click) Panel's direct path stays, since Bokeh could not send them there."""
    from panel.io import document as panel_document

    if not all(hasattr(panel_document, name) for name in ("write_events", "schedule_write_events", "_WRITE_MSGS")):
        return  # a Panel that dispatches otherwise (these are Panel 1.9's internals): its own order stays
    direct, deferred = panel_document.write_events, panel_document.schedule_write_events

    def to_bokeh(doc: Any, events: list) -> bool:
        """Inside a locked callback: queue Panel's unsent messages for this page, then these events, behind the
        callback in Bokeh's order (False elsewhere: Panel's own path stays)."""
        session = getattr(getattr(doc, "session_context", None), "session", None)
        if getattr(session, "_pending_writes", None) is None:
            return False
        # messages Panel made earlier (outside a lock, its socket busy) and has not sent: they go first
        for conn, messages in panel_document._WRITE_MSGS.pop(doc, {}).items():
            session._pending_writes.extend(conn._socket.send_message(m) for m in messages)
        for event in events:  # sent as Panel sends them: a change made here is not news to the model's
            event.callback_invoker = None  # Python callbacks (Panel's would take it for the browser's)
        doc.callbacks._held_events += events  # Panel's unlocked() unholds the document next: Bokeh sends them
        return True

    def write_events(doc: Any, connections: Any, events: list) -> None:
        if not to_bokeh(doc, events):
            direct(doc, connections, events)

    def schedule_write_events(doc: Any, connections: Any, events: list) -> None:
        if not to_bokeh(doc, events):
            deferred(doc, connections, events)

    panel_document.write_events = write_events
    panel_document.schedule_write_events = schedule_write_events


@functools.cache
def local_stylesheets() -> None:
    """A pane hidden in a dynamic Tabs keeps its stylesheets on our server when it changes (once per process).

    A dynamic Tabs keeps the model of a tab it hides, out of the document, to show it again later. When such a
    pane changes (the Experts mixer's answer landing after a switch of run or tab, a spinner going off), Panel
    rebuilds its properties for a document of None, and with no document to ask it takes the CDN for the place
    of Panel's stylesheets: it rewrites the shared loading.css and markdown.css of the page to
    cdn.holoviz.org, and the browser, offline, fails to fetch them. Panel is asked for the document the change
    is made in instead (the current one of the session, which knows its server's address); where there is none
    (a notebook, a saved file) Panel's own choice stays."""
    from panel.io.state import state
    from panel.reactive import Reactive

    own = getattr(Reactive, "_get_properties", None)
    if own is None:  # a Panel without this private method: its own behaviour, and the pages still build
        logging.getLogger(__name__).warning("Panel %s has no Reactive._get_properties: hidden tabs' panes may "
                                            "point the page's stylesheets at the CDN", pn.__version__)
        return

    @functools.wraps(own)
    def get_properties(self: Reactive, doc: Any = None, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if doc is None:
            current = state.curdoc
            if current is not None and "dist_url" in getattr(current, "_template_variables", {}):
                doc = current
        return own(self, doc, *args, **kwargs)

    Reactive._get_properties = get_properties


@functools.cache
def serial_blas() -> None:
    """OpenBLAS without worker threads of its own, in a server process (once; serve() and pages served alone).

    OpenBLAS stops its workers before any fork (its pthread_atfork handler). A search thread forked when it wrote
    its run's video (imageio started ffmpeg with a preexec_fn: a real fork), and a threaded BLAS call running on
    the event loop's thread meanwhile (the Atlas page's PCA) waited for its stopped worker for good: the loop
    spun in OpenBLAS's exec_blas and every page of the server hung (seen under the Chromium tests, about one
    run in five). Videos are now written without a fork (export.Mp4Writer), but any library that starts a
    process with a preexec_fn, or forks, would do the same. A serial OpenBLAS has no worker to wait for. What
    the pages hand to numpy is small (a PCA of a few hundred embeddings); torch, which does the heavy work,
    keeps its own threads. The variable covers the OpenBLAS copies loaded later (scipy's, with t-SNE);
    threadpoolctl the ones already loaded (numpy's).
    It holds for the rest of the process (a threaded serve() in a notebook too) and for the processes it starts."""
    from threadpoolctl import threadpool_limits

    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    threadpool_limits(limits=1, user_api="blas")
