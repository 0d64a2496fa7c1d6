"""The NAMM explorer (/namm): the trace of eviction steps (workbench.namm.trace) against the eviction cache's own
log and the policy's own features, baselines, the score-vs-cache sweep, result files, a trained run's policy,
paper exports, and the served page in Debian's Chromium, offline — all on the tiny random Llama."""

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_dashboards import NOTEBOOK_CELL, NOTEBOOK_MARGINS, _browse, browser, drawn_width, figure_page, serving  # noqa: F401 - browser is a fixture

from workbench.dashboards.namm import VIEWS, NAMMExplorer, shown
from workbench.namm import trace as tr
from workbench.namm.features import HOP, ema_update

PROMPT = "The passkey is 71432. Remember it. The grass is green. The sky is blue. " * 2 + "What is the passkey?"


@pytest.fixture(scope="module")
def tiny():
    return tr.explorer_model(tr.TINY)


@pytest.fixture(scope="module")
def namm_run(tmp_path_factory, tiny):
    """A run folder with a "namm" run holding a policy file (random θ, statistics collected on the tiny model)
    and an eval result file, written the way `workbench namm train` / `namm eval --out` write them."""
    from safetensors.numpy import save

    from workbench.runs import RunStore

    model, tok = tiny
    theta = tr.random_theta(3)
    policy = tr.make_policy("namm", model.config, theta=theta)
    tr.record_trace(model, tok, PROMPT, policy, tr.TraceConfig(n_up=16, max_new_tokens=4))
    mean, var = (s.numpy().astype(np.float64) for s in policy.stats)
    store = RunStore(tmp_path_factory.mktemp("nammruns"))
    run = store.create("namm", "passkey", "tiny", {"tasks": ["passkey"], "n_up": 16}, 3, metric="fitness")
    meta = {"model": "tiny", "n_up": 16, "variant": "equal-n", "run": run.id}
    (run.path / "policy.safetensors").write_bytes(save({"theta": theta, "mean": mean, "var": var},
                                                       metadata={"namm": json.dumps(meta)}))
    rows = [{"method": m, "budget": b, "task": "passkey", "score": s, "kept": k, "n": 4}
            for m, b, s, k in (("full", None, 1.0, 1.0), ("namm", None, 0.75, 0.4), ("recent", 0.5, 0.25, 0.5),
                               ("kvpress:snapkv", 0.5, 0.5, 0.5))]
    (run.path / "eval.json").write_text(json.dumps({"model": "tiny", "rows": rows}))
    run.update(status="done")
    return {"dir": str(store.root), "id": run.id, "theta": theta, "stats": (mean, var)}


# --- the trace, no browser ----------------------------------------------------------------------------------------

def test_trace_agrees_with_the_cache_log_and_the_policy_features(tiny):
    from workbench.namm.driver import generate

    model, tok = tiny
    cfg = tr.TraceConfig(n_up=32, max_new_tokens=12)
    zero = tr.record_trace(model, tok, PROMPT, tr.make_policy("namm", model.config), cfg)
    assert zero.steps == list(range(32, zero.n_tokens + 1, 32)) and zero.final_sizes == [zero.n_tokens] * 2
    for i in range(len(zero.steps)):  # θ = 0 keeps everything: nothing evicted, nothing kept only to fill N
        codes = tr.retention(zero, i)
        assert not (codes == tr.EVICTED).any() and not (codes == tr.FILL).any()
        assert (codes[:, : zero.steps[i]] == tr.KEPT).all() and (codes[:, zero.steps[i]:] == tr.NOT_YET).all()
    # a random θ evicts; the trace agrees with an independent run's own log, step by step
    trace = tr.record_trace(model, tok, PROMPT, tr.make_policy("namm", model.config, theta=tr.random_theta(0)), cfg)
    out = generate(model, torch.tensor([trace.ids[: trace.n_prompt]]),
                   tr.make_policy("namm", model.config, theta=tr.random_theta(0)), n_up=32, max_new_tokens=12,
                   record="full")
    assert trace.ids[trace.n_prompt:] == out.tokens[0, :-1].tolist()
    # the answer's tokens, the last one included (the summary said 7 generated of a max_new_tokens=8 answer: the
    # tokens fed back through the cache)
    assert trace.n_generated == out.tokens.shape[1] == trace.n_tokens - trace.n_prompt + 1
    assert trace.final_sizes == out.cache.sizes() and max(trace.final_sizes) < trace.n_tokens
    log = {(s.step, s.layer): s for s in out.cache.log}
    fills = 0
    for i, step in enumerate(trace.steps):
        codes = tr.retention(trace, i)
        for layer in range(trace.n_layers):
            rec, want = trace.record(i, layer), log[(step, layer)]
            np.testing.assert_allclose(rec.scores, want.selection.scores[0].numpy(), rtol=1e-5, atol=1e-6)
            for h in range(trace.n_heads):
                row = codes[layer * trace.n_heads + h]
                kept = set(want.positions[0, h].tolist())
                assert set(np.nonzero((row == tr.KEPT) | (row == tr.FILL))[0]) == kept
                filled = set(want.positions[0, h][want.kept_to_fill[0, h]].tolist())
                assert set(np.nonzero(row == tr.FILL)[0]) == filled
                fills += len(filled)
                assert set(np.nonzero(row == tr.EVICTED)[0]) == set(range(step)) - kept
    assert fills > 0, "no head kept a token only to fill N: the raster's mark would never show"
    # the recorded spectra fold into exactly the EMA the policy scored (recovered from its normalised features)
    assert trace.spectra_layers == [0, 1]
    prev = None
    for i in range(2):
        rec = trace.record(i, 1)
        mag = torch.tensor(rec.spectra.astype(np.float32))
        ema = ema_update(mag, 32, prev).numpy()
        np.testing.assert_allclose(ema, rec.ema, rtol=2e-3, atol=2e-3)
        prev = torch.tensor(np.stack([ema[h][rec.kept[h]] for h in range(trace.n_heads)]))
    # a token's spectrogram: F frames per step while it is cached, ending at the last query of each frame
    pos = trace.record(1, 1).positions[0][trace.record(1, 1).kept[0]][0]
    times, frames = tr.spectrogram(trace, 1, 0, int(pos))
    steps, raw, norm = tr.ema_history(trace, 1, 0, int(pos))
    assert len(times) == len(steps) * 32 // HOP and frames.shape == (len(times), 17) and raw.shape == norm.shape
    assert times[-1] == steps[-1] - 1
    # sizes: the sawtooth's low points are what each layer kept
    sizes = tr.cache_sizes(trace)
    for i, step in enumerate(trace.steps):
        after = sizes[(sizes["layer"] == 0) & (sizes["tokens"] == step)]["size"].min()
        assert after == int(trace.record(i, 0).kept[0].sum())
    assert sizes.groupby("layer")["size"].last().tolist() == trace.final_sizes
    # the text: struck through where that head evicted; hover titles give every layer/head's score
    text = tr.text_tokens(trace, -1, 1, 0)
    assert text["evicted"].sum() == (tr.retention(trace, -1)[trace.n_heads] == tr.EVICTED).sum()
    assert all("L0: h0 " in t and "L1: " in t for t in text["title"][: trace.steps[-1]])
    html = tr.text_html(trace, -1, 1, 0)
    assert html.count('class="tok evicted') == text["evicted"].sum()


def test_baselines_sweep_and_result_files(tiny, tmp_path):
    model, tok = tiny
    cfg = tr.TraceConfig(n_up=32, max_new_tokens=8)
    recent = tr.record_trace(model, tok, PROMPT, tr.make_policy("recent", model.config, budget=24), cfg)
    codes = tr.retention(recent, -1)
    last = recent.steps[-1]
    assert set(np.nonzero(codes[0] == tr.KEPT)[0]) == set(range(4)) | set(range(last - 20, last))
    assert tr.score_table(recent, -1).empty
    h2o = tr.record_trace(model, tok, PROMPT, tr.make_policy("h2o", model.config, budget=24), cfg)
    table = tr.score_table(h2o, 0)
    assert len(table) == 2 * 2 * 32 and table["kept"].sum() == 2 * 2 * 24
    rows = tr.agreement_sweep(model, recent.ids[: recent.n_prompt],
                              tr.budget_methods(model.config, recent.n_prompt, (0.25,), 32), n_up=32, new_tokens=8)
    full = rows[rows["method"] == "full"].iloc[0]
    assert full["agreement"] == 1.0 and full["kept"] == 1.0
    small = rows[rows["label"] == "recent@0.25"].iloc[0]
    assert 0.15 < small["kept"] < 0.35 and 0 <= small["agreement"] <= 1
    # eval / bench files: rows found wherever they nest, bad files one clear error
    (tmp_path / "bench.json").write_text(json.dumps({"namm": {"smollm2": {"rows": [
        {"method": "kvpress:tova", "budget": 0.5, "task": "kv", "score": 0.5, "kept": 0.5}, {"method": "x"}]}}}))
    assert tr.read_results(tmp_path / "bench.json") == [
        {"method": "kvpress:tova", "budget": 0.5, "task": "kv", "score": 0.5, "kept": 0.5, "source": "bench.json"}]
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        tr.read_results(tmp_path / "broken.json")
    with pytest.raises(ValueError, match="no file or folder"):
        tr.read_results(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="unknown policy"):
        tr.make_policy("snapkv", model.config)
    with pytest.raises(ValueError, match="multiple of 16"):
        tr.record_trace(model, tok, PROMPT, tr.make_policy("full", model.config), tr.TraceConfig(n_up=24))
    with pytest.raises(ValueError, match="window"):
        tr.record_trace(model, tok, "x" * 2100, tr.make_policy("full", model.config), cfg)


def test_explorer_opens_a_trained_run_and_exports_every_view(namm_run, tiny, tmp_path):
    from workbench.dashboards.shell import PAGES, open_links

    assert PAGES["namm"].title == "NAMM" and open_links("namm", "r1") == [("NAMM", "./namm?run=r1")]
    model = NAMMExplorer(runs_dir=namm_run["dir"])
    assert model.theta_choices() == ["zeros", "random", namm_run["id"]]
    with pytest.raises(ValueError, match="'nope' is no run in .*: the NAMM page opens runs of `workbench namm "
                                         "train` \\(1 there\\)"):
        model.choose("nope")
    # a run of the store only: a path to another run's folder (?run=../elsewhere) is not read, nor its kind said
    elsewhere = Path(namm_run["dir"]).parent / "elsewhere"
    shutil.copytree(Path(namm_run["dir"]) / namm_run["id"], elsewhere / "other")
    for name in ("../elsewhere/other", str(elsewhere / "other")):
        with pytest.raises(ValueError, match=f"'{re.escape(name)}' is no run in "):
            model.choose(name)
    shutil.rmtree(elsewhere)
    broken = tmp_path / "broken-run"
    broken.mkdir()
    (broken / "policy.safetensors").write_bytes(b"not a policy")
    with pytest.raises(ValueError, match="cannot read the policy file"):
        tr.load_saved_policy(broken)
    model.theta = "zeros"  # an untrained θ's exports: the store's own figures folder (they went beside the store)
    assert model.figures_dir() == Path(namm_run["dir"]) / "figures" / "namm"
    model.choose(namm_run["id"])
    assert (model.theta, model.n_up, model.policy) == (namm_run["id"], 16, "namm")
    assert model.figures_dir() == Path(namm_run["dir"]) / namm_run["id"] / "figures"
    model.prompt = PROMPT
    trace = model.run()
    # the page's policy is the saved one: θ and frozen statistics
    m, tok = tiny
    direct = tr.record_trace(m, tok, PROMPT, tr.make_policy("namm", m.config, theta=namm_run["theta"],
                                                            stats=namm_run["stats"]),
                             tr.TraceConfig(n_up=16, max_new_tokens=model.max_new_tokens))
    assert [r.kept.tolist() for r in trace.records[-1]] == [r.kept.tolist() for r in direct.records[-1]]
    assert model.step == len(trace.steps) - 1 and "eviction steps" in model.summary()
    assert f" prompt tokens + {trace.n_generated} generated · " in model.summary() and trace.n_generated > 1
    assert f" · {len(trace.steps)} eviction steps · cache at the end " \
        f"{np.mean(trace.final_sizes) / trace.n_tokens:.0%} of the tokens · " in model.summary()
    rows = model.result_rows()  # the run's eval file, kvpress included
    assert {r["method"] for r in rows} == {"full", "namm", "recent", "kvpress:snapkv"}
    (tmp_path / "bench.json").write_text(json.dumps({"rows": [{"method": "kvpress:tova", "task": "kv", "score": 0.5,
                                                               "kept": 0.5}]}))
    model.results = str(tmp_path / "bench.json")  # an eval / bench JSON given: its rows, not the run's
    assert [r["method"] for r in model.result_rows()] == ["kvpress:tova"]
    model.results = ""
    with pytest.raises(ValueError, match="unknown view"):
        model.export("raster", tmp_path)
    model.show_sweep(model.compute_sweep(fractions=(0.5,)))
    import holoviews as hv
    import matplotlib.colors as mcolors

    from workbench.figures import OKABE_ITO

    drawn = {mcolors.to_hex(c).upper() for ax in hv.render(model.figure("sweep"), backend="matplotlib").axes
             for coll in ax.collections for c in coll.get_facecolors()}
    assert drawn and drawn <= set(OKABE_ITO), drawn  # the methods in colours a colour-blind reader tells apart
    rows = trace.n_layers * trace.n_heads  # a click on the raster's row 1 (L0 h1: drawn second from the top)
    assert model.pick(7.2, rows - 2 + 0.3) == (7, 0, 1) and (model.layer, model.head, model.token) == (0, 1, 7)
    assert model.pick(-3, 0) is None and model.pick(5, rows + 1) is None
    # what is drawn where a click picks: each row's states at the height pick reads as that layer and head (the
    # array was drawn upside down: layer 0 at the bottom under its top label)
    image = next(e for e in model.figure("retention").traverse(lambda e: e, [hv.Image]))
    codes = tr.retention(trace, model.step)
    for row in range(rows):
        assert model.pick(0, rows - 1 - row)[1:] == (row // trace.n_heads, row % trace.n_heads)
        drawn = [image[x, rows - 1 - row, "state"] for x in range(trace.n_tokens)]  # (it carries its layer and head)
        np.testing.assert_array_equal(drawn, codes[row].astype(float))
        assert (image[0, rows - 1 - row, "layer"], image[0, rows - 1 - row, "KV head"]) == divmod(row, trace.n_heads)
    assert len({tuple(r) for r in codes}) > 1  # rows that differ: a flip would show
    model.step, model.layer, model.token = 1, 1, 3
    # every view, every format (matplotlib for PNG / SVG / PDF, Bokeh for HTML; the text drawn token by token)
    formats = {"retention": ".png", "sizes": ".html", "spectrogram": ".svg", "scores": ".html", "text": ".pdf",
               "sweep": ".html"}
    assert set(formats) == set(VIEWS)
    written = [model.export(v, tmp_path, s) for v, s in formats.items()]
    assert model.step_text() == f"step 2 of {len(trace.steps)}: {trace.steps[1]} tokens processed"
    assert all(p.name.endswith(f"-step2{s}") for p, s in zip(written, formats.values(), strict=True))
    text_pdf = written[list(formats).index("text")].read_bytes()  # TrueType, as every paper figure (Type 3 was)
    assert b"/Type3" not in text_pdf and b"/FontFile2" in text_pdf
    import holoviews as hv

    legend = hv.render(model.figure("retention"), backend="matplotlib").axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["not yet seen", "evicted", "kept", "kept to fill N"]
    shown = hv.render(model.figure("retention"), backend="bokeh")  # a notebook's view has the key too
    assert [item.label.value for item in shown.legend[0].items] == ["not yet seen", "evicted", "kept", "kept to fill N"]
    # the cache sizes' key where no curve goes (every one under the full cache's diagonal): it sat on that line
    assert hv.render(model.figure("sizes"), backend="bokeh").legend[0].location == "top_left"
    # as .csv: a row per raster cell, curve point, histogram bin (its edges too) and sweep point (figure_csv); the
    # text view, tokens, refused as having no data
    from figure_csv import check_csv

    for view in set(VIEWS) - {"text"}:
        rows = check_csv(model.export(view, tmp_path, ".csv"), model.figure(view))
        if view == "scores":
            assert all(float(r["score from"]) <= float(r["score"]) <= float(r["score to"]) for r in rows
                       if r["element"] == "Histogram")
    with pytest.raises(ValueError, match="the 'Text' view \\(the prompt's tokens\\) has no data to write as CSV"):
        model.export("text", tmp_path, ".csv")
    written.append(model.export("text", tmp_path, ".html"))
    assert all(p.is_file() and p.stat().st_size > 1000 for p in written)
    assert "line-through" in written[-1].read_text() and 'class="tok evicted' in written[-1].read_text()
    model.policy, model.budget = "full", 8
    model.run()
    # named by policy, θ and prompt: another one's export is another file, not written over the first
    full = model.export("retention", tmp_path)
    assert full != written[0] and "-full-b8-p" in full.name and written[0].is_file()
    assert written[0].name.startswith(f"namm-retention-namm-{namm_run['id']}-p")
    with pytest.raises(ValueError, match="no scores"):
        model.export("scores", tmp_path)
    # (a token past the trace on show is refused: test_the_token_field_…)
    model.param.update(policy="namm", theta="random", seed=3, scale=0.05, strict=True, layer=99, head=99,
                       token=model.trace.n_tokens - 1)
    assert model.policy_source() == "namm-random-s3-0.05-strict"
    trace = model.run()  # the layer and head on show: the last of this trace (past its end before)
    assert (model.layer, model.head, model.token) == (trace.n_layers - 1, trace.n_heads - 1, trace.n_tokens - 1)
    assert model.export("retention", tmp_path).name.startswith("namm-retention-namm-random-s3-0.05-strict-p")
    model.prompt = "  "
    with pytest.raises(ValueError, match="prompt is empty"):
        model.run()
    # a NAMM task's prompt (its answer hidden in filler) in the prompt box
    answer = model.use_task("passkey", 200)
    assert answer in model.prompt and not model.chat and len(model.prompt) > 150
    with pytest.raises(ValueError, match="unknown task"):
        model.use_task("sudoku")
    window = tr.explorer_model(model.model_name)[0].config.get_text_config(decoder=True).max_position_embeddings
    # an emptied field, too short, beyond the model's window (with the answer's tokens): said, nothing made
    for length in (None, 8, 31, window - model.max_new_tokens + 1, 100_000):
        with pytest.raises(ValueError, match="at least 32|exceed the model's window"):
            model.use_task("passkey", length)


# --- the served page in Chromium -----------------------------------------------------------------------------------

def spectrogram_words(model: NAMMExplorer) -> str:
    """What the spectrogram view says: its plots' titles, or why it has none (a Div)."""
    from holoviews import Div

    return " ".join(str(p.data) if isinstance(p, Div) else str(p.opts.get().kwargs.get("title", ""))
                    for p in model.figure("spectrogram").traverse(lambda p: p))


def test_the_token_field_and_a_click_on_the_raster_pick_the_same_token_and_refuse_one_past_the_trace(tiny, tmp_path):
    """Keyboard: the raster's tokens answered the mouse only. The sidebar's token field sets the token a click
    picks (`token`, NAMMExplorer.pick), a click shows its token there, and a number past the trace on show is
    refused in words and put back (the model took it; the spectrogram quietly drew the last token)."""
    from workbench.dashboards.namm import token_field

    model = NAMMExplorer(runs_dir=str(tmp_path), prompt=PROMPT, n_up=16, max_new_tokens=4)
    said: list[str] = []
    field = token_field(model, said.append)
    assert field.name == "token (spectrogram)"
    trace = model.run()
    last, rows = trace.n_tokens - 1, trace.n_layers * trace.n_heads
    assert model.param.token.bounds == (0, last) and field.value == model.token == 0
    assert model.pick(7, rows - 1)[0] == 7 and field.value == 7  # a click: the field follows
    field.value = 11  # typed: the state a click on token 11 sets
    assert model.token == 11 and model.pick(11, rows - 1)[0] == 11 and "token 11 " in spectrogram_words(model)
    for bad in (last + 1, -1, None):
        field.value = bad
        assert model.token == 11 and field.value == 11, bad
        why = "it was left empty" if bad is None else f"got {bad}"
        assert said[-1] == f"token (spectrogram) takes a whole number from 0 to {last} ({why}; kept 11)"
    field.value = last  # the last token: taken, the refusal cleared
    assert model.token == last and said[-1] == ""
    with pytest.raises(ValueError, match=f"must be at most {last}"):
        model.token = last + 1


def test_the_retention_rasters_csv_names_its_state_codes_and_its_title(tiny, tmp_path):
    """The raster's CSV held its cells' states as codes 0–3 that only the picture's legend named, and no title (set
    on the raster, drawn by its overlay): a reader of the table could not tell kept from evicted."""
    from figure_csv import check_csv

    from workbench.figures import save

    model = NAMMExplorer(runs_dir=str(tmp_path), prompt=PROMPT, n_up=16, max_new_tokens=4)
    trace = model.run()
    fig = model.figure("retention")
    rows = check_csv(save(fig, tmp_path / "retention.csv"), fig)
    named = {float(r["state"]): r["label"] for r in rows if r["element"] == "Scatter"}
    assert named == {float(code): name for code, name in tr.CODES.items()}
    cells = [r for r in rows if r["element"] == "Image"]
    assert len(cells) == trace.n_layers * trace.n_heads * trace.n_tokens
    assert {float(r["state"]) for r in cells} <= set(named) and {r["title"] for r in rows} == {
        f"{shown(trace.label)}: kept after step {model.step + 1} ({trace.steps[model.step]} tokens)"}


def test_the_retention_rasters_csv_names_each_cells_layer_and_kv_head(tiny, tmp_path):
    """The raster's CSV had a "layer / KV head" column holding the picture's y (rows − 1 − layer·H − head: 3 for
    L0 head 0 of the tiny model's 2 × 2), which a reader took for a layer or a head. Each cell's row now has its
    layer and KV head (as the ticks and hover say them, L0 head 0 drawn at the top) and no picture coordinate:
    its state is the trace's at that layer, head and token."""
    from figure_csv import check_csv

    from workbench.figures import PICTURE_ROW, save

    model = NAMMExplorer(runs_dir=str(tmp_path), prompt=PROMPT, n_up=16, max_new_tokens=4)
    trace = model.run()
    fig = model.figure("retention")
    rows = check_csv(save(fig, tmp_path / "retention.csv"), fig)
    assert list(rows[0])[4:] == ["token position", "state", "layer", "KV head"]  # no y of the picture
    assert PICTURE_ROW not in rows[0] and "layer / KV head" not in rows[0]
    codes = tr.retention(trace, model.step)
    cells = [r for r in rows if r["element"] == "Image"]
    where = {(int(r["layer"]), int(r["KV head"]), int(float(r["token position"]))): float(r["state"]) for r in cells}
    assert len(where) == len(cells) == codes.size  # every cell once, layers and heads whole numbers
    assert where == {(r // trace.n_heads, r % trace.n_heads, tok): float(codes[r, tok])
                     for r in range(codes.shape[0]) for tok in range(codes.shape[1])}
    # the picture reads the same: L0 head 0's states at the top of the raster (the hover's and pick's row 0)
    rows_drawn = codes.shape[0]
    drawn = fig.get(0).dframe()
    top = drawn[drawn[PICTURE_ROW] == rows_drawn - 1].sort_values("token")
    assert np.array_equal(top["state"], codes[0]) and set(top["layer"]) == set(top["KV head"]) == {0}
    assert model.pick(0, trace.n_layers * trace.n_heads - 1) == (0, 0, 0)


def test_the_sweep_compares_at_most_32_new_tokens(tiny, tmp_path):
    """From mutation sampling: "compare with baselines" reads the full cache's continuation for at most 32 tokens
    (each is a teacher-forced step of every method), whatever the trace generated; the tests ran the default 16, so
    another cap went unseen. With 40 new tokens the page's sweep is the one of 32, not of 40."""
    import pandas as pd

    m, _ = tiny
    model = NAMMExplorer(runs_dir=str(tmp_path), prompt=PROMPT, n_up=16, max_new_tokens=40)
    trace = model.run()
    assert trace.n_generated == 40
    ids = trace.ids[: trace.n_prompt]
    methods = {"namm (random)": lambda: model.ran.make(m.config), **tr.budget_methods(m.config, len(ids), (0.5,), 16)}
    capped, uncapped = (tr.agreement_sweep(m, ids, methods, n_up=16, new_tokens=n) for n in (32, 40))
    assert not capped["agreement"].equals(uncapped["agreement"])  # the cap shows in what the sweep reads
    pd.testing.assert_frame_equal(model.compute_sweep(fractions=(0.5,)), capped)


@pytest.fixture(scope="module")
def served(tmp_path_factory, namm_run):
    log = tmp_path_factory.mktemp("nammserver") / "serve.log"
    with serving(namm_run["dir"], log) as url:
        yield url
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]


RASTER = """([x, y]) => {  // the page position of data point (x, y) in the retention raster
  for (const v of Bokeh.index.all_views()) {
    const t = v.model.title;
    if (t && t.text && t.text.includes('kept after step') && v.frame) {
      const r = v.canvas_view.el.getBoundingClientRect();
      return [r.left + v.frame.x_scale.compute(x), r.top + v.frame.y_scale.compute(y)];
    }
  }
  return null;
}"""


SAID = """() => Array.from(Bokeh.index.all_views())  // what the views on show say: plot titles, Divs' text
  .map(v => (v.model.title && v.model.title.text) || v.model.text || '').join(' | ')"""


def test_a_capped_run_keeps_its_cap_and_the_sweep_compares_on_the_trace_on_show(namm_run, tiny, tmp_path):
    """A run trained with a cache cap (--max-kept) is drawn with it, as `namm eval` builds it (the page drew it
    uncapped); a policy file whose cap is no fraction is refused as it is read or written (it was refused by
    `namm eval` only after its model loaded, naming --max-kept, a flag eval has not got); "compare with baselines"
    runs on the trace on show's model, n_up and policy, whatever the settings say since (it took the settings of
    the moment: another model crashed it, another θ was plotted as this trace's)."""
    import pandas as pd
    from safetensors.numpy import save

    from workbench.namm.saved import load_policy, save_policy

    runs = tmp_path / "runs"
    __import__("shutil").copytree(namm_run["dir"], runs)
    path = runs / namm_run["id"] / "policy.safetensors"
    saved = load_policy(path)
    # θ = 0 keeps every token: what is evicted, the cap evicts
    save_policy(path, np.zeros_like(saved.theta), saved.stats, {**saved.meta, "max_kept": 0.25})
    model = NAMMExplorer(runs_dir=str(runs))
    model.choose(namm_run["id"])
    model.prompt = PROMPT
    trace = model.run()
    m, tok = tiny
    direct = tr.record_trace(m, tok, PROMPT, load_policy(path).build(m.config),
                             tr.TraceConfig(n_up=16, max_new_tokens=model.max_new_tokens))
    assert trace.final_sizes == direct.final_sizes and max(trace.final_sizes) < trace.n_tokens / 2
    assert "cap 25%" in trace.label and "cap 25%" in model.summary()
    for cap in (5, "half"):
        with pytest.raises(ValueError, match=f"records a cache cap max_kept={cap!r}, not a fraction"):
            save_policy(tmp_path / "bad.safetensors", saved.theta, saved.stats, {"max_kept": cap})
        (tmp_path / "bad.safetensors").write_bytes(save({"theta": saved.theta, "mean": saved.mean, "var": saved.var},
                                                        metadata={"namm": json.dumps({"max_kept": cap})}))
        with pytest.raises(ValueError, match="bad.safetensors records a cache cap"):
            load_policy(tmp_path / "bad.safetensors")
    before = model.compute_sweep(fractions=(0.5,))
    assert f"namm ({namm_run['id']})" in set(before["label"]), before
    model.param.update(theta="random", n_up=32, model_name="no-such-model")  # settings for the next run
    pd.testing.assert_frame_equal(model.compute_sweep(fractions=(0.5,)), before)
    assert model.summary().startswith(f"**{shown(trace.label)}** on `{tr.TINY}`")  # NAMM (cap 25%)


def test_namm_page_runs_a_prompt_scrubs_and_exports_in_chromium(served, namm_run, browser, request):  # noqa: F811
    from playwright.sync_api import expect

    run_id = namm_run["id"]
    with _browse(browser, f"{served}/runs", request) as page:
        link = page.locator(f'.run[data-run="{run_id}"]').get_by_role("link", name="open in NAMM")
        assert link.get_attribute("href") == f"./namm?run={run_id}"
        link.click()
        page.wait_for_url(re.compile(r"/namm\?run="), timeout=30000)
        page.get_by_text("Type a prompt and press").wait_for(timeout=60000)
        # the run picked again in the θ menu brings the n_up it was trained at (16), as ?run= did
        n_up, theta = page.get_by_label("n_up (tokens between evictions)"), page.get_by_label("θ", exact=True)
        assert n_up.input_value() == "16"
        theta.select_option("random")
        n_up.select_option("32")
        # a user's next pick comes a moment later: θ picked in the same instant as n_up ended once with 32 shown
        # (a fresh clone's run, under load; never in the tree's)
        page.wait_for_timeout(1500)
        theta.select_option(run_id)
        deadline = time.time() + 30
        while n_up.input_value() != "16" and time.time() < deadline:
            page.wait_for_timeout(200)
        assert n_up.input_value() == "16"
        page.get_by_role("button", name="run", exact=True).click()
        page.get_by_text(re.compile(r"eviction steps? · cache at the end")).wait_for(timeout=60000)
        summary = page.get_by_text("cache at the end").inner_text()
        steps = int(re.search(r"(\d+) eviction steps? ·", summary).group(1))
        page.get_by_text(f"step {steps} of {steps}:").wait_for(timeout=30000)
        # a click on the raster picks the token, layer and head the other views show
        page.wait_for_function(f"() => ({RASTER})([0, 0]) !== null", timeout=30000)
        # and once the run's spinner is off: it goes after the views are drawn, and its veil takes a click
        page.locator(".pn-loading").first.wait_for(state="detached", timeout=30000)
        page.mouse.click(*page.evaluate(RASTER, [9, 2]))  # row 1 of 4 from the top: layer 0, head 1
        token, head = page.get_by_label("token (spectrogram)"), page.get_by_label("KV head")
        deadline = time.time() + 30  # the token field follows the model on its own, before or after the menus
        while (token.input_value(), head.input_value()) != ("9", "head 1") and time.time() < deadline:
            page.wait_for_timeout(200)
        assert token.input_value() == "9" and head.input_value() == "head 1"
        # its hover names the same: the layer and KV head of the row, not a row index, and the state by name
        x, y = page.evaluate(RASTER, [9, 2])
        page.mouse.move(x + 1, y)
        where = page.get_by_text("L0 · head 1")
        where.wait_for(timeout=30000)
        tip = where.locator("xpath=../../..").inner_text()  # the tooltip: its rows
        assert re.search(r"token:?\s*9\b", tip) and re.search(r"state:?\s*(evicted|kept|not yet seen)", tip), tip
        x, y = page.evaluate(RASTER, [9, 0])
        page.mouse.move(x + 1, y)
        page.get_by_text("L1 · head 1").wait_for(timeout=30000)  # the bottom row: the last layer's last head
        # the keyboard's way to a token (the raster answered the mouse only): the token field, a Tab after the KV
        # head menu, shows the spectrogram of the token typed; one past the trace is refused in words, put back
        head.focus()
        page.keyboard.press("Tab")
        expect(token).to_be_focused()
        page.keyboard.press("Control+A")
        page.keyboard.type("12")
        page.keyboard.press("Enter")
        page.locator(".bk-tab", has_text="Spectrogram").click()
        page.wait_for_function(f"() => ({SAID})().includes('token 12 ')", timeout=30000)
        token.fill("100000")
        token.press("Enter")
        refusal = r"token \(spectrogram\) takes a whole number from 0 to \d+ \(got 100000; kept 12\)"
        page.get_by_text(re.compile(refusal)).wait_for(timeout=30000)
        expect(token).to_have_value("12", timeout=30000)
        page.locator("button.first").click()  # the scrubber back to the first eviction step
        page.get_by_text(f"step 1 of {steps}: 16 tokens processed").wait_for(timeout=30000)
        page.locator(".bk-tab", has_text="Text").click()
        struck = page.locator(".namm-text .tok.evicted")
        page.locator(".namm-text .tok").first.wait_for(timeout=30000)
        first = struck.count()
        page.locator("button.last").click()
        deadline = time.time() + 30
        while struck.count() <= first and time.time() < deadline:  # more is evicted by the last step
            page.wait_for_timeout(200)
        assert struck.count() > first
        title = page.locator(".namm-text .tok").first.get_attribute("title")
        assert "L0: h0" in title and "L1: h0" in title
        page.locator(".bk-tab", has_text="Retention").click()
        page.get_by_label("Format").select_option(".html")
        page.get_by_role("button", name="export").click()
        page.get_by_text("written").wait_for(timeout=60000)
        # said under the export button (it was said at the sidebar's top, under the prompt)
        below = page.get_by_text("written").bounding_box()["y"] - \
            page.get_by_role("button", name="export").bounding_box()["y"]
        assert 0 < below < 200, below
        # a new prompt's trace is another figure: the line and its download go (they offered the last trace's)
        download = page.get_by_role("button", name=re.compile("^download ", re.I))
        # waited for: the button shows and hides in messages after the status line's
        expect(download).to_be_visible(timeout=30000)
        page.get_by_role("button", name="run", exact=True).click()
        page.get_by_text("written").wait_for(state="detached", timeout=60000)
        expect(download).to_be_hidden(timeout=30000)
    assert list((Path(namm_run["dir"]) / run_id / "figures").glob(f"namm-retention-*-step{steps}.html"))


def test_a_model_warms_in_the_background_once_and_holds_up_only_its_own_callers():
    """The page loads the chosen model on a thread (warm_model) while the prompt is picked: the run then finds it
    loaded. A model still loading holds up the callers of that model only; a failure is left to the run."""
    import threading

    tr._MODELS.pop(tr.TINY, None)  # loaded again below: seeded, the same weights
    tr.warm_model(tr.TINY).join(60)
    loaded = tr._MODELS[tr.TINY]
    assert tr.warm_model(tr.TINY) is None and tr.explorer_model(tr.TINY) is loaded
    slow = "no/such/model-folder"
    lock = tr._MODEL_LOCKS.setdefault(slow, threading.Lock())
    lock.acquire()  # as if that model were loading
    try:
        warming = tr.warm_model(slow)
        assert tr.explorer_model(tr.TINY) is loaded  # not held up by the other model
        warming.join(0.5)
        assert warming.is_alive()  # waits for the load under way
    finally:
        lock.release()
    warming.join(60)
    assert not warming.is_alive() and slow not in tr._MODELS
    with pytest.raises(ValueError, match="no/such/model-folder"):
        tr.explorer_model(slow)  # the run reports why


def test_model_folders_stay_loaded_once_each_and_few(quick_zoo, tmp_path):
    """A long-lived server's NAMM page loads any model folder it is given: each stayed loaded for good, and the same
    folder typed another way (a trailing slash, a link) was loaded again beside it. One load a folder, and the
    FOLDERS_KEPT used last kept (besides tiny); a caller keeps the model it got."""
    import shutil

    base = Path(quick_zoo) / "base"
    (tmp_path / "link").symlink_to(base)
    first = tr.explorer_model(str(base))
    assert tr.explorer_model(f"{base}/") is first and tr.explorer_model(str(tmp_path / "link")) is first
    assert tr.warm_model(f" {base}/ ") is None  # loaded already, however it is spelt
    held = [first]
    for i in range(tr.FOLDERS_KEPT + 1):
        shutil.copytree(base, tmp_path / f"copy{i}")
        held.append(tr.explorer_model(str(tmp_path / f"copy{i}")))
    folders = [key for key in tr._MODELS if key not in (tr.TINY, "smollm2")]
    assert folders == [str((tmp_path / f"copy{i}").resolve()) for i in range(1, tr.FOLDERS_KEPT + 1)]
    assert tr.explorer_model(str(tmp_path / "copy1")) is held[2]  # used again: the last one dropped now
    folders = [key for key in tr._MODELS if key not in (tr.TINY, "smollm2")]
    assert folders[-1] == str((tmp_path / "copy1").resolve())
    assert tr.warm_model("~no-such-user-here/model") is not None  # not a traceback in the page's watcher
    assert tr.explorer_model(tr.TINY) is tr._MODELS[tr.TINY]  # tiny is never the one dropped
    again = tr.explorer_model(str(base))  # dropped: loaded again when asked for
    assert again is not first and len(again[0].state_dict()) == len(first[0].state_dict())


def test_figure_namm_writes_what_the_page_exports(namm_run, tmp_path):
    """`workbench figure namm` (its own process): a trained policy's retention on a prompt, the same bytes as the
    page's export of that prompt and step; a task's prompt, the text view and a serif font; each bad flag one
    error before the model loads, nothing written."""
    from forked import run_pages as run  # its own process, forked from one with the pages' modules imported

    from workbench.cli.figure import NAMM_NO_LEGEND, NAMM_VIEWS
    from workbench.figures import legend_names

    assert NAMM_VIEWS == tuple(VIEWS)  # the command's choices are the page's views
    model = NAMMExplorer(runs_dir=namm_run["dir"])
    model.choose(namm_run["id"])
    model.prompt = PROMPT
    model.run()
    model.step = 1
    want = model.export("retention", tmp_path / "page", ".pdf", width=5.5, font="serif").read_bytes()
    # the views whose --colour and --rename the command refuses before the model loads have no legend entries
    assert all(legend_names(model.figure(view)) == [] for view in NAMM_NO_LEGEND)
    names = legend_names(model.figure("sizes"))
    assert names == ["L0", "L1", "full cache"], names  # each layer's curve an entry --colour and --rename reach
    first = names[-1]  # the page's export and the command rename alike
    renamed = model.export("sizes", tmp_path / "page", ".svg", rename={first: "our policy"}).read_bytes()
    assert b"our policy" in renamed and first.encode() not in renamed
    args = ("figure", "namm", namm_run["id"], "--runs", namm_run["dir"])
    done = run(*args, "--prompt", PROMPT, "--step", "2", "--width", "5.5", "--font", "serif", "--out",
               str(tmp_path / "r.pdf"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r.pdf").read_bytes() == want and done.stdout.strip() == str(tmp_path / "r.pdf")
    done = run(*args, "--prompt", PROMPT, "--step", "2", "--view", "sizes", "--rename", first, "our policy",
               "--colour", "our policy=black", "--colour", "L1=#d55e00", "--out", str(tmp_path / "sizes.svg"))
    assert done.returncode == 0, done.stderr
    svg = (tmp_path / "sizes.svg").read_bytes()  # its colour pinned to the new name, a layer's to its own
    assert b"our policy" in svg and first.encode() not in svg and b"#d55e00" in svg
    done = run(*args, "--task", "passkey", "--length", "200", "--view", "sizes", "--font", "serif", "--out",
               str(tmp_path / "s.pdf"))
    assert done.returncode == 0, done.stderr
    assert b"STIXGeneral" in (tmp_path / "s.pdf").read_bytes()
    done = run(*args, "--prompt", PROMPT, "--view", "text", "--out", str(tmp_path / "t.pdf"))
    assert done.returncode == 0 and (tmp_path / "t.pdf").read_bytes()[:4] == b"%PDF", done.stderr
    done = run(*args, "--prompt", PROMPT, "--view", "text", "--width", "3.25", "--out", str(tmp_path / "t.png"))
    assert done.returncode == 0, done.stderr
    from PIL import Image

    narrow = Image.open(tmp_path / "t.png")  # a column wide, its tokens in as many slots as fit (96 ran past it)
    assert narrow.size[0] / narrow.info["dpi"][0] <= 3.3
    for bad, message in ((["--length", "64"], "--length sizes a --task prompt"),
                         (["--no-chat"], "--no-chat leaves a --prompt without the chat template"),
                         (["--prompt", PROMPT, "--step", "99"], "--step 99: the prompt's trace has eviction steps"),
                         (["--prompt", PROMPT, "--view", "scores", "--layer", "99"], "--layer 99: the model has"),
                         (["--token", "3"], "--token changes the spectrogram views; --view retention has none"),
                         (["--prompt", PROMPT, "--colour", "kept=black"], "--colour: the figure has no legend entries"),
                         (["--view", "text", "--font", "serif"], "the text view sets its tokens in a monospace face"),
                         (["--prompt", PROMPT, "--view", "text", "--rename", "kept", "ours"],
                          "--rename: the figure has no legend entries"),
                         (["--task", "sudoku"], "invalid choice: 'sudoku'"),
                         (["--prompt", "  "], "--prompt is empty: give some text, or --task NAME")):
        done = run(*args, *bad, "--out", str(tmp_path / "bad.png"))
        assert done.returncode == 2 and message in done.stderr, (bad, done.stderr)
    assert not (tmp_path / "bad.png").exists()


def test_a_run_trained_at_any_n_up_is_drawn_at_it_and_a_prompt_short_of_it_is_refused(namm_run, tmp_path,
                                                                                         monkeypatch):
    """A policy trained at an n_up the page's menu lacks (`namm train --n-up 256`: any multiple of 16) is opened at
    it (it was drawn at 32), as it is when picked in the θ menu (which kept the menu's before); `workbench figure
    namm` (its own process) on a prompt whose tokens with its answer's stay under it has no eviction step to draw:
    one error counting them and naming the flag that fixes it, nothing written (a --task prompt: its --length)."""
    from forked import run
    from safetensors.numpy import load_file, save_file

    from workbench.runs import RunStore

    store = RunStore(tmp_path / "runs")
    r = store.create("namm", "passkey", "tiny", {"tasks": ["passkey"], "n_up": 256}, 3, metric="fitness")
    meta = {"model": "tiny", "n_up": 256, "variant": "equal-n", "run": r.id}
    save_file(load_file(Path(namm_run["dir"]) / namm_run["id"] / "policy.safetensors"),
              r.path / "policy.safetensors", metadata={"namm": json.dumps(meta)})
    r.update(status="done")
    model = NAMMExplorer(runs_dir=str(store.root))
    model.choose(r.id)
    assert model.n_up == 256 and 256 in model.param.n_up.objects
    assert 256 not in NAMMExplorer.param.n_up.objects  # this explorer's menu, not every page's
    early = store.create("namm", "passkey", "tiny", {"tasks": ["passkey"], "n_up": 256}, 4, metric="fitness")
    early.update(status="failed")  # before its first generation: no policy saved
    with pytest.raises(ValueError, match=f"namm run {early.id} has saved no policy yet \\(status failed\\): it "
                                         f"saves one after its first generation; `workbench namm train --resume "
                                         f"{early.id} --runs "):
        model.choose(early.id)
    other = store.create("qd", "sort", "zoo", {}, 0)
    with pytest.raises(ValueError, match=f"run {other.id} is a qd run, not a namm run"):
        model.choose(other.id)
    picked = NAMMExplorer(runs_dir=str(store.root), n_up=16, strict=True)
    picked.theta = r.id  # picked in the θ menu: the same (it kept the menu's n_up before)
    assert (picked.n_up, picked.strict, picked.model_name) == (256, False, "tiny")
    picked.param.update(theta="random", n_up=32)  # each can be changed afterwards
    # the model a run was trained on: a folder (`namm train` records its absolute path; older runs the path as
    # typed, read from where the page runs), or one that is no longer there: refused (the page drew the policy on
    # its default model, never trained on it, and `figure namm` wrote that figure)
    for trained_on, expected in ((str(tmp_path / "runs"), str(tmp_path / "runs")), ("runs", str(tmp_path / "runs")),
                                 (str(tmp_path / "moved"), None)):
        meta["model"] = trained_on  # a folder stands in for a model: the page loads it on a prompt's run only
        meta.pop("model_key", None)  # (its weights, checked as a prompt runs on it, are a model's, not a folder's)
        save_file(load_file(r.path / "policy.safetensors"), r.path / "policy.safetensors",
                  metadata={"namm": json.dumps(meta)})
        with monkeypatch.context() as patched:
            patched.chdir(tmp_path)
            opened = NAMMExplorer(runs_dir=str(store.root))
            if expected is None:
                opened.policy = "h2o"  # a baseline chosen: the run refused leaves it (choose set NAMM's)
                before = (opened.theta, opened.policy, opened.n_up, opened.model_name)
                with pytest.raises(ValueError, match=f"run {r.id} was trained on the model {tmp_path / 'moved'}, "
                                                     "which is not there"):
                    opened.choose(r.id)
                # nothing of the run taken: it stayed chosen, and a prompt's run drew it on another model
                assert (opened.theta, opened.policy, opened.n_up, opened.model_name) == before
                with pytest.raises(ValueError, match="which is not there"):
                    opened.theta = r.id  # picked in the θ menu
                assert opened.theta == before[0]
            else:
                opened.choose(r.id)
                assert opened.model_name == expected
    meta["model"] = "tiny"
    save_file(load_file(r.path / "policy.safetensors"), r.path / "policy.safetensors",
              metadata={"namm": json.dumps(meta)})
    assert picked.n_up == 32
    assert NAMMExplorer(runs_dir=str(store.root), theta=r.id).n_up == 256  # given when made, too
    args = ("figure", "namm", r.id, "--runs", str(store.root))
    done = run(*args, "--prompt", "Hi", "--step", "1", "--out", str(tmp_path / "none.pdf"))
    said = re.search(r"(\d+) tokens \(the prompt's (\d+) and (\d+) of its answer\) make no eviction step \(one "
                     r"every 256 tokens, the policy's n_up\): give a --prompt of (\d+) tokens or more, or --task NAME",
                     done.stderr)
    assert done.returncode == 2 and said, done.stderr  # before --step's check: there are no steps to pick from
    total, prompt, answer, enough = map(int, said.groups())
    assert total == prompt + answer < 256 and enough == 256 - answer
    done = run(*args, "--task", "passkey", "--length", "192", "--view", "sizes", "--out", str(tmp_path / "none.pdf"))
    assert done.returncode == 2 and "give --length 256 or more" in done.stderr, done.stderr
    assert not (tmp_path / "none.pdf").exists()


def test_namm_runs_skips_what_is_not_a_run(tmp_path):
    """The NAMM page lists the namm runs with a policy; a run.json that is JSON but not an object (a list) made the
    page a traceback, where every other page skips it."""
    from workbench.namm.trace import namm_runs

    for name, text in (("a-list", "[]"), ("torn", '{"kind": "na'), ("a-number", "3"), ("search", '{"kind": "target"}'),
                       ("namm-new", '{"kind": "namm", "created": "2026-12-06T01:00:00"}'),
                       ("namm-old", '{"kind": "namm", "created": "2026-12-05T01:00:00"}'),
                       ("namm-running", '{"kind": "namm", "created": "2026-12-04T01:00:00"}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(text)
        if name in ("namm-new", "namm-old", "a-list"):
            (tmp_path / name / "policy.safetensors").write_bytes(b"")
    assert namm_runs(tmp_path) == ["namm-old", "namm-new"]  # oldest first; one without a policy yet left out
    assert namm_runs(tmp_path / "nowhere") == []


def test_every_view_fits_a_notebooks_cell_and_the_page_in_chromium(namm_run, browser):  # noqa: F811
    """Every Bokeh view as Chromium draws it within ROW_WIDTH, which fits a notebook's output cell at a 1280 px
    window (848 px) and the page's main area: the retention raster drew 900 px (its legend cut in JupyterLab),
    the spectrogram and EMA 920, the two sweep panels 1120 (past the page too)."""
    from workbench.dashboards.shell import ROW_WIDTH

    assert ROW_WIDTH + NOTEBOOK_MARGINS <= NOTEBOOK_CELL
    model = NAMMExplorer(runs_dir=namm_run["dir"])
    model.choose(namm_run["id"])
    model.prompt = PROMPT
    model.run()
    model.step = 1
    model.show_sweep(model.compute_sweep(fractions=(0.25, 0.5)))
    model.layer, model.head, model.token = 1, 0, 3
    with figure_page(browser) as page:
        for view in VIEWS.keys() - {"text"}:  # the text view is HTML, as wide as its cell
            assert 0 < drawn_width(page, model.figure(view)) <= ROW_WIDTH, view


def test_the_text_view_as_csv_is_refused_before_the_size_and_face_a_csv_takes_none_of(tmp_path):
    """From review: NAMMExplorer.write("text", "t.csv", font="serif") said "leave --font out", then (left out)
    that the text view has no data to write as CSV: the format is the slip (the view's other formats take a face),
    so it is refused first, before any model runs (an explorer with no run chosen)."""
    explorer = NAMMExplorer(runs_dir=str(tmp_path))
    for given in ({"font": "serif"}, {"width": 3.0}, {"dpi": 300}):
        with pytest.raises(ValueError, match="^the 'Text' view .* has no data to write as CSV"):
            explorer.write("text", tmp_path / "t.csv", **given)
    assert not list(tmp_path.iterdir())


def test_the_retention_raster_of_one_layer_with_one_kv_head_draws_and_exports(tmp_path):
    """A model of one layer with one KV head has a raster of one row: built from its coordinates alone, the Image
    could not tell that row's height (NaN bounds) and the figure failed (ValueError: cannot convert float NaN to
    integer), where the raster before had its bounds. A trace made by hand: the raster reads only its shape, steps
    and records."""
    from figure_csv import check_csv

    from workbench.figures import save

    n, kept = 20, 16
    record = tr.LayerStep(step=kept, layer=0, positions=np.arange(kept)[None], kept=np.ones((1, kept), bool),
                          qualified=(np.arange(kept) % 2 == 0)[None], attended=np.ones((1, kept), bool))
    model = NAMMExplorer(runs_dir=str(tmp_path))
    model.trace = tr.Trace(ids=list(range(n)), pieces=[str(i) for i in range(n)], n_prompt=n, n_layers=1, n_heads=1,
                           n_up=16, policy={"policy": "namm"}, steps=[kept], records=[[record]])
    fig = model.figure("retention")
    assert fig.get(0).bounds.lbrt() == (-0.5, -0.5, n - 0.5, 0.5)
    rows = [r for r in check_csv(save(fig, tmp_path / "retention.csv"), fig) if r["element"] == "Image"]
    assert len(rows) == n and {(r["layer"], r["KV head"]) for r in rows} == {("0", "0")}
    codes = tr.retention(model.trace, 0)[0]
    assert [float(r["state"]) for r in sorted(rows, key=lambda r: float(r["token position"]))] == codes.tolist()
