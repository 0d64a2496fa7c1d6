"""workbench.progress: the notebook's bar for the run functions' callbacks, and its plain lines elsewhere."""

import re


def test_plain_progress_writes_the_first_step_each_tenth_and_the_best(capsys):
    from workbench.progress import Progress

    bar = Progress("search")
    for done in range(1, 41):
        bar(done, 40, {"best_loss": 1.0 / done})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 11 and lines[0].startswith("search: 1/40 ")
    assert lines[-1].startswith("search: 40/40 · best loss 0.025 · ")
    zoo = Progress("zoo", total=6)  # build_zoo's progress(k): k more steps
    for _ in range(3):
        zoo(2)
    assert zoo.done == 6 and zoo.best is None and capsys.readouterr().err.splitlines()[-1].startswith("zoo: 6/6 · ")
    nan = Progress("x")
    nan(1, 2, {"best_loss": float("nan")})
    assert nan.best is None


def test_notebook_progress_is_a_widget_that_ends_full():
    import nbformat
    from nbclient import NotebookClient

    code = ("from workbench.progress import Progress\n"
            "bar = Progress('search')\n"
            "for done in range(1, 6):\n"
            "    bar(done, 5, {'best_loss': 0.5 / done})\n"
            "print(bar._widgets[0].value, bar._widgets[0].max, bar._widgets[0].bar_style, bar._widgets[1].value)")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=180, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), outputs
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert text.startswith("5 5 success 5/5 · best loss 0.1 · "), text


def test_notebook_progress_says_how_its_cell_ended(tmp_path):
    """A cell that a Ctrl-C ended left its bar blue at the last count (green "3/3" where the interrupt landed in a
    run's last writes), one that an error ended likewise: the cell's end turns them orange "stopped" and red
    "failed: …". A bar whose work was done before the error stays green (a later line of the cell failed, or
    another bar's run), as does an earlier cell's; a bar made in another thread belongs to no cell."""
    import nbformat
    from nbclient import NotebookClient

    cells = ["import threading\nfrom workbench.progress import Progress\n"
             "from workbench.asal.driver import SearchConfig, run_search\n"
             "from workbench.asal.evaluate import EvalConfig\n"
             "stopped = Progress('search')\nstopped(3, 5)\nraise KeyboardInterrupt",
             "late = Progress('search')\ndef last(done, total, row):\n    late(done, total, row)\n"
             "    if done == total:\n        raise KeyboardInterrupt\n"
             "cfg = SearchConfig(kind='openended', eval=EvalConfig('boids', 'pixels', steps=8, frames=2), iters=3,"
             " pop=4)\n"
             f"run_search(cfg, {str(tmp_path / 'runs')!r}, on_iteration=last)",
             "failed = Progress('zoo')\nfailed(1, 5)\nraise ValueError('no such task')",
             "done = Progress('search')\ndone(5, 5)",
             "raise KeyboardInterrupt",
             "before = Progress('search')\nbefore(5, 5)\n1 / 0  # a plot of the run, after it",
             "first = Progress('a')\nfirst(5, 5)\nsecond = Progress('b')\nsecond(2, 5)\nraise KeyboardInterrupt",
             "made = threading.Event()\ndef work():\n    global bg\n    bg = Progress('bg')\n    bg(2, 5)\n"
             "    made.set()\nthreading.Thread(target=work).start()\nmade.wait()\nundefined_name",
             "for bar in (stopped, late, failed, done, before, first, second, bg):\n"
             "    print(bar._widgets[0].bar_style, bar._widgets[1].value.split(' · ')[0],"
             " bar._widgets[1].value.split(' · ')[-1])"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=True).execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    lines = [re.sub(r"\d+\.\d s$", "T", line) for line in text.splitlines()]
    assert lines == ["warning 3/5 stopped", "warning 3/3 stopped", "danger 1/5 failed: ValueError", "success 5/5 T",
                     "success 5/5 T", "success 5/5 T", "warning 2/5 stopped", "info 2/5 T"], text


def test_plain_progress_writes_its_last_step_and_a_count_without_a_total(capsys):
    """From mutation sampling: the last step is written even where it falls in the tenth of the step before (25
    steps: a line each 2nd; 25/25 shares 24/25's tenth); under ten steps each one is; the best to 4 digits; a
    count without a total (build_zoo's progress(k) given none) is the count alone, not "5/None"."""
    from workbench.progress import Progress

    bar = Progress("zoo")
    for done in range(1, 26):
        bar(done, 25, {"best_loss": 0.123456})
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" · ")[0] for line in lines] == [f"zoo: {n}/25" for n in [1, *range(2, 25, 2), 25]]
    assert lines[-1].startswith("zoo: 25/25 · best loss 0.1235 · ") and bar.finished
    few = Progress("few")
    for done in range(1, 6):
        few(done, 5)
    assert len(capsys.readouterr().err.splitlines()) == 5
    counted = Progress("steps")
    counted(2)
    counted(3)
    assert capsys.readouterr().err.splitlines()[-1].startswith("steps: 5 · ") and not counted.finished


def test_plain_progress_writes_a_negated_zero_as_zero(capsys):
    """A run whose best_loss is a negated accuracy (train_expert, adapt) at 0 hands over -0.0: the bar said
    "best loss -0" (notebook 07)."""
    from workbench.progress import Progress

    bar = Progress("expert")
    bar(1, 1, {"best_loss": -0.0})
    assert capsys.readouterr().err.splitlines()[-1].startswith("expert: 1/1 · best loss 0 · ")
    assert " -0 " not in bar.text()


def _run_cells(cells: list[str]) -> list:
    """The cells run in a fresh kernel (errors kept as outputs); their cells, outputs and all."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=True).execute()
    return nb.cells


def test_notebook_progress_redraws_a_fast_loop_a_few_times_a_second():
    """Each redraw is a message to the browser: 20000 fast steps sent 40000, past Jupyter's IOPub rate limit (1000
    a second), which drops messages, the bar's last count among them. The full count is drawn however soon it
    comes, and so is the count an error ended the cell at."""
    cells = _run_cells([
        "import time\nfrom workbench.progress import Progress\n"
        "fast = Progress('fast')\ndraws = []\nfast._widgets[1].observe(draws.append, 'value')\n"
        "start = time.monotonic()\nfor done in range(1, 20001):\n    fast(done, 20000)\n"
        "elapsed = time.monotonic() - start",
        "failed = Progress('failed')\nfor done in range(1, 20001):\n    failed(done, 20000)\n"
        "    if done == 15000:\n        raise ValueError('bad batch')",
        "print(len(draws) <= elapsed / 0.1 + 2, fast._widgets[0].bar_style, fast._widgets[1].value.split(' · ')[0])\n"
        "print(failed._widgets[0].value, failed._widgets[0].bar_style, failed._widgets[1].value.split(' · ')[0],"
        " failed._widgets[1].value.split(' · ')[-1])"])
    text = "".join(o.get("text", "") for o in cells[-1].outputs if o.output_type == "stream")
    assert text.splitlines() == ["True success 20000/20000", "15000 danger 15000/20000 failed: ValueError"], text


def test_notebook_progress_without_ipywidgets_writes_plain_lines():
    """A kernel without ipywidgets (an environment of its own) gets the plain lines: Progress(…) raised
    ModuleNotFoundError, which ended the cell before its run began."""
    cells = _run_cells(["import sys\nsys.modules['ipywidgets'] = None  # as an environment without it has\n"
                        "from workbench.progress import Progress\nbar = Progress('search')\n"
                        "for done in range(1, 4):\n    bar(done, 3, {'best_loss': 0.5 / done})"])
    outputs = cells[0].outputs
    assert all(o.output_type == "stream" and o.name == "stderr" for o in outputs), outputs
    lines = "".join(o.text for o in outputs).splitlines()
    assert [line.split(" · ")[0] for line in lines] == ["search: 1/3", "search: 2/3", "search: 3/3"], lines


def test_a_saved_notebook_says_how_each_bar_ended_in_plain_text():
    """Where widgets are not drawn (a saved notebook on GitHub, jupyter console) a bar is its plain text, which read
    "HBox(children=(IntProgress(value=0, …" however the work ended; it says the count and how it ended, a count
    without a total too."""
    cells = _run_cells([
        "from workbench.progress import Progress\ndone = Progress('search')\n"
        "for k in range(1, 4):\n    done(k, 3, {'best_loss': 0.5 / k})",
        "failed = Progress('zoo', total=10)\nfailed(4)\nraise ValueError('bad batch')",
        "_ = Progress('never called')",
        # a count without a total, called faster than the bar redraws: its last count was never drawn
        "counted = Progress('steps')\nfor _ in range(500):\n    counted(1)"])
    plain = [[o["data"]["text/plain"] for o in cell.outputs if "data" in o] for cell in cells]
    views = [[o["data"].get("application/vnd.jupyter.widget-view+json") for o in cell.outputs if "data" in o]
             for cell in cells]
    assert plain[0][0].startswith("search: 3/3 · best loss 0.1667 · "), plain
    assert plain[1][0].startswith("zoo: 4/10 · ") and plain[1][0].endswith(" · failed: ValueError"), plain
    assert plain[2] == ["never called: setting up …"], plain
    assert plain[3][0].startswith("steps: 500 · "), plain
    assert all(v and v[0] and v[0]["model_id"] for v in views), views  # still the widget, where widgets are drawn


def test_a_resumed_run_draws_the_count_it_goes_on_from_at_once(tmp_path, capsys):
    """A resumed run's bar read "setting up …" (the CLI's spinner, the notebook's 0) until its next iteration ended:
    minutes for a NAMM generation. The count it goes on from is drawn first, with its best so far."""
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.progress import Progress

    cfg = SearchConfig(kind="openended", eval=EvalConfig("boids", "pixels", steps=8, frames=2), iters=2, pop=4)
    run = run_search(cfg, str(tmp_path))
    best = run.info["best_loss"]
    capsys.readouterr()
    run_search(cfg, str(tmp_path), resume=run.id, iters=4, on_iteration=Progress("search"))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"search: 2/4 · best loss {best:.4g} · "), lines
    assert [line.split(" · ")[0] for line in lines] == ["search: 2/4", "search: 3/4", "search: 4/4"], lines
