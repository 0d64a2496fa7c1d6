"""A progress bar for long work in a notebook: what the CLI's rich bar is on a terminal.

Every run function takes an `on_iteration(done, total, metrics row)` callback (run_search, evolve, run_cycleqd,
train_expert, adapt, train_namm) and build_zoo a `progress(k)` one; a `Progress` is either:

    from workbench.progress import Progress
    run = run_search(cfg, store, on_iteration=Progress("search"))
    path = build_zoo(out, cfg, progress=Progress("zoo", total=total_steps(cfg)))  # workbench.lm.total_steps

In a notebook it is an ipywidgets bar with the count, the best so far and the time taken, redrawn at most ten
times a second (each redraw is a message to the browser: a fast loop's thousands a second passed Jupyter's IOPub
rate limit, which drops output, the bar's last count included); elsewhere (a script, a test, a kernel without
ipywidgets) one plain line per tenth of the work on stderr, so that nothing floods a log.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import weakref

#: seconds between two redraws of a notebook's bar (its first count, its full one and the one an error ended at are
#: drawn however soon they come)
REDRAW_S = 0.1


def _in_notebook() -> bool:
    """Whether an IPython kernel with a front end that shows widgets runs this (not a terminal IPython), with
    ipywidgets importable: a kernel without it (an environment of its own) gets the plain lines, not an ImportError
    from Progress(…), which ended the cell before its run began."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


#: the bar called last (weakly): of the bars a cell made, the one whose work an error that ends the cell ended
_last_called = None


class Progress:
    """A progress bar for one piece of long work; call it as the work goes on (see the module's docstring).

    Args:
        label: what the work is ("search", "zoo"), shown before the bar.
        total: the number of steps, if known before the first call (on_iteration callbacks bring their own).
        metric: the row's key shown as the best so far ("best_loss" by default; shown only where the row has it).
    """

    def __init__(self, label: str, total: int | None = None, metric: str = "best_loss"):
        self.label, self.total, self.metric = label, total, metric
        self.done, self.best, self.started = 0, None, time.monotonic()
        self._widgets = self._shown_at = None
        self._drawn = -math.inf  # time.monotonic() of the bar's last redraw
        if _in_notebook():
            import ipywidgets as widgets
            from IPython.display import display

            bar = widgets.IntProgress(value=0, min=0, max=max(total or 1, 1), description=label,
                                      bar_style="info", style={"description_width": "initial"})
            text = widgets.Label(value="setting up …")
            self._widgets = (bar, text)
            # shown with a plain text of its own, which the work's end rewrites: where widgets are not drawn (a
            # saved notebook on GitHub, jupyter console) the text read "HBox(children=(IntProgress(value=0, …"
            self._view = widgets.HBox([bar, text])._repr_mimebundle_()
            self._view["text/plain"] = f"{label}: setting up …"
            self._handle = display(self._view, raw=True, display_id=True)
            # the cell's end says how the work ended: an interrupted run's bar stayed blue at its last count (at
            # "setting up …" before its first iteration), and green "10/10" where the interrupt landed in the
            # run's last writes (best.mp4, the tables), while the run was stopped. Only from the kernel's main
            # thread, where cells run: a bar made in another thread belongs to no cell, and the next cell's error
            # (any typo) turned a background run's bar red while it went on
            if threading.current_thread() is threading.main_thread():
                sys.modules["IPython"].get_ipython().events.register("post_run_cell", self.cell_ended)

    def __call__(self, done: int, total: int | None = None, row: dict | None = None) -> None:
        """on_iteration(done, total, row) of the run functions, or progress(k) (k more steps) of build_zoo."""
        global _last_called
        _last_called = weakref.ref(self)
        if total is None:  # build_zoo's progress(k): k more steps
            self.done += done
        else:
            self.done, self.total = done, total
        value = (row or {}).get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            self.best = value
        self._show()

    def resumed(self, done: int, total: int, row: dict) -> None:
        """The run functions' call where a resumed run goes on from (done of total, its last row): drawn at once,
        where the bar read "setting up …" until the next iteration ended (a NAMM generation takes minutes)."""
        self(done, total, row)

    def cell_ended(self, result) -> None:
        """IPython's post_run_cell for the cell that made the bar (once): a KeyboardInterrupt that ended the cell
        turns the bar orange, "… · stopped" (the run is resumable: the exception's note says how); another error
        red, "… · failed: ValueError"; a cell that ended well draws the count a bar without a full total ended at.
        result: IPython's ExecutionResult (its error_in_exec)."""
        sys.modules["IPython"].get_ipython().events.unregister("post_run_cell", self.cell_ended)
        error = getattr(result, "error_in_exec", None)
        if self._widgets is None:
            return
        if error is None:
            if self._drawn > -math.inf and not self.finished:  # work that ended short of its total, or had none:
                self._draw()  # the count it ended at, which a redraw too soon after the one before skipped
                self._write_plain(self._widgets[1].value)
            return
        ended_a_run = getattr(error, "stopped_run", None) or getattr(error, "failed_run", None)
        if self.finished and not (ended_a_run and _last_called is not None and _last_called() is self):
            return  # its work was done before the error: a later line of the cell, or another bar's run
        self._draw()  # the count the error ended at, which a redraw too soon after the one before skipped
        bar, text = self._widgets
        stopped = isinstance(error, KeyboardInterrupt)
        bar.bar_style = "warning" if stopped else "danger"
        text.value = f"{self.text()} · " + ("stopped" if stopped else f"failed: {type(error).__name__}")
        self._write_plain(text.value)

    def text(self) -> str:
        """'12/40 · best loss 0.1234 · 5.2 s' (what the bar's label says)."""
        parts = [f"{self.done}/{self.total}" if self.total else f"{self.done}"]
        if self.best is not None:
            # + 0.0: a negated accuracy of 0 (the experts' and adapt's best_loss) is -0.0, which read "best loss -0"
            parts.append(f"{self.metric.replace('_', ' ')} {self.best + 0.0:.4g}")
        parts.append(f"{time.monotonic() - self.started:.1f} s")
        return " · ".join(parts)

    @property
    def finished(self) -> bool:
        """Whether the count has reached a known total."""
        return bool(self.total) and self.done >= self.total

    def _show(self) -> None:
        finished = self.finished
        if self._widgets is not None:
            if finished or time.monotonic() - self._drawn >= REDRAW_S:
                self._draw()
            return
        # the first step, then one line per tenth of the work: a script's log stays readable
        tenth = max(1, (self.total or 10) // 10)
        step = self.done // tenth
        if finished or step != self._shown_at:
            self._shown_at = step
            print(f"{self.label}: {self.text()}", file=sys.stderr, flush=True)

    def _draw(self) -> None:
        """The notebook's bar and label set to the count now (green once finished)."""
        self._drawn = time.monotonic()
        bar, text = self._widgets
        bar.max, bar.value = max(self.total or 1, 1), min(self.done, max(self.total or 1, 1))
        text.value = self.text()
        if self.finished and bar.bar_style != "success":
            bar.bar_style = "success"
            self._write_plain(text.value)

    def _write_plain(self, text: str) -> None:
        """The shown bar's plain text set to `text` (the widget drawn again beside it, where widgets are drawn)."""
        self._view["text/plain"] = f"{self.label}: {text}"
        self._handle.update(self._view, raw=True)
