"""The expert-mixing explorer (/experts): ExpertsModel's tables for every view against the run files they come
from (tiny expert and adapt runs on the quick zoo, made here), the mixer against the experts composed by hand, every
view exported as a paper figure, the shell registry and the Runs gallery links, and the served page in Debian's
Chromium, offline."""

import html
import json
import re
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from test_dashboards import (  # noqa: F401 - browser is a fixture
    DOCUMENT_READY,
    MAIN_REFLOW,
    NOTEBOOK_CELL,
    NOTEBOOK_MARGINS,
    _browse,
    _settled,
    browser,
    drawn_width,
    figure_page,
    serving,
    widest_row,
)

from workbench.dashboards.experts import (
    MIXER,
    VIEWS,
    ExpertsModel,
    alpha_shares,
    export_what,
    matrix_label,
    model_text,
)
from workbench.runs import RunStore

EXPERT = {"iters": 3, "batch": 4, "val_every": 1, "val_n": 4, "n_test": 4}


@pytest.fixture(scope="module")
def ex(tmp_path_factory, quick_zoo):
    """A run folder: SVF experts for add, sort and classify (seed 0), add again with seed 1, a LoRA add expert, two
    seeds of one adapt config (α per expert, target reverse) and an adapt run with α per matrix."""
    from workbench.experts.adapt import AdaptConfig, adapt
    from workbench.experts.run import ExpertRunConfig, expert_file, train_expert

    root = tmp_path_factory.mktemp("expertspage")
    env = pytest.MonkeyPatch()
    env.setenv("WORKBENCH_CACHE", str(root / "cache"))  # SVD caches here (the server below inherits it)
    store = RunStore(root / "runs")
    base = str(quick_zoo / "base")

    def train(task, **kw):
        return train_expert(ExpertRunConfig(model=base, task=task, **{**EXPERT, **kw}), store).id

    ids = {t: train(t) for t in ("add", "sort", "classify")}
    ids["add1"], ids["lora"] = train("add", seed=1), train("add", adapter="lora", rank=2)
    files = [str(expert_file(store.open(ids[t]))) for t in ("add", "sort", "classify")]
    cfg = {"model": base, "experts": files, "target": "reverse", "shots": [2, 3], "cem_iters": 2, "pop": 10, "n": 5}
    ids["adapt0"], ids["adapt1"] = (adapt(AdaptConfig(**cfg, seed=s), store).id for s in (0, 1))
    ids["matrix"] = adapt(AdaptConfig(**cfg, alpha="matrix", strategies=["few-shot"]), store).id
    yield {"dir": str(store.root), "base": base, **ids}
    env.undo()


def _scores(ex, run_id: str) -> dict:
    return json.loads((Path(ex["dir"]) / run_id / "scores.json").read_text())


# --- the model, no browser -------------------------------------------------------------------------------------------

def test_views_follow_the_run_files(ex, tmp_path):
    from workbench.experts import load_expert

    model = ExpertsModel(runs_dir=ex["dir"], run_id=ex["adapt0"])
    d = model.data
    assert d.views == list(VIEWS) and [e.task for e in d.experts] == ["add", "sort", "classify"]
    assert model.param.compare.objects == [ex["adapt1"]] and model.compare == [ex["adapt1"]]  # same settings
    # z = sigmoid(p) of the run's copies of its experts, one row per matrix, one column per singular value
    z = model.z_table()
    run = RunStore(ex["dir"]).open(ex["adapt0"])
    for rec in run.info["expert_inputs"]:
        params, _ = load_expert(run.path / rec["path"])
        for name, p in params.items():
            mine = z[(z["expert"] == rec["task"]) & (z["matrix"] == name)].sort_values("rank")
            np.testing.assert_allclose(mine["z"], 1 / (1 + np.exp(-p.numpy().astype(np.float64))), rtol=1e-12)
            assert mine["label"].iloc[0] == matrix_label(name)
    assert matrix_label("model.layers.1.mlp.gate_proj.weight") == "L1 gate"
    # rows in the model's order, as the α heatmap's columns (the file's alphabetical order put down before gate)
    assert list(dict.fromkeys(z[z["task"] == "add"]["matrix"])) == _scores(ex, ex["adapt0"])["matrices"]
    # the header names the model folder by its last two parts, the whole path on hover
    base = str(Path(run.info["config"]["model"]).resolve())
    assert f'<code title="{base}">…/{Path(base).parent.name}/{Path(base).name}</code>' in model.summary()
    assert model_text("smollm2") == "`smollm2`"
    assert "…/&#95;&#95;x&#95;&#95;/m.gguf</code>" in model_text("/a/b/__x__/m.gguf")  # no Markdown bold in a name
    mean = model.z_rank_table()
    first = z[(z["expert"] == "add") & (z["rank"] == 0)]["z"].mean()  # over the 6 matrices
    assert len(mean) == 3 * 32 and np.isclose(mean["z"].iloc[0], first)
    model.matrix = d.matrices[2]
    assert len(model.z_rank_table()) == 3 * 32
    # α: each seed's CEM result per k, as scores.json has it; spread over the two seeds
    alpha = model.alpha_table()
    for rid in (ex["adapt0"], ex["adapt1"]):
        s = _scores(ex, rid)
        for k, rec in s["few_shot"].items():
            got = alpha[(alpha["seed"] == s["seed"]) & (alpha["k"] == int(k))]
            assert list(got["alpha"]) == [a[0] for a in rec["alpha"]] and list(got["expert"]) == ["add", "sort"]
            assert got["share"].sum() == pytest.approx(1.0)  # what the mixture is made of (the rescale: ratios)
    # dispatcher confusion: every test prompt of both seeds counted once
    for table in model.confusion_tables().values():
        assert table.groupby("true")["count"].sum().to_dict() == {"add": 10, "sort": 10, "reverse": 10}
    # strategies: mean and sample std over the two seeds' scores
    table = model.strategies_table().set_index(["task", "strategy"])
    a, b = _scores(ex, ex["adapt0"]), _scores(ex, ex["adapt1"])
    for s, per in a["strategies"].items():
        for t, v in per.items():
            row = table.loc[(t, s)]
            assert row["n"] == 2 and row["mean"] == pytest.approx((v + b["strategies"][s][t]) / 2)
            assert row["std"] == pytest.approx(np.std([v, b["strategies"][s][t]], ddof=1))
    shots = model.shots_table()
    assert sorted(set(shots["k"])) == [2, 3] and len(shots) == 4
    assert model.target_refs()["base"]["n"] == 2
    # the CEM curve: the run's metrics, one row per generation per k
    curve = model.curve_table()
    assert list(curve["series"]) == ["k = 2", "k = 2", "k = 3", "k = 3"] and list(curve["x"]) == [1, 2, 1, 2]
    assert list(curve["y"]) == list(run.read_table("metrics").to_pandas().dropna(subset=["shots_accuracy"])
                                    ["shots_accuracy"])
    # the α of every target: each adapt run's shares (of this model and experts) at its largest k, 3 shots
    want = {}
    for rid in (ex["adapt0"], ex["adapt1"], ex["matrix"]):
        shares = alpha_shares(np.asarray(_scores(ex, rid)["few_shot"]["3"]["alpha"], float)).mean(1)
        for e, v in zip(("add", "sort"), shares, strict=True):
            want.setdefault(e, []).extend([] if np.isnan(v) else [v])
    got = model.targets_alpha().set_index("expert")
    assert set(got["target"]) == {"reverse"} and len(got) == 2
    for e, v in want.items():
        assert got.loc[e, "mean"] == pytest.approx(np.mean(v)) and got.loc[e, "n"] == len(v)
    assert " · pooled with 1 other run" in model.summary()
    assert list(shots["k"]) == [2, 2, 3, 3]  # by k, then seed
    # an expert run's header: its test scores, to 3 places; a view the run lacks gives way to its first
    expert = ExpertsModel(runs_dir=ex["dir"], run_id=ex["adapt0"], view="confusion")
    expert.run_id = ex["add"]
    test = RunStore(ex["dir"]).open(ex["add"]).info["test_scores"]
    assert f" · test {test['base']:.3f} (base) → {test['expert']:.3f} (expert)" in expert.summary()
    assert expert.view == expert.data.views[0] == "z"
    # an export's file name: the run, the view with hyphens (z_rank: z-rank)
    assert model.export("z_rank", tmp_path, ".svg").name == f"{ex['adapt0']}-z-rank.svg"
    model.compare = []
    assert model.strategies_table()["n"].max() == 1 and "pooled" not in model.summary()
    # the mixer opens on the run's own mixing rule (a sigmoid, normalised adaptation's: not raw, unnormalised)
    import shutil

    shutil.copytree(Path(ex["dir"]) / ex["adapt0"], tmp_path / "runs" / ex["adapt0"])
    info = json.loads((tmp_path / "runs" / ex["adapt0"] / "run.json").read_text())
    info["config"].update(variant="sigmoid", normalize=True)
    (tmp_path / "runs" / ex["adapt0"] / "run.json").write_text(json.dumps(info))
    sigmoid = ExpertsModel(runs_dir=str(tmp_path / "runs"), run_id=ex["adapt0"])
    assert (sigmoid.variant, sigmoid.normalize) == ("sigmoid", True)


def test_the_targets_base_pools_the_runs_that_scored_it(ex, tmp_path):
    """From mutation sampling: the accuracy-vs-shots view's base line pools the seeds that scored the target's base,
    also where a pooled run has none (here its scores.json without the base); every test's seeds had one, so a
    condition asking that each have it went unseen. The line is the mean of those that have it (n: how many), on
    the figure as "base on <target>"."""
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(ex["dir"], runs)
    scores = _scores(ex, ex["adapt1"])
    del scores["strategies"]["base"]
    (runs / ex["adapt1"] / "scores.json").write_text(json.dumps(scores))
    model = ExpertsModel(runs_dir=str(runs), run_id=ex["adapt0"])
    assert model.compare == [ex["adapt1"]]
    target = scores["target"]
    base = _scores(ex, ex["adapt0"])["strategies"]["base"][target]
    assert model.target_refs() == {"base": {"mean": base, "std": 0.0, "n": 1}}
    lines = [layer for layer in model.figure("shots") if layer.label == f"base on {target}"]
    assert len(lines) == 1 and list(lines[0].dimension_values("test")) == [base, base]


def test_alpha_is_shown_as_each_experts_share_the_rescale_keeps():
    """SVF's rescale takes z′'s scale out: CEM's (0, 0.377) and (0, 0.406) are one mixture, shown as one share;
    a column of zeros is no mixture; the mixer says the shares, and that one expert's α changes nothing."""
    from workbench.dashboards.experts import mixture_shares

    np.testing.assert_array_equal(alpha_shares([[0.0], [0.377]]), alpha_shares([[0.0], [0.406]]))
    np.testing.assert_allclose(alpha_shares([[0.3, 0.0], [0.6, 0.0]]), [[1 / 3, np.nan], [2 / 3, np.nan]])
    assert mixture_shares([0.3, 0.6], ["add", "sort"]) == "shares 33 % add, 67 % sort"
    assert mixture_shares([0.0, 0.0], ["add", "sort"]) == "no mixture (every α is 0)"
    assert mixture_shares([0.4], ["add"]).startswith("one expert")


def test_seeds_pool_once_each_whatever_their_experts(ex, tmp_path):
    """The spread pools one run a seed (a copy of a run repeats its computation: it counted twice and narrowed
    the std) and pools seeds that trained experts of their own (other files, other contents), a seed again with
    other experts too, as `experts report` counts them (experts copied elsewhere are the same); the SVF-vs-LoRA
    table is read again for a run of another model."""
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(ex["dir"], runs)
    shutil.copytree(runs / ex["adapt1"], runs / (ex["adapt1"] + "-again"))
    own = ex["adapt1"] + "-own"  # seed 2, with experts of other contents (as each seed's own would be)
    shutil.copytree(runs / ex["adapt1"], runs / own)
    info = json.loads((runs / own / "run.json").read_text())
    info["config"]["seed"] = 2
    info["config"]["experts"] = [f"seed2/{Path(f).name}" for f in info["config"]["experts"]]
    for rec in info["expert_inputs"]:
        rec["sha256"] = "0" * 64
    (runs / own / "run.json").write_text(json.dumps(info))
    # seed 1 again with experts of other contents: another computation, pooled (as `experts report` counts it);
    # the run on show with its experts copied elsewhere (paths, not contents, differ): the same one, not pooled
    for name, source, hashes in (("-seed1-other", ex["adapt1"], "1"), ("-moved", ex["adapt0"], None)):
        shutil.copytree(runs / source, runs / (ex["adapt1"] + name))
        info = json.loads((runs / (ex["adapt1"] + name) / "run.json").read_text())
        info["config"]["experts"] = [f"moved/{Path(f).name}" for f in info["config"]["experts"]]
        for rec in info["expert_inputs"] if hashes else []:
            rec["sha256"] = hashes * 64
        (runs / (ex["adapt1"] + name) / "run.json").write_text(json.dumps(info))
    model = ExpertsModel(runs_dir=str(runs), run_id=ex["adapt0"])
    pooled = model.param.compare.objects
    assert len(pooled) == 3 and {own, ex["adapt1"] + "-seed1-other"} <= set(pooled), pooled
    (first,) = {ex["adapt1"], ex["adapt1"] + "-again"} & set(pooled)
    second = ({ex["adapt1"], ex["adapt1"] + "-again"} - {first}).pop()
    assert set(model.strategies_table()["n"]) == {4}
    from workbench.experts.report import report

    store = RunStore(runs)
    counted = report([store.open(i) for i in [ex["adapt0"], *pooled, second, ex["adapt1"] + "-moved"]])
    assert counted["adapt"]["runs"] == 4, counted
    assert counted["repeats"] == {second: first, ex["adapt1"] + "-moved": ex["adapt0"]}, counted["repeats"]
    model.svf_lora_table()
    model._store_scores["model_key"] = "another model's"  # as read for a run of another model
    assert len(model.svf_lora_table()) > 0 and model._store_scores["model_key"] == model.data.info["model_key"]


def test_svf_lora_training_curve_and_alpha_per_matrix(ex, monkeypatch):
    from workbench.runs import Run

    model = ExpertsModel(runs_dir=ex["dir"], run_id=ex["add"])
    assert model.data.views == ["z", "z_rank", "curve", "svf_lora"]
    reads, info = [], Run.info.fget  # each finished experts run's run.json read once (it was 4 times)
    monkeypatch.setattr(Run, "info", property(lambda self: reads.append(self.id) or info(self)))
    rows = model.svf_lora_table()
    assert reads and sorted(reads) == sorted(set(reads)), reads
    monkeypatch.undo()
    add = rows[rows["task"] == "add"].set_index("model")
    svf = [_scores(ex, ex[k]) for k in ("add", "add1")]
    lora = _scores(ex, ex["lora"])
    assert list(add.index) == ["base", "SVF (192 params)", f"LoRA r=2 ({lora['n_params']:,} params)".replace(",", " ")]
    assert add.loc["SVF (192 params)", "n"] == 2 and add.loc["base", "n"] == 2  # the base once per SVF seed
    assert add.loc["SVF (192 params)", "mean"] == pytest.approx(np.mean([s["expert"] for s in svf]))
    curve = model.curve_table()
    metrics = RunStore(ex["dir"]).open(ex["add"]).read_table("metrics").to_pandas()
    assert list(curve[curve["series"] == "reward (mean ±1)"]["y"]) == list(metrics["reward"])
    # steps as best_step counts them: the best validation is drawn at the step it was measured
    best = curve[curve["series"] == "best validation"]
    assert best["x"].min() == 1 and _scores(ex, ex["add"])["best_step"] in set(best["x"])
    lora_model = ExpertsModel(runs_dir=ex["dir"], run_id=ex["lora"])
    assert lora_model.data.views == ["curve", "svf_lora"] and lora_model.mixer_experts() == []
    n = f"{lora['n_params']:,}".replace(",", " ")  # its header in the tabs' words: "LoRA" (it said "LORA"), "1 152"
    assert "LoRA expert for **add** on" in lora_model.summary() and f" · {n} trainable parameters" in \
        lora_model.summary()
    # an experts run mixes the finished SVF experts of its model and seed, one per task (the classifier aside)
    assert [e.task for e in model.mixer_experts()] == ["add", "sort"] and model.alphas == [0.5, 0.5]
    # the classification expert's page mixes its seed's task experts, not itself (the dispatcher is never mixed)
    assert [e.task for e in ExpertsModel(runs_dir=ex["dir"], run_id=ex["classify"]).mixer_experts()] == ["sort", "add"]
    from workbench.dashboards.experts import no_mixture  # and where none is there, it says why (not "a LoRA expert")

    assert no_mixture(ExpertsModel(runs_dir=ex["dir"], run_id=ex["classify"])).startswith(
        "The classification expert dispatches")
    assert no_mixture(lora_model).startswith("A LoRA expert is not mixed: Transformer²'s mixer composes SVF experts")
    # the command that trains what the mixer would take: the run's model and seed, into the folder on show
    lora_cfg = lora_model.data.config
    command = (f"workbench experts train --model {lora_cfg['model']} --task T --seed {lora_cfg['seed']} "
               f"--runs {ex['dir']}")
    assert f"`{command}`" in no_mixture(lora_model)
    import shlex

    from workbench.cli import build_parser  # a command line the CLI takes (it lacked the --model it needs)

    args = build_parser().parse_args(shlex.split(command.replace("--task T", "--task add"))[1:])
    assert (args.model, args.task, args.seed, args.runs) == (lora_cfg["model"], "add", lora_cfg["seed"], ex["dir"])
    per_matrix = ExpertsModel(runs_dir=ex["dir"], run_id=ex["matrix"])
    assert per_matrix.compare == [] and "confusion" not in per_matrix.data.views
    table = per_matrix.alpha_table()
    s = _scores(ex, ex["matrix"])
    assert len(table) == 2 * 2 * 6 and set(table["matrix"]) == {matrix_label(m) for m in per_matrix.data.matrices}
    # α's columns are the model's matrices in the model's order (gate, up, down), not the expert file's
    # (alphabetical: each α was labelled with another matrix)
    from workbench.experts.model import svf_matrix_names
    from workbench.lm.models import load_model

    names = svf_matrix_names(load_model(ex["base"])[0])
    assert s["matrices"] == names and names != per_matrix.data.matrices and per_matrix.data.alpha_matrices == names
    got = table[table["k"] == 3].pivot_table(index="expert", columns="matrix", values="alpha", sort=False)
    want = np.asarray(s["few_shot"]["3"]["alpha"])
    np.testing.assert_allclose(got[[matrix_label(m) for m in names]].to_numpy(), want)
    # the sliders' α per expert: its mean share of the matrices' mixtures (raw α's mean weighed a matrix whose α
    # were large more, though SVF's rescale keeps only each matrix's ratios, as the α view shows)
    shares = alpha_shares(want)
    shares = shares[:, ~np.isnan(shares).all(0)]
    assert per_matrix.found_alpha(3) == [round(float(v), 4) for v in shares.mean(1)]
    few = per_matrix.data.scores["few_shot"]["3"]
    saved = few["alpha"]
    few["alpha"] = [[0.9, 0.01, 0.0], [0.1, 0.09, 0.0]]  # the third matrix mixes nothing
    assert per_matrix.found_alpha(3) == [0.5, 0.5]
    few["alpha"] = saved
    # the mixer takes the run's mixing rule with its α (it kept its own: sigmoid showed a mixture CEM never scored)
    per_matrix.data.config.update(variant="sigmoid", normalize=True)
    assert per_matrix.found_mixture(3) == {"alphas": per_matrix.found_alpha(3), "variant": "sigmoid",
                                           "normalize": True}
    per_matrix.data.config.update(variant="raw", normalize=False)
    del per_matrix.data.scores["matrices"]  # a run made before scores.json said: its model folder's architecture
    assert per_matrix.data.alpha_matrices == names


def test_the_mixer_answers_as_the_experts_composed_by_hand(ex):
    import torch

    from workbench.experts import SVFModel, load_expert
    from workbench.lm.evaluation import _encode, evaluate, greedy
    from workbench.lm.models import load_model

    model = ExpertsModel(runs_dir=ex["dir"], run_id=ex["adapt0"])
    run = RunStore(ex["dir"]).open(ex["adapt0"])
    experts = [load_expert(run.path / r["path"])[0] for r in run.info["expert_inputs"][:2]]
    net, tok = load_model(ex["base"], device="cpu")
    svf = SVFModel(net, tok)
    for alphas, variant in (([0.3, 0.9], "raw"), ([1.0, 0.0], "sigmoid")):
        model.param.update(alphas=alphas, variant=variant)
        heat = model.mixture_figure()  # z′, the mixed vectors (it said z, one expert's quantity)
        assert heat.vdims[0].label == "z′" and heat.opts.get("plot", backend="bokeh").kwargs["title"] == \
            f"z′ · mixture ({variant})"
        svf.apply_mixture(experts, np.array(alphas).reshape(2, 1), variant=variant)
        for prompt in ("s:kdpa=", "12+34="):
            want = tok.decode(greedy(svf.model, [_encode(tok, prompt)], 12, pad_id=tok.pad_token_id,
                                     eos_id=tok.eos_token_id)[0], skip_special_tokens=True)
            out = model.answer(prompt)
            assert out["answer"] == want and out["seconds"] > 0
        assert model.score_mixture(8) == evaluate(svf.model, tok, ["add", "sort", "reverse"], n=8)
        z = model.mixture_z()
        mixed = svf.mixture_z(experts, np.array(alphas).reshape(2, 1), variant=variant)
        assert all(torch.equal(torch.from_numpy(z[n]), mixed[n]) for n in mixed)
    # α = (1, 0) mixing sigmoid(p) is the add expert itself
    svf.apply(experts[0])
    assert model.answer("s:kdpa=")["answer"] == tok.decode(
        greedy(svf.model, [_encode(tok, "s:kdpa=")], 12, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id)[0],
        skip_special_tokens=True)
    with pytest.raises(ValueError, match="alphas has 3 values; the 2 experts"):
        model.alphas = [0.1, 0.2, 0.3]
        model.answer("s:ab=")
    # all 0 mixes no expert, a negative α turns its expert around: refused as `experts eval --alpha` refuses them
    model.param.update(alphas=[0.0, 0.0], variant="raw")
    with pytest.raises(ValueError, match="the mixer's α: the coefficients of a matrix are all 0"):
        model.answer("s:ab=")
    model.alphas = [1.0, -0.5]
    with pytest.raises(ValueError, match="the mixer's α takes mixing coefficients >= 0 .*, got 1 -0.5"):
        model.mixture_z()
    model.alphas = [0.5, 0.5]
    with pytest.raises(ValueError, match="the prompt has 'AB'"):
        model.answer("AB")
    with pytest.raises(ValueError, match="type a prompt"):
        model.answer("")


def test_the_page_of_one_expert_builds_with_its_slider_greyed(ex):
    """An experts run mixes the finished experts of its seed in the folder: alone there (the seed-1 add expert), its
    mixer set a description on the α slider, which a slider has not got, and the page failed to build (a traceback
    in the server log)."""
    import panel as pn

    from workbench.dashboards.experts import LONE_EXPERT, experts_page, mixer_panel
    from workbench.dashboards.shell import off_loop

    experts_page(ex["dir"], run=ex["add1"], standalone=True)  # it raised as it built its tabs
    mixer = mixer_panel(ExpertsModel(runs_dir=ex["dir"], run_id=ex["add1"]), off_loop)  # seed 1: add alone
    assert [s.disabled for s in mixer.select(pn.widgets.FloatSlider)] == [True]
    assert LONE_EXPERT in [m.object for m in mixer.select(pn.pane.Markdown)]


def watchers_of(model) -> int:
    """How many watchers a Parameterized's parameters have (Panel's bound views' and the page's own)."""
    return sum(len(w) for kinds in model.param.watchers.values() for w in kinds.values())


def test_a_run_shown_after_another_leaves_nothing_of_the_last_following_the_model(ex):
    """Each run picked rebuilt the views and the mixer, and the views bound to the model (pn.bind) kept Panel's
    watchers on it, the mixer its heatmap's stream: 15 more watchers a pick for as long as the tab stayed open,
    each holding the tabs it drew, redrawn (to nothing) at every change (a helper's leak audit: +0.5 MiB a pick).
    The model is followed by as many watchers after a dozen picks as after the first."""
    import asyncio

    import panel as pn
    from bokeh.document import Document
    from panel.io.state import set_curdoc

    from workbench.dashboards.experts import experts_page

    async def pick(picker, model, run_id: str) -> None:
        picker.value = run_id
        for _ in range(2000):  # the files are read on a worker thread, then the page is rebuilt
            if model.run_id == run_id and not picker.loading:
                return
            await asyncio.sleep(0.01)
        pytest.fail(f"the page did not show {run_id}")

    async def main() -> list[int]:
        doc, model = Document(), ExpertsModel(runs_dir=ex["dir"])
        with set_curdoc(doc):
            page = experts_page(ex["dir"], run=ex["adapt0"], standalone=True, model=model)
            page.server_doc(doc)
            picker = next(w for w in page.select(pn.widgets.Select) if w.name == "Run")
            counts = []
            for run in ("add", "adapt0") * 6:
                await pick(picker, model, ex[run])
                counts.append(watchers_of(model))
        return counts

    counts = asyncio.run(main())
    assert counts[-2:] == counts[:2], counts  # an SVF run's page, then an adapt run's: the same each time


def test_every_tab_passes_bokehs_checks_as_served(ex):
    """Built into a document as `workbench serve` builds a page, every tab of a LoRA, an SVF and an adapt run passes
    Bokeh's integrity check (what the server logs at a page's load): a LoRA run's page logged W-1005 at each load
    (the wrapper Panel put around its fixed-size training curve), and "z vs σ rank", the adaptation curve and
    accuracy vs shots had the same wrapper."""
    import panel as pn
    from bokeh.core.validation import check_integrity
    from bokeh.document import Document
    from panel.io.state import set_curdoc

    from workbench.dashboards.experts import experts_page

    def issues(doc):
        found = [check_integrity(root.references()) for root in doc.roots]
        return [f"{w.code} {w.name}: {w.extra}" for f in found for w in (*f.warning, *f.error)]

    for run in ("lora", "add", "adapt0"):
        doc = Document()
        with set_curdoc(doc):
            page = experts_page(ex["dir"], run=ex[run], standalone=True)
            page.server_doc(doc)
            tabs = next(t for part in page.main for t in part.select(pn.Tabs) if len(t) > 2)
            assert issues(doc) == [], run
            for i in range(1, len(tabs)):
                tabs.active = i
                assert issues(doc) == [], (run, tabs._names[i])


def test_every_view_fits_beside_the_sidebar_of_a_laptops_window(ex):
    """No view of an SVF, LoRA, adapt or α-per-matrix run draws a row of panels wider than the main area holds in
    a 1280 px window: three z heatmaps at 460 px (the third and the one colour bar past the page's edge) and three
    α bars at 360 px ran past it (also at 1366 px)."""
    from workbench.dashboards.shell import ROW_WIDTH

    assert ROW_WIDTH <= 1280 - 362  # the window less the sidebar and the main area's margin (it starts 362 px in)
    seen = set()
    for run in ("lora", "add", "adapt0", "matrix"):
        model = ExpertsModel(runs_dir=ex["dir"], run_id=ex[run])
        for view in [*model.data.views, MIXER]:
            width = widest_row(model.figure(view))
            assert 0 < width <= ROW_WIDTH, (run, view, width)
            seen.add(view)
    assert seen == {*VIEWS, MIXER}


def test_every_view_renders_and_exports_as_a_paper_figure(ex, tmp_path):
    model = ExpertsModel(runs_dir=ex["dir"], run_id=ex["adapt0"])
    # every view as standalone HTML (Bokeh, inline); the matplotlib formats for views of each kind of plot
    for view in VIEWS:
        html = model.export(view, tmp_path, ".html")
        assert html.name == f"{ex['adapt0']}-{view.replace('_', '-')}.html"
        assert "Bokeh" in html.read_text() and "cdn.bokeh.org" not in html.read_text()
    # and every view as .csv: a row per heatmap cell, curve point, bar and whisker (figure_csv), legends renamed
    from figure_csv import check_csv

    from workbench.figures import legend_names

    for source in (model, ExpertsModel(runs_dir=ex["dir"], run_id=ex["matrix"])):  # α per matrix: a heatmap
        for view in [*source.data.views, MIXER]:
            fig = source.paper_figure(view)[0]
            rename = {name: f"renamed {name}" for name in legend_names(fig)[:1]}
            rows = check_csv(source.export(view, tmp_path, ".csv", rename=rename), fig, rename)
            if view == "curve":  # its columns as its axes say (the curve's dimensions are "x" and "y")
                assert {"CEM generation", "best few-shot accuracy"} <= set(rows[0]) and "x" not in rows[0]
    for view, suffix, head in (("z", ".png", b"\x89PNG"), ("confusion", ".pdf", b"%PDF"), ("shots", ".svg", b"<?xml")):
        assert model.export(view, tmp_path, suffix).read_bytes()[:len(head)] == head, view
    from PIL import Image

    from workbench.figures import PAGE_WIDTH

    image = Image.open(model.export("strategies", tmp_path, ".png"))  # a panel per task: 9.6 in wide before
    assert image.size[0] / image.info["dpi"][0] <= PAGE_WIDTH + 0.05
    per_matrix = ExpertsModel(runs_dir=ex["dir"], run_id=ex["matrix"])
    assert per_matrix.export("alpha", tmp_path, ".png").stat().st_size > 1000
    with pytest.raises(ValueError, match="nothing to export under 'Dispatcher confusion'"):
        per_matrix.export("confusion", tmp_path)
    with pytest.raises(ValueError, match=r"one of .png, .svg, .pdf, .html, .csv, got '.jpg' \(the export's suffix\)"):
        model.export("z", tmp_path, ".jpg")
    # "pdf" and ".PDF" as ".pdf" (a file "…-zpdf" was refused naming --out, the CLI's flag)
    assert model.export("z", tmp_path, "PDF").name.endswith("-z.pdf")
    # the Mixer tab: export writes the z′ of the α its sliders set (it wrote the view shown before it)
    model.param.update(alphas=[0.7, 0.3], view=MIXER)
    mixer = model.export(None, tmp_path, ".png")
    assert mixer.name == f"{ex['adapt0']}-mixer.png" and Image.open(mixer).size[0] > 300
    assert export_what(model) == "Export writes the view on show: **Mixer: z′ of the α set**."
    lora = ExpertsModel(runs_dir=ex["dir"], run_id=ex["lora"])
    lora.view = MIXER
    with pytest.raises(ValueError, match="nothing to export under 'Mixer: z′ of the α set'"):
        lora.export(None, tmp_path)
    # the line above the export button says so before a click (it named the Mixer's z′ as the view written)
    assert export_what(lora) == "Nothing to export on this tab: a LoRA expert is not mixed."
    from workbench.dashboards.experts import mixes_nothing  # by cause: an SVF expert, but one that dispatches

    assert mixes_nothing(ExpertsModel(runs_dir=ex["dir"], run_id=ex["classify"])) == \
        "the classification expert dispatches; it is not mixed"


def test_runs_that_cannot_be_shown_say_why(ex, tmp_path):
    import shutil

    # a damaged metrics file: the run's page still builds and says what it could not read; another adapt run's
    # damage leaves this one's α view as it is (it went blank)
    copied = tmp_path / "damaged"
    for name in (ex["sort"], ex["adapt0"], ex["adapt1"]):
        shutil.copytree(Path(ex["dir"]) / name, copied / name)
    (copied / ex["sort"] / "metrics.parquet").write_bytes(b"PAR1 cut short")
    (copied / ex["adapt1"] / "metrics.parquet").write_bytes(b"PAR1 cut short")
    (copied / ex["adapt1"] / "scores.json").write_text("{")
    killed = json.loads((copied / ex["sort"] / "run.json").read_text())  # and killed: its process gone
    killed.update(status="running", pid=2 ** 22 + 7, host=__import__("socket").gethostname(), pid_started=1.0)
    (copied / ex["sort"] / "run.json").write_text(json.dumps(killed))
    damaged = ExpertsModel(runs_dir=str(copied), run_id=ex["sort"])
    assert "**cannot read** " in damaged.summary()
    assert "metrics.parquet is unreadable" in html.unescape(damaged.summary())  # shown as its characters
    assert "· interrupted, " in damaged.summary()  # not the "running" its run.json last said
    scores = json.loads((copied / ex["adapt0"] / "scores.json").read_text())
    scores["few_shot"]["2"]["alpha"], scores["few_shot"]["3"]["alpha"] = [[1.0], [0.0]], [[0.12346], [0.54321]]
    (copied / ex["adapt0"] / "scores.json").write_text(json.dumps(scores))
    adapt0 = ExpertsModel(runs_dir=str(copied), run_id=ex["adapt0"])
    alpha = adapt0.targets_alpha()
    assert len(alpha) and set(alpha["n"]) == {1}  # this run's α alone: its damaged sibling left out
    # its largest k's (3 shots), not k = 2's; the sliders set to CEM's α as found, to 4 places
    assert list(alpha["mean"]) == pytest.approx([0.12346 / 0.66667, 0.54321 / 0.66667])
    assert adapt0.found_alpha(3) == [0.1235, 0.5432]
    model = ExpertsModel(runs_dir=ex["dir"])
    assert model.run_id == ex["matrix"]  # the newest
    with pytest.raises(ValueError, match="no run 'nope'"):
        model.choose("nope")
    # a prefix of a run's id (an address typed short) stands for its full id: kept, an export made a folder of
    # that name in the run store, which then broke the prefix for every page and command
    ids = list(model.param.run_id.objects)
    full = next(i for i in ids if sum(j.startswith(i[:-1]) for j in ids) == 1)  # a run its prefix names alone
    model.choose(full[:-1])
    assert model.run_id == full and full[:-1] not in model.param.run_id.objects
    # refresh: the mixer's experts are read again (new runs, new experts: it kept the first ones)
    model.mixer_experts()
    kept = model._mixer
    model.refresh()
    model.mixer_experts()
    assert model._mixer is not kept
    other = RunStore(tmp_path / "runs").create("merge", "ties", "-", {"x": 1}, 0)
    elsewhere = ExpertsModel(runs_dir=str(tmp_path / "runs"))
    assert elsewhere.run_id is None and "No experts or adapt runs" in elsewhere.summary()
    with pytest.raises(ValueError, match="is a merge run; the Experts page opens experts and adapt runs"):
        elsewhere.choose(other.id)


def test_the_page_is_registered_and_the_runs_gallery_links_here(ex):
    from workbench.dashboards.app import pages
    from workbench.dashboards.runs import RunsModel
    from workbench.dashboards.shell import PAGES, open_links

    assert PAGES["experts"].title == "Experts" and "experts" in pages("runs")
    assert open_links("experts", "r1") == [("Experts", "./experts?run=r1")]
    assert open_links("adapt", "r2") == [("Experts", "./experts?run=r2")]
    gallery = RunsModel(runs_dir=ex["dir"])
    rows = {r["id"]: r for r in gallery.shown()}
    for key in ("adapt0", "add", "lora"):
        assert gallery.card(rows[ex[key]])["links"] == [("Experts", f"./experts?run={quote(ex[key], safe='')}")]
    # cards say what the runs are and draw their metric (these runs have no picture of their own)
    cards = {key: gallery.card(rows[ex[key]]) for key in ("adapt0", "add", "lora")}
    assert (cards["add"]["title"], cards["add"]["subtitle"]) == ("experts · add", "SVF expert")
    assert cards["lora"]["subtitle"] == "LoRA expert"
    assert cards["adapt0"]["title"].startswith("adapt · ") and cards["adapt0"]["subtitle"].startswith("experts ")
    assert all(c["thumbnail"].startswith("data:image/png;base64,") for c in cards.values())


# --- the served page in Chromium -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory, ex):
    log = tmp_path_factory.mktemp("expertsserver") / "serve.log"
    with serving(ex["dir"], log) as url:
        yield url
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]


def test_experts_page_from_the_runs_gallery_views_export_and_mixer_in_chromium(served, ex, browser, request):  # noqa: F811
    run_id = ex["adapt0"]
    model = ExpertsModel(runs_dir=ex["dir"], run_id=run_id)
    model.alphas = [0.5, 0.5]
    want = model.answer("r:abc=")["answer"]
    with _browse(browser, f"{served}/runs", request) as page:
        page.locator(f'.run[data-run="{run_id}"]').get_by_role("link", name="open in Experts").click()
        page.wait_for_url(re.compile(r"/experts\?run="), timeout=30000)
        page.get_by_text(f"{run_id} · adaptation on").wait_for(timeout=60000)
        page.locator(".bk-tab", has_text="Strategies per task").click()
        page.get_by_text("Export writes the view on show: Strategies per task").wait_for(timeout=30000)
        page.get_by_label("Format").select_option(".html")
        page.get_by_role("button", name="export").click()
        page.get_by_text("written").wait_for(timeout=60000)
        assert (Path(ex["dir"]) / run_id / "figures" / f"{run_id}-strategies.html").is_file()
        mixer = page.locator(".bk-tab", has_text="Mixer")  # in the window: the headers wrap (it was cut off)
        assert mixer.bounding_box()["x"] + mixer.bounding_box()["width"] <= 1400
        mixer.click()
        page.get_by_text("Export writes the view on show: Mixer: z′ of the α set").wait_for(timeout=30000)
        box = page.get_by_placeholder("e.g. s:kdpa=")
        box.fill("r:abc=")
        box.press("Enter")
        mix = f"r:abc= → {want or '∅'} · z′ = 0.50·add + 0.50·sort (raw) · shares 50 % add, 50 % sort · composed"
        page.get_by_text(mix).wait_for(timeout=60000)
        handle = page.locator(".noUi-handle").first  # the add slider, moved one step by the keyboard
        handle.focus()
        handle.press("ArrowRight")
        model.alphas = [0.51, 0.5]
        moved = model.answer("r:abc=")["answer"] or "∅"
        page.get_by_text(f"r:abc= → {moved} · z′ = 0.51·add + 0.50·sort (raw) · shares 50 % add").wait_for(
            timeout=60000)
        # another run from the picker: read on a worker thread, shown on the loop, every stylesheet from our server
        page.get_by_label("Run", exact=True).select_option(ex["adapt1"])
        page.get_by_text(f"{ex['adapt1']} · adaptation on").wait_for(timeout=60000)
        page.wait_for_url(f"{served}/experts?run={quote(ex['adapt1'], safe='')}", timeout=30000)  # it follows
        assert page.get_by_text("written").count() == 0  # the last run's export line left with it
        page.wait_for_load_state("networkidle")
        # a run that is not there: the page says so (the same offline browser context, a fresh page session)
        page.goto(f"{served}/experts?run=nope", wait_until="networkidle")
        page.locator(".alert").get_by_text("no run 'nope'").wait_for(timeout=60000)
        # a bare address gets the id of the run on show (written at build, the browser's first report of its
        # address took it out)
        page.goto(f"{served}/experts")
        page.wait_for_url(re.compile(r"/experts\?run=\d{8}-\d{6}-(experts|adapt)-[\w%+.-]+$"), timeout=30000)
        # in a phone's window (320 px) the mixer fits: its 300 px sliders ran 25 px past the window's edge
        page.set_viewport_size({"width": 320, "height": 640})
        page.goto(f"{served}/experts?run={quote(run_id, safe='')}", wait_until="networkidle")
        page.wait_for_function(DOCUMENT_READY, timeout=30000)
        page.locator(".bk-tab", has_text="Mixer").click()
        page.locator(".noUi-handle").first.wait_for(timeout=60000)
        reflow = _settled(page, MAIN_REFLOW)
        assert reflow["main"] <= reflow["window"] and not reflow["past"], reflow


def test_paper_curves_keep_their_legend_inside_the_axes():
    """A reviewer's audit: the curves' legend beside the axes squeezed the plot to ~1.1 × 0.65 in of a column
    figure and pushed the title into the y label; inside (where matplotlib finds room), an accuracy on 0–1."""
    import holoviews as hv
    import numpy as np
    import pandas as pd

    from workbench.dashboards.experts import ACCURACY, curve_plot
    from workbench.figures import holoviews

    holoviews()
    table = pd.DataFrame({"series": ["best"] * 8 + ["mean"] * 8, "x": list(range(8)) * 2,
                          "y": [*np.linspace(0.2, 0.8, 8), *np.linspace(0.1, 0.6, 8)]})
    fig = hv.render(curve_plot(table, "adapt"), backend="matplotlib")
    fig.canvas.draw()
    ax = fig.axes[0]
    box, legend = ax.get_window_extent(), ax.get_legend().get_window_extent()
    assert box.x0 <= legend.x0 and legend.x1 <= box.x1 and box.y0 <= legend.y0 and legend.y1 <= box.y1
    assert ax.get_ylim() == ACCURACY  # from a little below 0: a series at 0 above the axis line
    # on the page too: a flat accuracy (0 throughout) had a −1 … 1 axis; a flat reward keeps a reward's
    for kind, ylim in (("adapt", ACCURACY), ("experts", (-1.05, 1.05))):
        flat = curve_plot(table.assign(y=0.0), kind)
        assert flat.opts.get("plot", backend="bokeh").kwargs["ylim"] == ylim


def test_figure_view_of_an_adapt_run_is_its_page_export(ex, tmp_path):
    """`workbench figure view` (its own process) on an adapt run: the page's export of that view, byte for byte;
    a view the run has nothing under is refused with the views it has."""
    from forked import run

    want = ExpertsModel(runs_dir=ex["dir"], run_id=ex["adapt0"]).export("shots", tmp_path / "page", ".svg",
                                                                        width=5.5)
    done = run("figure", "view", ex["adapt0"], "--view", "shots", "--runs", ex["dir"], "--width", "5.5", "--out",
               str(tmp_path / "shots.svg"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "shots.svg").read_bytes() == want.read_bytes()
    done = run("figure", "view", ex["matrix"], "--view", "confusion", "--runs", ex["dir"], "--out",
               str(tmp_path / "c.png"))
    assert done.returncode == 2 and f"--view confusion: run {ex['matrix']} has nothing to draw there (done); its " \
        "views: " in done.stderr, done.stderr
    assert not (tmp_path / "c.png").exists()


def test_the_page_and_experts_report_count_a_spread_alike():
    """The page pools seeds as `experts report` does: a missing (None) or NaN score is left out of both."""
    from workbench.dashboards.experts import spread
    from workbench.experts.report import spread as report_spread

    values = [0.5, float("nan"), None, 0.7]
    assert report_spread(values) == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1414213), "min": 0.5,
                                     "max": 0.7, "runs": 2}
    assert spread(values) == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1414213), "n": 2}
    assert report_spread([None, float("nan")])["mean"] is None and np.isnan(spread([float("nan")])["mean"])


def test_strategy_bars_and_dispatcher_panels_fit_their_titles_and_labels():
    """Nine strategies' bars in a third of a row ran their labels and values together and "reverse (mean ± std, 2
    seeds)" ran past the panel; the dispatchers' one-line titles were cut at "(2 see"."""
    import pandas as pd

    from workbench.dashboards.experts import BAR_ROOM, bars_plot, confusion_plot
    from workbench.dashboards.shell import ROW_WIDTH
    from workbench.figures import holoviews

    hv = holoviews()
    rows = [{"task": t, "strategy": s, "mean": 0.5, "std": 0.1, "n": 2}
            # five bars fill a third of a row (6 × BAR_ROOM + 100 > ROW_WIDTH // 3 since the row is a notebook's)
            for t, many in (("add", 5), ("sort", 5), ("reverse", 9)) for s in [f"s{i}" for i in range(many)]]
    plot = bars_plot(pd.DataFrame(rows), "strategy", "test accuracy")
    widths = [hv.Store.lookup_options("bokeh", p, "plot").kwargs["width"] for p in plot]
    assert widths[:2] == [ROW_WIDTH // 3] * 2 and widths[2] > ROW_WIDTH // 3       # wider by its bars
    assert widths[2] >= 9 * BAR_ROOM and plot._max_cols == 2                      # two a row, not three
    assert plot._max_cols * max(widths) <= ROW_WIDTH                             # a row within the page
    assert [p.label for p in plot][-1] == "" and plot[2].opts.get().kwargs["title"] == "reverse · 2 seeds"
    ylabel = [p for p in plot][2].opts.get().kwargs["ylabel"]
    assert ylabel == "test accuracy (mean ± std)"
    many = bars_plot(pd.DataFrame([{"task": "t", "strategy": f"s{i}", "mean": 0.5, "std": 0.0, "n": 1}
                                   for i in range(40)]), "strategy", "test accuracy")
    assert hv.Store.lookup_options("bokeh", many[0], "plot").kwargs["width"] == ROW_WIDTH  # a row at most
    # α's shares of seven experts: bars widened past a third of a row, so fewer than three panels a row
    from workbench.dashboards.experts import alpha_plot

    shares = pd.DataFrame([{"seed": 0, "k": k, "expert": f"e{i}", "target": "t", "matrix": "all", "alpha": 0.1,
                            "share": 1 / 7} for k in (3, 5, 10) for i in range(7)])
    alpha = alpha_plot(shares, pd.DataFrame(), "t")
    widths = [hv.Store.lookup_options("bokeh", p, "plot").kwargs["width"] for p in alpha]
    assert widths[0] > ROW_WIDTH // 3 and alpha._max_cols * max(widths) <= ROW_WIDTH
    table = pd.DataFrame({"true": ["add", "sort"], "named": ["add", "other"], "count": [3, 3]})
    heat = confusion_plot({"classifier": table}, runs=2)
    title = [p for p in heat][0].opts.get().kwargs["title"]
    assert title == "(b) classification expert\naccuracy 0.500 (2 seeds)"


def test_a_spread_of_no_scores_has_no_mean_and_a_std_of_zero_in_the_pages_tables():
    """From mutation sampling: a task whose pooled runs have no score yet (None or NaN) is a row of mean NaN,
    std 0 and n 0 in the page's tables, not std None (an object column that its whiskers and `:.3f` texts
    cannot take); one score has std 0 too."""
    from workbench.dashboards.experts import spread

    empty = spread([None, float("nan")])
    assert np.isnan(empty["mean"]) and (empty["std"], empty["n"]) == (0.0, 0)
    assert spread([0.25]) == {"mean": 0.25, "std": 0.0, "n": 1}


def test_every_view_fits_a_notebooks_cell_in_chromium(ex, browser):  # noqa: F811
    """Every view of an SVF, LoRA, adapt and α-per-matrix run as Chromium draws it (the heatmaps' axes and colour
    bar included) within ROW_WIDTH, which fits a notebook's output cell at a 1280 px window (848 px): three bar
    panels drew 900 px there, the confusion matrices 840."""
    from workbench.dashboards.shell import ROW_WIDTH

    assert ROW_WIDTH + NOTEBOOK_MARGINS <= NOTEBOOK_CELL
    with figure_page(browser) as page:
        for run in ("lora", "add", "adapt0", "matrix"):
            model = ExpertsModel(runs_dir=ex["dir"], run_id=ex[run])
            for view in [*model.data.views, MIXER]:
                assert drawn_width(page, model.figure(view)) <= ROW_WIDTH, (run, view)
