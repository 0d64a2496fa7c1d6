"""The seven substrates of issue 15 everywhere the first three are: the Lab's editors (GoL rule checkboxes,
Particle Lenia sliders, σ-mutation of network weights), the Search page's choices, the Atlas of a non-Lenia
illumination, the viewer's and `workbench render`'s default θ, and the Lab in Chromium with the GoL checkboxes."""


import numpy as np
import pytest
from forked import run
from PIL import Image
from test_dashboards import _browse, _wait_for_model, browser, serving  # noqa: F401 - browser is a fixture

from workbench.dashboards.lab import EDITORS, LabModel, param_editor
from workbench.simulations import SUBSTRATES, make_substrate
from workbench.simulations.gol import CONWAY
from workbench.simulations.plenia import PARAM_BASE, PARAM_NAMES
from workbench.viewer import ViewerModel, default_theta, rule_text


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """A run folder with a tiny Game of Life open-endedness run and Game of Life and NCA (d = 1) illuminations
    (pixels FM, a few steps: seconds)."""
    from workbench.asal.driver import SearchConfig, run_search
    from workbench.asal.evaluate import EvalConfig
    from workbench.runs import RunStore

    folder = tmp_path_factory.mktemp("runs")
    store = RunStore(folder)
    oe = SearchConfig(kind="openended", eval=EvalConfig("gol", "pixels", steps=16, frames=2), iters=2, pop=4)
    ids = {"dir": str(folder), "gol_oe": run_search(oe, store).id}
    for name in ("gol", "nca_d1"):
        cfg = SearchConfig(kind="illuminate", eval=EvalConfig(name, "pixels", steps=8), iters=3, pop=4,
                           population=8)
        ids[f"{name}_ill"] = run_search(cfg, store).id
    return ids


# --- the Lab's model, no browser ----------------------------------------------------------------------------

def test_lab_plays_conway_and_edits_the_rule_as_births_and_survivals(tmp_path):
    model = LabModel(substrate="gol", snapshot_dir=str(tmp_path))
    assert model.rule == CONWAY and model.rule_bits() == ([3], [2, 3]) and model.rule_name == "B3/S23"
    model.steps_per_frame = 8
    model.advance()
    assert model.frame.max() == 255  # Conway keeps cells alive (rule 0 would kill them all in one step)
    grid = model.sub.state_to_arrays(model.state)["state"]
    model.set_rule_bits([3, 6], [2, 3])  # HighLife, from the current grid
    assert model.rule == CONWAY + 2 ** 6 and model.rule_name == "B36/S23" and model.step_count == 8
    model.advance()
    sub = make_substrate("gol")
    want = sub.step(sub.state_from_arrays(state=grid), sub.decode([CONWAY + 64]), 8)
    np.testing.assert_array_equal(model.sub.state_to_arrays(model.state)["state"], sub.state_to_arrays(want)["state"])
    assert np.load(model.snapshot().with_suffix(".npy")).tolist() == [CONWAY + 64]
    for births, survivals in (([9], []), ([True], []), ([], [-1])):
        with pytest.raises(ValueError, match="0 to 8"):
            model.set_rule_bits(births, survivals)
    with pytest.raises(ValueError, match="2\\^18"):
        model.set_rule(2 ** 18)
    assert model.rule == CONWAY + 64  # the bad edits changed nothing
    # σ-mutation of a rule flips bits, the same seed the same rule
    model.set_rule(CONWAY)
    model.mutate(seed=4)
    first = model.rule
    model.set_rule(CONWAY)
    model.mutate(seed=4)
    assert model.rule == first != CONWAY and 0 <= first < 2 ** 18 and model.step_count == 0
    model.default_theta()
    assert model.rule == CONWAY
    with pytest.raises(ValueError, match="only gol"):
        LabModel(substrate="plife").rule_bits()


def test_lab_particle_lenia_sliders_are_decoded_values_mapped_back_to_theta():
    model = LabModel(substrate="plenia")
    assert model.scalar_names() == list(PARAM_NAMES)
    model.advance()
    x = model.sub.state_to_arrays(model.state)["x"]
    model.set_scalar("sigma_g", 0.3)
    assert model.theta[4] == pytest.approx(np.log(0.3 / 0.15))
    assert float(model.params["sigma_g"]) == pytest.approx(0.3, rel=1e-6)
    model.set_param("mu_k", 5.0)  # the table route keeps θ in step too
    assert model.theta[0] == pytest.approx(np.log(5.0 / 4.0))
    model.advance()  # the swarm goes on from where it was, under the decoded θ
    sub = make_substrate("plenia")
    want = sub.step(sub.state_from_arrays(x=x), sub.decode(model.theta), 1)
    np.testing.assert_allclose(model.sub.state_to_arrays(model.state)["x"], sub.state_to_arrays(want)["x"],
                               atol=1e-5)
    for name, value in (("mu_k", 0.0), ("c_rep", float("nan")), ("rho", 1.0)):
        with pytest.raises(ValueError):
            model.set_scalar(name, value)
    editor = param_editor(model)
    sliders = [w for w in editor.objects if w.__class__.__name__ == "EditableFloatSlider"]
    assert [s.value for s in sliders] == pytest.approx([5.0, 1.0, 0.022, 0.6, 0.3, 1.0], rel=1e-6)
    sliders[5].value = 2.0  # a slider moved on the page
    assert model.theta[5] == pytest.approx(np.log(2.0 / PARAM_BASE[5]))
    for typed in (-1.0, 0.0):  # typed below zero: refused on the page and the slider back (the browser's input
        sliders[5].value = typed  # bound kept the old value, silently)
        assert "c_rep must be a positive number" in model.message and model.message_kind == "danger"
        assert sliders[5].value == pytest.approx(2.0) and model.theta[5] == pytest.approx(np.log(2.0 / PARAM_BASE[5]))
    sliders[5].value = 2e-7  # a tiny positive value is taken (the bound was base · 1e-6)
    assert model.theta[5] == pytest.approx(np.log(2e-7 / PARAM_BASE[5]))
    (draw,) = [w for w in editor.objects if getattr(w, "label", "") == "random θ ~ N(0, I)"]
    seed = model.mutation_seed
    draw.clicks += 1  # θ ~ N(0, I) from the mutation seed; the sliders show its values and leave θ as drawn
    np.testing.assert_array_equal(model.theta, model.sub.random_theta(np.random.default_rng(seed)))
    # the new θ rebuilt the editor (its reset): its sliders, not the removed ones (Bokeh warned of those)
    shown = [w for w in editor.objects if w.__class__.__name__ == "EditableFloatSlider"]
    assert not set(map(id, shown)) & set(map(id, sliders))
    assert [s.value for s in shown] == pytest.approx(list(PARAM_BASE * np.exp(model.theta)), rel=1e-6)


def test_lab_mutates_network_weights_with_sigma_and_seed():
    model = LabModel(substrate="nca_d1", sigma=0.5, mutation_seed=7)
    zero = model.theta.copy()
    model.mutate()
    a = model.theta.copy()
    assert model.mutation_seed == 8 and a.std() == pytest.approx(0.5, rel=0.2)
    model.set_theta(zero)
    model.mutate(seed=7)
    np.testing.assert_array_equal(model.theta, a)
    model.mutate()
    assert not np.array_equal(model.theta, a)
    model.random_init(seed=0)  # the reference's random network: the grid moves
    np.testing.assert_array_equal(model.theta, model.sub.flax_init_theta(np.random.default_rng(0)))
    first = model.frame.copy()
    model.steps_per_frame = 4
    model.advance()
    assert (model.frame != first).mean() > 0.01
    with pytest.raises(ValueError, match="random initialisation"):
        LabModel(substrate="lenia").random_init()


def test_every_substrate_plays_in_the_lab_with_its_editor():
    model = LabModel(substrate="lenia")
    assert set(EDITORS) == set(SUBSTRATES)
    for name in SUBSTRATES:
        model.substrate = name
        assert model.frame.ndim == 3 and model.frame.shape[2] == 3
        kinds = [type(w).__name__ for w in param_editor(model).objects]
        names = [getattr(w, "label", "") for o in param_editor(model).objects for w in getattr(o, "objects", [o])]
        expected = {"table": "Tabulator", "rule": "CheckBoxGroup", "sliders": "EditableFloatSlider",
                    "mutation": "FloatSlider"}[EDITORS[name]]
        assert expected in kinds, (name, kinds)
        if EDITORS[name] == "mutation":
            assert "mutate" in names and "mutation seed" in names
    assert EDITORS["gol"] == "rule" and EDITORS["plenia"] == "sliders" and EDITORS["flow_lenia"] == "table"
    assert {EDITORS[n] for n in ("nca_d1", "nca_d3", "dnca", "plife_plus")} == {"mutation"}


def test_an_editor_rebuilt_at_a_reset_leaves_nothing_of_the_last_following_the_model():
    """The Lab rebuilds its editor at every reset (a mutation, a seed, a θ loaded, another substrate). The σ slider
    and the mutation-seed field of each editor replaced stayed linked to the model (Panel's from_param, the int
    field's watcher): six watchers more at every mutation (two on the values, four on σ's bounds, label…), each
    keeping its widgets and setting them at every change of σ or the seed, for as long as the tab stayed open.
    The editor on show still follows the model."""
    import panel as pn

    def watching(model: LabModel) -> int:  # on the values, and on the parameters' own attributes (from_param's)
        values = sum(len(ws) for kinds in model.param.watchers.values() for ws in kinds.values())
        return values + sum(len(ws) for name in model.param for ws in model.param[name].watchers.values())

    model = LabModel(substrate="boids")
    editor = param_editor(model)
    model.mutate()
    settled = watching(model)
    for _ in range(5):
        model.mutate()
    assert watching(model) == settled
    model.substrate = "gol"  # another editor (the rule's checkboxes), then the σ-mutation one again
    model.substrate = "boids"
    assert watching(model) == settled
    model.param.update(sigma=0.37, mutation_seed=7)
    (slider,) = editor.select(pn.widgets.FloatSlider)
    (seed,) = [w for w in editor.select(pn.widgets.IntInput) if w.name == "mutation seed"]
    assert slider.value == 0.37 and seed.value == 7


def test_lab_loads_the_best_rule_and_members_of_game_of_life_runs(runs):
    from workbench.runs import RunStore

    model = LabModel(substrate="lenia")
    model.load_run(runs["dir"], runs["gol_oe"])
    best = np.load(RunStore(runs["dir"]).open(runs["gol_oe"]).path / "best.npy")
    assert model.substrate == "gol" and model.rule == int(best[0]) and model.frame.shape == (64, 64, 3)
    assert model.open_run(runs["dir"], runs["nca_d1_ill"], member=3) and model.substrate == "nca_d1"
    assert model.theta.shape == (209,) and "population member 3" in model.message


# --- Search and Atlas models -----------------------------------------------------------------------------

def test_search_offers_every_substrate_and_runs_the_ga_over_rules_on_gol(tmp_path):
    from workbench.dashboards.search import ALGORITHM_NAMES, SearchModel

    model = SearchModel(runs_dir=str(tmp_path), substrate="gol", kind="openended", iters=2, pop=4, steps=16,
                        frames=2)
    assert model.param.substrate.objects == list(SUBSTRATES) and len(SUBSTRATES) == 10
    assert model.algorithm_choosable and model.param.algorithm.objects == ["rule-ga"]
    assert ALGORITHM_NAMES["rule-ga"] == "GA over rules"
    model.start()
    assert model.wait(120) == "done", model.error
    assert model.algorithm_name == "GA over rules" and model.best_thumb is not None
    model.substrate = "nca_d1"  # back to the float-θ algorithms
    assert model.algorithm == "ga" and not model.algorithm_choosable and model.config().algorithm == "cma"
    model.kind = "illuminate"
    assert model.algorithm_choosable and model.config().algorithm == "ga"


def test_atlas_lays_out_game_of_life_and_nca_illuminations(runs, tmp_path):
    from workbench.dashboards.atlas import AtlasModel

    model = AtlasModel(runs_dir=runs["dir"])
    assert {runs["gol_ill"], runs["nca_d1_ill"]} <= set(model.param.run_id.objects)
    for key, substrate, n in (("gol_ill", "gol", 1), ("nca_d1_ill", "nca_d1", 209)):
        model.choose(runs[key])
        assert model.substrate == substrate and model.thetas.shape == (8, n) and not model.message
        assert model.image.shape[0] == model.image.shape[1] == 3 * model.thumbs.shape[1]  # 8 members: 3 × 3
        assert len(set(model.cells.tolist())) == 8
        table = model.cell_table()
        if substrate == "gol":
            assert all(t == f"rule {rule_text(int(r))} = {int(r)}" for t, r in zip(table["theta"], model.thetas[:, 0],
                                                                                   strict=True))
        else:
            assert all(t.startswith("|θ| ") for t in table["theta"])
        path = model.export_png(tmp_path / f"{substrate}.png", scale=2)
        assert Image.open(path).size == (2 * model.image.shape[1],) * 2


def test_atlas_view_in_a_notebook_follows_the_model(runs):
    """Unserved (a notebook) the atlas view shows another run with a new figure: changes of a shown figure's
    Bokeh sources never reached a notebook's view, so it kept the old run's atlas and clicks on it selected
    members of the new run (or none); a click outside the table selects nothing."""
    from workbench.dashboards.atlas import AtlasModel, atlas_view

    model = AtlasModel(runs_dir=runs["dir"])
    model.choose(runs["gol_ill"])
    pane = atlas_view(model)
    first = pane.object
    model.choose(runs["nca_d1_ill"])
    shown = pane.object
    assert shown is not first
    cells = next(r.data_source for r in shown.renderers if "index" in r.data_source.data)
    assert set(cells.data["run"]) == {runs["nca_d1_ill"]} and len(cells.data["index"]) == 8
    cells.selected.indices = [3]  # what a click in the notebook's view sends back
    assert model.selected == cells.data["index"][3]
    cells.selected.indices = [40]
    assert model.selected == -1
    from workbench.dashboards.atlas import set_cell_size

    rects = next(r for r in shown.renderers if r.data_source is cells)
    set_cell_size(rects, 0.25)  # what a served page does on another run: every state's outline that size
    assert {g.width for g in (rects.glyph, rects.selection_glyph, rects.nonselection_glyph, rects.hover_glyph)} \
        == {0.25}


# --- the viewer and `workbench render` -------------------------------------------------------------------

def test_viewer_shows_conway_and_mutates_rules(tmp_path):
    sub = make_substrate("gol")
    assert default_theta(sub).tolist() == [CONWAY]
    assert default_theta("gol").tolist() == [CONWAY] and default_theta("boids").tolist() == [0.0] * 193  # a name
    model = ViewerModel(sub, default_theta(sub), seed=1, out_dir=tmp_path, render_size=64)
    model.key("+")
    model.advance()
    assert model.frame().max() == 255
    model.key("n")
    assert model.theta.shape == (1,) and int(model.theta[0]) != CONWAY and model.steps == 0
    model.key("s")
    assert np.load(model.saved[-1].with_suffix(".theta.npy")).tolist() == model.theta.tolist()
    assert default_theta(make_substrate("plenia")).tolist() == [0.0] * 6


def test_render_gol_plays_conway_by_default(tmp_path):
    out = tmp_path / "gol.png"
    res = run("render", "gol", "--steps", "8", "--out", str(out), "--size", "64")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out)
    sub = make_substrate("gol")
    params = sub.decode([CONWAY])
    want = sub.render(sub.step(sub.init(params, seed=0), params, 8), params, size=64)
    np.testing.assert_array_equal(np.asarray(Image.open(out).convert("RGB")), (want * 255).round().astype(np.uint8))
    assert want.max() == 1.0  # alive: not the dead rule 0


# --- the Lab in Chromium ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory, runs):
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with serving(runs["dir"], log) as url:
        yield url


def test_lab_plays_a_game_of_life_run_and_its_rule_checkboxes_in_chromium(served, runs, browser, request):  # noqa: F811
    from workbench.runs import RunStore

    rule = int(np.load(RunStore(runs["dir"]).open(runs["gol_oe"]).path / "best.npy")[0])
    flipped = rule ^ (1 << 6)  # the "6" box of the births
    with _browse(browser, f"{served}/lab?run={runs['gol_oe']}", request) as page:
        _wait_for_model(page, "lab-frame")
        page.get_by_text(f"rule {rule_text(rule)} = {rule}").wait_for(timeout=60000)
        page.get_by_text("born with").wait_for(timeout=30000)
        # the load's veils gone (a click would retry through them; a mouse click would be lost)
        page.locator(".pn-loading").first.wait_for(state="detached", timeout=30000)
        page.locator(".gol-births").get_by_text("6", exact=True).click()
        page.get_by_text(f"rule {rule_text(flipped)} = {flipped}").wait_for(timeout=30000)
        page.get_by_role("button", name="snapshot PNG + θ").click()
        page.get_by_text("saved").wait_for(timeout=30000)
    saved = sorted((RunStore(runs["dir"]).root / "snapshots").glob("gol-*.npy"))
    assert saved and np.load(saved[-1]).tolist() == [flipped]


def test_pressing_random_init_again_draws_another_network():
    """Random init draws from the mutation seed and moves it on, as σ-mutation does: pressing it again gives
    another network (it stayed on one seed: the same θ each press), and the seed shown says which was drawn."""
    model = LabModel(substrate="nca_d1", mutation_seed=7)
    model.random_init()
    first = model.theta.copy()
    np.testing.assert_array_equal(first, model.sub.flax_init_theta(np.random.default_rng(7)))
    model.random_init()
    assert model.mutation_seed == 9 and not np.array_equal(model.theta, first)


def test_the_game_of_life_rule_takes_counts_of_eight_live_neighbours():
    """From mutation sampling: 8 is a count (every neighbour alive), for births (bit 8) and survivals (bit 17)."""
    model = LabModel(substrate="gol")
    model.set_rule_bits([3, 8], [8])
    assert model.rule == 2 ** 3 + 2 ** 8 + 2 ** 17 and model.rule_bits() == ([3, 8], [8])
    assert model.rule_name == "B38/S8"
