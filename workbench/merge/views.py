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

    # options are set per backend: Bokeh for the page, matplotlib for paper figures (workbench.figures.save)
    if "bokeh" not in hv.Store.renderers or "matplotlib" not in hv.Store.renderers:
        current = hv.Store.current_backend if hv.Store.renderers else "bokeh"
        hv.extension("bokeh", "matplotlib", logo=False)
        hv.Store.set_current_backend(current)
    return hv


def _style(obj, bokeh: dict | None = None, mpl: dict | None = None, **common):
    """The same look in both backends, plus options only one of them knows."""
    obj = obj.opts(**common, **(bokeh or {}), backend="bokeh")
    return obj.opts(**common, **(mpl or {}), backend="matplotlib")


def _group_order(df: pd.DataFrame) -> list[str]:
    layers = sorted({g for g in df["group"] if g.startswith("layer")}, key=lambda g: int(g.split()[1]))
    return [g for g in ["embed", *layers, "head"] if g in set(df["group"])]


def _grid(df: pd.DataFrame, x: str, y: str, value: str, x_order: list[str], y_order: list[str]):
    """A heatmap on integer cell positions with the category names as ticks: both backends then agree on
    the order (categorical axes are sorted differently by Bokeh and matplotlib)."""
    hv = _hv()
    xi, yi = {k: i for i, k in enumerate(x_order)}, {k: i for i, k in enumerate(y_order)}
    cells = pd.DataFrame({x: df[x].map(xi), y: df[y].map(yi), value: df[value].astype(float).round(3),
                          f"{x} name": df[x].astype(object), f"{y} name": df[y].astype(object)})
    hm = hv.HeatMap(cells, [x, y], [value, f"{x} name", f"{y} name"])
    return hm.opts(xticks=list(enumerate(x_order)), yticks=list(enumerate(y_order)), backend="bokeh").opts(
        xticks=list(enumerate(x_order)), yticks=list(enumerate(y_order)), backend="matplotlib")


def recipe_heatmaps(table: pd.DataFrame):
    """Layers × source model heatmaps of weight and of density; rows are model · filter class, columns the
    layer groups (embeddings, each layer, head)."""
    hv = _hv()
    if table.empty:
        return hv.Div("<i>no parameter-space recipe in this run</i>")
    order = _group_order(table)
    short = {"attention": "attn", "mlp": "mlp", "norm & embeddings": "other"}
    df = table.assign(row=table["model"] + " · " + table["filter"].map(short))
    plots = []
    for key in ("weight", "density"):
        if df[key].isna().all():
            continue
        rows = sorted(df["row"].unique(), reverse=True)
        hm = _grid(df.dropna(subset=[key]), "group", "row", key, order, rows)
        plots.append(_style(hm, title=key, cmap="viridis", colorbar=True, clim=(0, 1), xrotation=90,
                            bokeh={"tools": ["hover"], "width": 80 * len(order) + 260,
                                   "height": 26 * df["row"].nunique() + 110},
                            mpl={"show_values": False}))
    return hv.Layout(plots).cols(1) if plots else hv.Div("<i>empty recipe</i>")


def dfs_path_plot(dfs):
    """The DFS inference path: step on x, layer on y, colour = source model, size = activation scale."""
    hv = _hv()
    if dfs is None:
        return hv.Div("<i>not a DFS run</i>")
    steps = dfs.steps()
    df = pd.DataFrame({"step": range(len(steps)), "layer": [s.layer for s in steps],
                       "model": [s.model for s in steps], "scale": [s.scale for s in steps]})
    path = _style(hv.Curve(df, "step", "layer"), color="lightgray")
    pts = _style(hv.Points(df, ["step", "layer"], ["model", "scale"]), color="model", cmap="Category10",
                 bokeh={"size": hv.dim("scale") * 8 + 4, "tools": ["hover"], "legend_position": "right"},
                 mpl={"s": hv.dim("scale") * 40 + 10, "legend_position": "top"})
    return _style(path * pts, title=f"DFS path ({len(steps)} of {dfs.n_slots} slots; size = scale)",
                  yticks=list(range(dfs.layers)), bokeh={"width": 640, "height": 260})


def fitness_plot(metrics: pd.DataFrame):
    """Best and mean fitness (= −loss) and CMA σ over generations."""
    hv = _hv()
    if metrics.empty:
        return hv.Div("<i>no iterations yet</i>")
    df = metrics.assign(best=-metrics["best_loss"], mean=-metrics["loss_mean"])
    fit = (hv.Curve(df, "iteration", "best", label="best so far") * hv.Curve(df, "iteration", "mean",
                                                                             label="population mean"))
    fit = _style(fit, title="fitness (weighted accuracy)", legend_position="bottom_right")
    sigma = _style(hv.Curve(df, "iteration", "sigma"), title="CMA-ES σ")
    return _style(fit + sigma, shared_axes=False)


def scores_plot(scores: dict | None):
    """Test accuracy per task (columns) of each source model and of the merge (rows)."""
    hv = _hv()
    if not scores:
        return hv.Div("<i>no test scores (the run has not finished)</i>")
    rows = [{"model": name, "task": task, "accuracy": acc} for name, accs in scores["models"].items()
            for task, acc in accs.items()]
    rows += [{"model": "merged", "task": task, "accuracy": acc} for task, acc in scores["merged"].items()]
    df = pd.DataFrame(rows)
    models = list(dict.fromkeys(df["model"]))[::-1]  # merged at the bottom, the base on top
    hm = _grid(df, "task", "model", "accuracy", list(dict.fromkeys(df["task"])), models)
    hm = _style(hm, title="source models vs merge (test accuracy)", cmap="Blues", clim=(0, 1), colorbar=True,
                bokeh={"tools": ["hover"], "width": 120 * df["task"].nunique() + 220, "height": 40 * len(models) + 90},
                mpl={"show_values": True})  # Bokeh shows the values on hover
    return hm


def _layer_curves(analysis: dict, values: dict[str, list[float]], ylabel: str):
    hv = _hv()
    groups = analysis.get("layer_groups") or [str(i) for i in range(len(next(iter(values.values()))))]
    curves = [hv.Curve(pd.DataFrame({"group": groups, ylabel: v}), "group", ylabel, label=name)
              for name, v in values.items()]
    return _style(hv.Overlay(curves), legend_position="top_left")


def norms_plot(analysis: dict | None):
    """Per-layer norm of each expert's task vector."""
    hv = _hv()
    a = analysis or {}
    if not a.get("task_vector_norms"):
        return hv.Div("<i>no task-vector analysis (needs a base model)</i>")
    return _style(_layer_curves(a, a["task_vector_norms"], "task-vector norm"),
                  title="task-vector norm per layer group", xrotation=90)


def cosine_plot(analysis: dict | None):
    """Pairwise cosine similarity of the experts' task vectors."""
    hv = _hv()
    cos = (analysis or {}).get("task_vector_cosine")
    if not cos:
        return hv.Div("<i>no task-vector analysis</i>")
    names, matrix = cos["models"], np.asarray(cos["matrix"])
    data = [(a, b, float(matrix[i, j])) for i, a in enumerate(names) for j, b in enumerate(names)]
    frame = pd.DataFrame(data, columns=["model A", "model B", "cosine"])
    return _style(_grid(frame, "model A", "model B", "cosine", names, names[::-1]), cmap="RdBu_r", clim=(-1, 1),
                  colorbar=True, title="task-vector cosine", bokeh={"tools": ["hover"]}, mpl={"show_values": True})


def conflict_plot(analysis: dict | None):
    """TIES sign-conflict rate per layer group, and DARE's kept fraction where the run used DARE."""
    hv = _hv()
    a = analysis or {}
    plots = []
    if a.get("sign_conflict"):
        sc = a["sign_conflict"]
        plots.append(_style(_layer_curves(a, {"conflict": sc["per_layer"]}, "sign-conflict rate"),
                            title=f"TIES sign conflicts: {sc['total']:.1%} overall "
                                  f"(density {a.get('density_mean', 0):.2f})", xrotation=90, show_legend=False))
    if a.get("dare_kept"):
        plots.append(_style(_layer_curves(a, a["dare_kept"], "kept fraction"), title="DARE kept fraction",
                            xrotation=90))
    if not plots:
        return hv.Div("<i>no TIES/DARE statistics for this method</i>")
    return _style(hv.Layout(plots), shared_axes=False) if len(plots) > 1 else plots[0]
