"""workbench.progress: the notebook's bar for the run functions' callbacks, and its plain lines elsewhere."""


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
