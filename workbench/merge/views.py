"""The merge explorer's data and plots, shared by the /merge page, notebook 05 and paper figures.

    data = MergeRun.open(RunStore("runs"), run_id)
    recipe_heatmaps(data.recipe_table())            # layers × source model, weight and density, per filter
    fitness_plot(data.metrics)  ·  dfs_path_plot(data.dfs)  ·  scores_plot(data.scores)
    norms_plot(data.analysis) · cosine_plot(data.analysis) · conflict_plot(data.analysis)

Every plot is a HoloViews object: the page shows it with Bokeh, `workbench.figures.save` writes it as
PNG / SVG / PDF (matplotlib) or standalone HTML.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.runs import Run, RunError, RunStore

FILTERS = {"attention": "self_attn", "mlp": "mlp", "norm & embeddings": None}
LAYER_TENSORS = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                 "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
                 "input_layernorm.weight", "post_attention_layernorm.weight")


def llama_tensor_names(layers: int) -> list[str]:
    """The tensor names of a Hugging Face Llama model with `layers` decoder layers."""
    names = ["model.embed_tokens.weight"]
    names += [f"model.layers.{i}.{t}" for i in range(layers) for t in LAYER_TENSORS]
    return names + ["model.norm.weight", "lm_head.weight"]


def _group(name: str) -> str:
    if "embed_tokens" in name:
        return "embed"
    if name.startswith("model.layers."):
        return f"layer {int(name.split('.')[2])}"
    return "head"


def _filter_class(name: str) -> str:
    for label, key in FILTERS.items():
        if key is not None and key in name:
            return label
    return "norm & embeddings"


def recipe_table(recipe, layers: int) -> pd.DataFrame:
    """Per (model, layer group, filter class) the mean weight and density a mergekit recipe (models form)
    gives the tensors, resolved exactly as merging resolves them (workbench.merge.state)."""
    from workbench.merge.state import gradient_t, resolve

    rows = []
    names = llama_tensor_names(layers)
    for entry in recipe.models or []:
        model = entry["model"]
        if model == recipe.base_model:
            continue
        for name in names:
            t = gradient_t(name, layers)
            scopes = [entry.get("parameters"), recipe.parameters]
            row = {"model": model, "group": _group(name), "filter": _filter_class(name)}
            for key in ("weight", "density"):
                value = resolve(key, scopes, name, t)
                row[key] = np.nan if value is None else float(value)
            rows.append(row)
    df = pd.DataFrame(rows, columns=["model", "group", "filter", "weight", "density"])
    return df.groupby(["model", "group", "filter"], sort=False, as_index=False).mean()


@dataclass
class MergeRun:
    """A merge-evolution run folder read for the explorer."""

    run: Run
    info: dict
    metrics: pd.DataFrame
    evaluations: pd.DataFrame
    recipe: object | None        # workbench.merge.recipe.Recipe (parameter-space runs)
    dfs: object | None           # workbench.merge.dfs.DFSRecipe (dfs runs)
    scores: dict | None
    analysis: dict | None

    @classmethod
    def open(cls, store: RunStore, run_id: str) -> MergeRun:
        run = store.open(run_id)
        info = run.info
        if info.get("kind") != "merge":
            raise RunError(f"run {run_id!r} is an {info.get('kind')} run; the merge explorer opens merge runs")
        path = run.path
        metrics = pd.read_parquet(path / "metrics.parquet") if (path / "metrics.parquet").exists() else pd.DataFrame()
        evals = pd.read_parquet(path / "evaluations.parquet") if (path / "evaluations.parquet").exists() \
            else pd.DataFrame()
        recipe = dfs = None
        if (path / "recipe.yaml").exists():
            from workbench.merge.recipe import Recipe

            recipe = Recipe.from_yaml(path / "recipe.yaml")
        if (path / "dfs.json").exists():
            from workbench.merge.dfs import DFSRecipe

            dfs = DFSRecipe.load(path / "dfs.json")
        return cls(run, info, metrics, evals, recipe, dfs, _json(path / "scores.json"), _json(path / "analysis.json"))

    @property
    def layers(self) -> int:
        if self.dfs is not None:
            return self.dfs.layers
        groups = (self.analysis or {}).get("groups") or []
        return max(len(groups) - 2, 1)

    def recipe_table(self) -> pd.DataFrame:
        if self.recipe is None:
            return pd.DataFrame(columns=["model", "group", "filter", "weight", "density"])
        return recipe_table(self.recipe, self.layers)


def merge_runs(store: RunStore) -> list[dict]:
    """The catalog rows of the store's merge runs, newest first."""
    return [r for r in reversed(store.list()) if r["kind"] == "merge"]


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _hv():
    import holoviews as hv

    if not hv.Store.renderers:  # options need a plotting extension; Bokeh is the interactive default
        hv.extension("bokeh", logo=False)
    return hv


def _group_order(df: pd.DataFrame) -> list[str]:
    layers = sorted({g for g in df["group"] if g.startswith("layer")}, key=lambda g: int(g.split()[1]))
    return [g for g in ["embed", *layers, "head"] if g in set(df["group"])]


def recipe_heatmaps(table: pd.DataFrame):
    """Layers × source model heatmaps of weight and density, one column per filter class."""
    hv = _hv()
    if table.empty:
        return hv.Div("<i>no parameter-space recipe in this run</i>")
    plots = []
    order = _group_order(table)
    for key in ("weight", "density"):
        if table[key].isna().all():
            continue
        for label in FILTERS:
            part = table[table["filter"] == label]
            if part.empty or part[key].isna().all():
                continue
            hm = hv.HeatMap(part, kdims=["group", "model"], vdims=[key], label=f"{key} · {label}")
            plots.append(hm.redim.values(group=order).opts(
                cmap="viridis", colorbar=True, clim=(0, 1), xrotation=90, tools=["hover"], width=420, height=200,
                title=f"{key} · {label}", backend="bokeh"))
    return hv.Layout(plots).cols(3) if plots else hv.Div("<i>empty recipe</i>")


def dfs_path_plot(dfs):
    """The DFS inference path: step on x, layer on y, colour = source model, size = activation scale."""
    hv = _hv()
    if dfs is None:
        return hv.Div("<i>not a DFS run</i>")
    steps = dfs.steps()
    df = pd.DataFrame({"step": range(len(steps)), "layer": [s.layer for s in steps],
                       "model": [s.model for s in steps], "scale": [s.scale for s in steps]})
    path = hv.Curve(df, "step", "layer").opts(color="lightgray")
    pts = hv.Points(df, ["step", "layer"], ["model", "scale"]).opts(
        color="model", cmap="Category10", size=hv.dim("scale").norm() * 14 + 5, tools=["hover"],
        legend_position="right", width=640, height=260, backend="bokeh")
    return (path * pts).opts(title=f"DFS path ({len(steps)} of {dfs.n_slots} slots)")


def fitness_plot(metrics: pd.DataFrame):
    """Best and mean fitness (= −loss) and CMA σ over generations."""
    hv = _hv()
    if metrics.empty:
        return hv.Div("<i>no iterations yet</i>")
    df = metrics.assign(best=-metrics["best_loss"], mean=-metrics["loss_mean"])
    fit = (hv.Curve(df, "iteration", "best", label="best so far") * hv.Curve(df, "iteration", "mean",
                                                                             label="population mean"))
    fit = fit.opts(title="fitness (weighted accuracy)", legend_position="bottom_right")
    sigma = hv.Curve(df, "iteration", "sigma").opts(title="CMA-ES σ")
    return (fit + sigma).opts(shared_axes=False)


def scores_plot(scores: dict | None):
    """Test accuracy per task: each source model against the merge."""
    hv = _hv()
    if not scores:
        return hv.Div("<i>no test scores (the run has not finished)</i>")
    rows = [{"model": name, "task": task, "accuracy": acc} for name, accs in scores["models"].items()
            for task, acc in accs.items()]
    rows += [{"model": "merged", "task": task, "accuracy": acc} for task, acc in scores["merged"].items()]
    bars = hv.Bars(pd.DataFrame(rows), ["task", "model"], "accuracy")
    return bars.opts(title="source models vs merge (test sets)", ylim=(0, 1), tools=["hover"], width=640, height=300,
                     xrotation=0, multi_level=True, backend="bokeh")


def _layer_curves(analysis: dict, values: dict[str, list[float]], ylabel: str):
    hv = _hv()
    groups = analysis.get("layer_groups") or [str(i) for i in range(len(next(iter(values.values()))))]
    curves = [hv.Curve(pd.DataFrame({"group": groups, ylabel: v}), "group", ylabel, label=name)
              for name, v in values.items()]
    return hv.Overlay(curves).opts(legend_position="top_left")


def norms_plot(analysis: dict | None):
    """Per-layer norm of each expert's task vector."""
    hv = _hv()
    a = analysis or {}
    if not a.get("task_vector_norms"):
        return hv.Div("<i>no task-vector analysis (needs a base model)</i>")
    return _layer_curves(a, a["task_vector_norms"], "task-vector norm").opts(
        title="task-vector norm per layer group", xrotation=90)


def cosine_plot(analysis: dict | None):
    """Pairwise cosine similarity of the experts' task vectors."""
    hv = _hv()
    cos = (analysis or {}).get("task_vector_cosine")
    if not cos:
        return hv.Div("<i>no task-vector analysis</i>")
    names, matrix = cos["models"], np.asarray(cos["matrix"])
    data = [(a, b, float(matrix[i, j])) for i, a in enumerate(names) for j, b in enumerate(names)]
    return hv.HeatMap(data, ["model A", "model B"], "cosine").opts(
        cmap="RdBu_r", clim=(-1, 1), colorbar=True, title="task-vector cosine", tools=["hover"], backend="bokeh")


def conflict_plot(analysis: dict | None):
    """TIES sign-conflict rate per layer group, and DARE's kept fraction where the run used DARE."""
    hv = _hv()
    a = analysis or {}
    plots = []
    if a.get("sign_conflict"):
        sc = a["sign_conflict"]
        plots.append(_layer_curves(a, {"conflict": sc["per_layer"]}, "sign-conflict rate").opts(
            title=f"TIES sign conflicts: {sc['total']:.1%} overall (density {a.get('density_mean', 0):.2f})",
            xrotation=90, show_legend=False))
    if a.get("dare_kept"):
        plots.append(_layer_curves(a, a["dare_kept"], "kept fraction").opts(title="DARE kept fraction",
                                                                            xrotation=90))
    if not plots:
        return hv.Div("<i>no TIES/DARE statistics for this method</i>")
    return hv.Layout(plots).opts(shared_axes=False) if len(plots) > 1 else plots[0]
