"""Long per-iteration series on the pages: at most CURVE_POINTS rows of each line reach the browser (curve_rows),
every extreme and every step of a best-so-far curve kept; short series sent as they are."""

import numpy as np
import pandas as pd
import pytest

from workbench.figures import CURVE_POINTS, curve_rows, thin_curve
from workbench.runs import RunStore

LONG = 50_000


def _noisy(n: int = LONG, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=n).cumsum() * 0.01 + rng.normal(size=n)


def _sources(viewable) -> list[int]:
    """The lengths of the ColumnDataSources the Bokeh document of a page's view holds (what the browser gets)."""
    import panel as pn
    from bokeh.document import Document
    from bokeh.models import ColumnDataSource

    doc = Document()
    pane = viewable if isinstance(viewable, pn.viewable.Viewable) else pn.pane.HoloViews(viewable, backend="bokeh")
    doc.add_root(pane.get_root(doc))
    return [len(next(iter(s.data.values()), [])) for s in doc.select({"type": ColumnDataSource})]


def test_a_long_series_keeps_at_most_the_bound_its_ends_and_every_extreme():
    y = _noisy()
    rows = curve_rows(y)
    assert len(rows) <= CURVE_POINTS and rows[0] == 0 and rows[-1] == LONG - 1
    assert np.all(np.diff(rows) > 0)  # ascending, no row twice
    assert np.argmin(y) in rows and np.argmax(y) in rows
    # every extreme: a row highest or lowest within 2 × (rows / buckets) of it either side is its bucket's, kept
    span = 2 * -(-LONG // ((CURVE_POINTS - 2) // 2))
    window = pd.Series(y).rolling(2 * span + 1, center=True, min_periods=1)
    peaks = np.flatnonzero((y == window.max().to_numpy()) | (y == window.min().to_numpy()))
    assert len(peaks) > 100 and set(peaks) <= set(rows)
    assert np.array_equal(rows, curve_rows(y.copy()))  # deterministic
    two = curve_rows(y, -y[::-1], limit=500)
    assert len(two) <= 500 and np.argmax(-y[::-1]) in two


def test_a_best_so_far_curve_keeps_every_step_where_it_fits():
    y = np.minimum.accumulate(np.linspace(1, 0, LONG) + _noisy() * 0.05)
    changes = np.flatnonzero(np.diff(y)) + 1
    assert 10 < len(changes) < CURVE_POINTS // 2  # a search's curve: hundreds of improvements, not thousands
    rows = curve_rows(y)
    assert len(rows) <= CURVE_POINTS and set(changes) <= set(rows) and set(changes - 1) <= set(rows)
    # drawn as a line, the kept rows are the full curve: the same value at every iteration
    np.testing.assert_array_equal(np.interp(np.arange(LONG), rows, y[rows]), y)


def test_a_best_so_far_curve_with_more_steps_than_the_bound_keeps_each_buckets_last_improvement():
    y = np.minimum.accumulate(np.linspace(1, 0, LONG) + _noisy() * 1e-4)
    assert len(np.flatnonzero(np.diff(y))) > CURVE_POINTS
    rows = curve_rows(y)
    assert len(rows) <= CURVE_POINTS and y[rows[-1]] == y.min() and np.all(np.diff(y[rows]) <= 0)


def test_nan_rows_keep_their_gap_and_short_series_are_sent_as_they_are():
    y = _noisy()
    y[1000:1200] = np.nan
    rows = curve_rows(y)
    assert len(rows) <= CURVE_POINTS and np.isnan(y[rows]).any()
    short = _noisy(CURVE_POINTS)
    assert np.array_equal(curve_rows(short), np.arange(CURVE_POINTS))
    table = pd.DataFrame({"iteration": np.arange(CURVE_POINTS), "y": short})
    assert thin_curve(table, "y") is table  # the same object: bit for bit
    with pytest.raises(ValueError, match="limit of at least"):
        curve_rows(y, limit=3)


def test_thin_curve_bounds_each_line_and_keeps_true_iterations():
    table = pd.concat([pd.DataFrame({"task": t, "generation": np.arange(LONG) * 3 + 7, "y": _noisy(seed=i)})
                       for i, t in enumerate("ab")], ignore_index=True)
    thin = thin_curve(table, "y", by="task")
    assert thin.groupby("task").size().max() <= CURVE_POINTS
    assert thin.merge(table, on=["task", "generation", "y"]).shape[0] == len(thin)  # rows of the table, unchanged


@pytest.fixture
def long_runs(tmp_path):
    """Two finished target searches of LONG iterations each, in one run store."""
    store = RunStore(tmp_path)
    best = np.minimum.accumulate(np.linspace(1, 0, LONG) + _noisy() * 1e-4)  # more steps than the bound
    ids = []
    for seed in (0, 1):
        run = store.create("target", "lenia", "pixels", {"iters": LONG, "sigma": 0.1}, seed)
        run.write_table("metrics", {"iteration": list(range(LONG)), "best_loss": (best + seed).tolist()})
        run.update(status="done", iterations=LONG, best_loss=float(best.min() + seed))
        ids.append(run.id)
    return str(tmp_path), ids, best


def test_the_search_page_sends_at_most_the_bound_of_a_long_runs_curve(long_runs):
    from workbench.dashboards.search import SearchModel, SearchViews

    runs_dir, (run_id, _), best = long_runs
    model = SearchModel(runs_dir=runs_dir)
    views = SearchViews(model)
    model.choose(run_id)
    views.refresh()
    sent = views.losses.data
    assert 2 < len(sent) <= CURVE_POINTS and sent[0] == (0, best[0]) and sent[-1] == (LONG - 1, best[-1])
    assert all(best[i] == loss for i, loss in sent)  # true iterations, for the hover
    assert max(_sources(views.loss_curve)) <= CURVE_POINTS


def test_the_runs_page_compares_long_runs_in_at_most_the_bound_per_line(long_runs):
    from workbench.dashboards.runs import RunsModel, curves_plot
    from workbench.figures import compare_curves

    runs_dir, ids, _ = long_runs
    model = RunsModel(runs_dir=runs_dir, selected=ids)
    lengths = _sources(curves_plot(model))
    assert lengths and max(lengths) <= CURVE_POINTS * len(ids)
    comparison = model.comparison()
    assert sorted(len(c) for c in compare_curves(comparison)) == [LONG, LONG]  # a paper figure keeps every row


def test_the_merge_qd_and_experts_curves_of_a_long_run_send_at_most_the_bound():
    from workbench.dashboards.experts import curve_plot
    from workbench.dashboards.qd import curves_plot as qd_curves
    from workbench.merge.views import fitness_plot

    y = _noisy()
    merge = pd.DataFrame({"iteration": np.arange(LONG), "best_loss": np.minimum.accumulate(y), "loss_mean": y,
                          "sigma": np.abs(y)})
    qd = pd.DataFrame({"generation": np.arange(LONG), "task": "sort", "coverage": np.linspace(0, 1, LONG),
                       "qd_score": -np.minimum.accumulate(y), "max_quality": np.abs(y)})
    experts = pd.DataFrame({"series": "reward (mean ±1)", "x": np.arange(1, LONG + 1), "y": y})
    pages = (fitness_plot(merge, CURVE_POINTS), qd_curves(qd, LONG // 2, CURVE_POINTS),
             curve_plot(experts, "experts", CURVE_POINTS))
    for view in pages:
        lengths = _sources(view)
        assert lengths and max(lengths) <= CURVE_POINTS, lengths
    # a paper figure (the pages' exports: points=None) keeps every row of every line
    for view in (fitness_plot(merge), qd_curves(qd, LONG // 2), curve_plot(experts, "experts")):
        lengths = _sources(view)
        assert lengths and max(lengths) == LONG, lengths


def test_a_long_runs_curves_exported_as_csv_keep_every_row(long_runs):
    """The pages send at most CURVE_POINTS rows of a line to the browser; a .csv export (the Runs page's comparison,
    as its format menu writes it) is the figure's data for a paper: every one of a long run's rows, each number as
    stored. The two runs are seeds of one setting: its mean (a Curve) over the band of its runs (an Area, lowest to
    highest: here seed 0's and seed 1's curves, exactly)."""
    import csv

    from workbench.dashboards.runs import RunsModel

    runs_dir, ids, best = long_runs
    out = RunsModel(runs_dir=runs_dir, selected=ids).export(".csv")
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * LONG and len({r["label"] for r in rows}) == 1
    band, mean = rows[:LONG], rows[LONG:]
    assert {r["element"] for r in band} == {"Area"} and {r["element"] for r in mean} == {"Curve"}
    for line in (band, mean):
        assert [int(r["iteration"]) for r in line] == list(range(LONG))
    y = list(rows[0])[-1]  # the mean's column, the y axis's label
    # the band's edges in columns of their own, named by the axis ("best target loss"), apart from the mean's
    assert list(rows[0])[4:] == ["iteration", f"{y} (lower edge)", f"{y} (upper edge)", y] and y.startswith("best")
    assert np.array_equal([float(r[f"{y} (lower edge)"]) for r in band], best)
    assert np.array_equal([float(r[f"{y} (upper edge)"]) for r in band], best + 1)
    assert {r[y] for r in band} == {"NaN"} and {r[f"{y} (lower edge)"] for r in mean} == {"NaN"}


def test_a_best_so_far_curve_with_more_steps_than_fit_as_steps_keeps_every_improvement():
    """Between limit / 2 and limit improvements: too many to keep both rows of each step, few enough to keep the
    row of each new best (the buckets kept about one in two)."""
    rng = np.random.default_rng(3)
    steps = np.sort(rng.choice(np.arange(1, LONG), size=CURVE_POINTS * 3 // 4, replace=False))
    y = np.zeros(LONG)
    y[steps] = -rng.random(len(steps)) - 0.01
    y = 1 + y.cumsum()
    rows = curve_rows(y)
    assert len(rows) <= CURVE_POINTS and rows[0] == 0 and rows[-1] == LONG - 1
    assert set(steps) <= set(rows)  # each improvement at its true iteration
    assert np.array_equal(np.unique(y[rows]), np.unique(y))  # and its value


def test_thin_curve_by_keeps_a_line_without_a_key_and_the_tables_order():
    """Lines of a table grouped by `by` whose rows interleave (a row of each task per generation), one of them
    keyed NaN: its rows were dropped (groupby's dropna), and the lines came back one after another."""
    n = 3 * CURVE_POINTS
    table = pd.DataFrame({"task": np.tile(["a", None], n), "generation": np.repeat(np.arange(n), 2),
                          "y": np.concatenate([_noisy(n, 0), _noisy(n, 1)]).reshape(2, n).T.ravel()})
    thin = thin_curve(table, "y", by="task")
    assert thin["task"].isna().sum() == thin["task"].notna().sum() > 2  # both lines, each thinned alike
    assert thin.groupby("task", dropna=False).size().max() <= CURVE_POINTS
    assert thin.index.is_monotonic_increasing  # the table's own order: interleaved, as given
    assert thin.merge(table, on=["task", "generation", "y"]).shape[0] == len(thin)


def test_a_band_thinned_on_the_runs_page_is_labelled_with_every_iterations_runs(tmp_path):
    """The label's n=lo–hi counts the runs at every iteration of the band, the rows the page leaves out included:
    the page said n=2 where the exported figure (every row) said n=1–2."""
    from workbench.compare import compare_runs
    from workbench.figures import compare_curves

    store = RunStore(tmp_path)
    best = np.repeat([1.0, 0.5, 0.25], LONG // 3)  # a few steps: the page keeps their corners only
    ids = []
    for seed in (0, 1):
        iterations = [i for i in range(len(best)) if seed == 0 or i != LONG // 2]  # one row missing: n=1 there
        run = store.create("target", "lenia", "pixels", {"iters": len(best), "sigma": 0.1}, seed)
        run.write_table("metrics", {"iteration": iterations, "best_loss": best[iterations].tolist()})
        run.update(status="done", iterations=len(best), best_loss=float(best.min()))
        ids.append(run.id)
    comparison = compare_runs(store, ids)
    assert comparison.has_replicates
    full = [e.label for e in compare_curves(comparison)]
    assert full[0].endswith("(n=1–2)")
    page = compare_curves(comparison, points=CURVE_POINTS)
    assert [len(e) for e in page] != [len(e) for e in compare_curves(comparison)]  # thinned
    assert [e.label for e in page] == full
