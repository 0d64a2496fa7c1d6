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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.runs import Run, RunError, RunStore, a_kind_run, config_of

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
    from workbench.merge.analysis import recipe_setting
    from workbench.merge.methods import TASK_VECTOR_METHODS

    rows = []
    names = llama_tensor_names(layers)
    method = TASK_VECTOR_METHODS.get(recipe.merge_method)
    sparsifies = method is not None and method.sparsify is not None  # TIES / DARE trim by density
    settings = {key: recipe_setting(recipe, key, layers) for key in ("weight", "density")}
    for entry in recipe.models or []:
        model = entry["model"]
        if model == recipe.base_model:
            continue
        for name in names:
            row = {"model": model, "group": _group(name), "filter": _filter_class(name)}
            for key, setting in settings.items():
                value = setting(model, name)
                if value is None and key == "density" and sparsifies:
                    value = 1.0  # mergekit's default density: keep everything
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
    damaged: list[str] = field(default_factory=list)  # the files it could not read (their views are empty)

    @classmethod
    def open(cls, store: RunStore | str | Path, run_id: str) -> MergeRun:
        """Merge run `run_id` (an id or a unique prefix) of `store` (a RunStore or its folder), read for the views;
        RunError for a run of another kind."""
        run = RunStore.of(store).open(run_id)
        info = run.info
        if info.get("kind") != "merge":
            raise RunError(f"run {run_id!r} is {a_kind_run(info.get('kind'))}; the merge explorer opens merge runs")
        config_of(info, "method", "models", "tasks", "iters")  # what the page's summary says
        path = run.path
        (metrics, damaged), (evals, damaged_evals) = run.table_frame("metrics"), run.table_frame("evaluations")
        recipe = dfs = None
        if (path / "recipe.yaml").exists():
            from workbench.merge.recipe import Recipe

            recipe = Recipe.from_yaml(path / "recipe.yaml")
        if (path / "dfs.json").exists():
            from workbench.merge.dfs import DFSRecipe

            dfs = DFSRecipe.load(path / "dfs.json")
        return cls(run, info, metrics, evals, recipe, dfs, _json(path / "scores.json"), _json(path / "analysis.json"),
                   [why for why in (damaged, damaged_evals) if why])

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


def merge_runs(store: RunStore | str | Path) -> list[dict]:
    """The catalog rows of the store's merge runs, newest first."""
    store = RunStore.of(store)
    return [r for r in reversed(store.list()) if r["kind"] == "merge"]


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or damaged (JSON, UTF-8): the views that need it say there is none
        return None


def _hv():
    from workbench.figures import holoviews

    # both backends loaded: Bokeh for the page, matplotlib for paper figures (workbench.figures.save)
    return holoviews()


def _style(obj, bokeh: dict | None = None, mpl: dict | None = None, **common):
    """workbench.figures.styled, imported when a view is drawn (a recipe is read without plotting)."""
    from workbench.figures import styled

    return styled(obj, bokeh, mpl, **common)


def _group_order(df: pd.DataFrame) -> list[str]:
    layers = sorted({g for g in df["group"] if g.startswith("layer")}, key=lambda g: int(g.split()[1]))
    return [g for g in ["embed", *layers, "head"] if g in set(df["group"])]


def _text_colours(values: pd.Series, cmap: str, clim: tuple[float, float]) -> list[str]:
    """Dark or light text, whichever reads on the cell's colour (workbench.figures.text_colours)."""
    from workbench.figures import text_colours

    return text_colours(values.to_numpy(float), cmap, clim)


def _grid(df: pd.DataFrame, x: str, y: str, value: str, x_order: list[str], y_order: list[str], *,
          cmap: str, clim: tuple[float, float], digits: int = 2):
    """A heatmap with its values written in the cells, on integer cell positions with the category names as
    ticks: both backends then agree on the order (categorical axes are sorted differently by Bokeh and
    matplotlib). Returns HeatMap * Labels; the HeatMap keeps the names of its cells as extra value columns."""
    hv = _hv()
    xi, yi = {k: i for i, k in enumerate(x_order)}, {k: i for i, k in enumerate(y_order)}
    cells = pd.DataFrame({x: df[x].map(xi), y: df[y].map(yi), value: df[value].astype(float).round(3),
                          f"{x} name": df[x].astype(object), f"{y} name": df[y].astype(object)})
    hm = _style(hv.HeatMap(cells, [x, y], [value, f"{x} name", f"{y} name"]), cmap=cmap, clim=clim, colorbar=True,
                bokeh={"tools": ["hover"], "line_color": "white", "line_width": 1},
                mpl={"show_values": False})  # the Labels write the values, the same in both backends
    text = cells.assign(text=cells[value].map(lambda v: f"{v:.{digits}f}"),
                        colour=_text_colours(cells[value], cmap, clim))
    labels = _style(hv.Labels(text, [x, y], ["text", "colour"]), bokeh={"text_color": "colour",
                                                                        "text_font_size": "8pt"},
                    mpl={"color": "colour", "size": 7})
    ticks = {"xticks": list(enumerate(x_order)), "yticks": list(enumerate(y_order))}
    return _style(hm * labels, **ticks)


def recipe_heatmaps(table: pd.DataFrame):
    """Layers × source model heatmaps of weight and of density; rows are model · filter class, columns the
    layer groups (embeddings, each layer, head); each cell shows its value."""
    hv = _hv()
    if table.empty:
        return hv.Div("<i>no parameter-space recipe: a run writes it when it finishes (a DFS run has none)</i>")
    order = _group_order(table)
    df = table.assign(row=table["model"] + " · " + table["filter"].map(SHORT_FILTERS))
    cell = max(34, min(80, 900 // len(order)))  # wide enough for "0.53" in 8 pt, at most ~1,100 px in all
    plots = []
    for key in ("weight", "density"):
        if df[key].isna().all():
            continue
        # top to bottom in the recipe's (--models) order, as the norms' legends; the filters in SHORT_FILTERS'
        # order (the y axis counts from the bottom: reversed)
        models, kinds = list(dict.fromkeys(df["model"])), list(SHORT_FILTERS.values())
        present = set(df["row"])
        rows = [r for r in (f"{m} · {k}" for m in models for k in kinds) if r in present][::-1]
        rows += sorted(present - set(rows), reverse=True)
        hm = _grid(df.dropna(subset=[key]), "group", "row", key, order, rows, cmap="viridis", clim=(0, 1))
        plots.append(_style(hm, title=f"{key} per layer group", xlabel="layer group", ylabel="model · tensors",
                            bokeh={"width": cell * len(order) + 300, "height": 30 * df["row"].nunique() + 120,
                                   "xrotation": 90 if len(order) > 8 else 0},
                            mpl={"xrotation": 90}))
    if not plots:
        return hv.Div("<i>empty recipe</i>")
    return hv.Layout(plots).cols(1).opts(sublabel_format="", vspace=0.7, backend="matplotlib")


SHORT_FILTERS = {"attention": "attn", "mlp": "mlp", "norm & embeddings": "other"}


def dfs_path_plot(dfs):
    """The DFS inference path: step on x, layer on y, colour = source model, size = activation scale."""
    from workbench.figures import OKABE_ITO, whole_numbers

    hv = _hv()
    if dfs is None:
        return hv.Div("<i>not a DFS run</i>")
    steps = dfs.steps()
    df = pd.DataFrame({"step": range(len(steps)), "layer": [s.layer for s in steps],
                       "model": [s.model for s in steps], "scale": [s.scale for s in steps]})
    path = _style(hv.Curve(df, "step", "layer"), color="lightgray")
    # Okabe & Ito's colours, as the other paper figures: Category10's orange and green are ΔE 4.6 to a protanope
    pts = _style(hv.Points(df, ["step", "layer"], ["model", "scale"]), color="model", cmap=list(OKABE_ITO),
                 legend_position="right", bokeh={"size": hv.dim("scale") * 8 + 4, "tools": ["hover"]},
                 mpl={"s": hv.dim("scale") * 40 + 10})
    plot = _style(path * pts, title=f"DFS path: {len(steps)} of {dfs.n_slots} slots (size = scale)",
                  yticks=list(range(dfs.layers)), legend_position="right", padding=0.08,  # the ends' points whole
                  bokeh={"width": 680, "height": 280})
    return whole_numbers(plot)


def fitness_plot(metrics: pd.DataFrame, points: int | None = None):
    """Best and mean fitness (= −loss) and CMA σ over generations; at most `points` rows of each line (a page's:
    figures.CURVE_POINTS), or every row (None: a paper figure)."""
    from workbench.figures import PANEL_ASPECT, thin_curve, whole_numbers

    hv = _hv()
    if metrics.empty:
        return hv.Div("<i>no iterations yet</i>")
    df = metrics.assign(best=-metrics["best_loss"], mean=-metrics["loss_mean"])
    # on a page, each line at most `points` rows of a long run (thin_curve: every step of the best so far, each
    # bucket's extremes of the mean)
    fit = (hv.Curve(thin_curve(df, "best", limit=points), "iteration", "best", label="best so far")
           * hv.Curve(thin_curve(df, "mean", limit=points), "iteration", "mean", label="population mean"))
    if len(df) < 30:  # a few generations: their points drawn (one generation's curves drew nothing)
        fit = fit * hv.Scatter(df, "iteration", "best", label="best so far") * hv.Scatter(
            df, "iteration", "mean", label="population mean")
    # the paper figure's legend inside the axes (beside them the panels filled half the figure's width)
    fit = _style(fit, title="fitness (weighted accuracy)", ylabel="fitness", bokeh={"width": 520, "height": 280,
                                                                                    "legend_position": "right"},
                 mpl={"legend_position": "best", "aspect": PANEL_ASPECT, "padding": (0.04, 0.1)})  # ends' markers whole
    values = df[["best", "mean"]].to_numpy()
    if values.min() == values.max():  # flat (a search that found nothing): an accuracy's axis, not −1 … 1
        v = float(values.min())
        fit = _style(fit, ylim=(min(0.0, v) - 0.03, max(1.0, v)))  # a line at 0 above the axis line
    # both wider than high in a paper figure, one width: two square panels stacked made it 7.5 in tall
    sigma = _style(hv.Curve(thin_curve(df, "sigma", limit=points), "iteration", "sigma"), title="CMA-ES step size σ",
                   ylabel="σ", bokeh={"width": 520, "height": 220}, mpl={"aspect": PANEL_ASPECT})
    return _style((whole_numbers(fit) + whole_numbers(sigma)).cols(1), shared_axes=False,
                  mpl={"sublabel_format": "", "vspace": 0.7})


def scores_plot(scores: dict | None):
    """Test accuracy per task (columns) of each source model and of the merge (rows), values in the cells; a last
    column of the means over the tasks (weighted as the run's search, --task-weights), and the title says
    whether the merge's beats the best source's."""
    hv = _hv()
    if not scores:
        return hv.Div("<i>no test scores (the run has not finished)</i>")
    rows = [{"model": name, "task": task, "accuracy": acc} for name, accs in scores["models"].items()
            for task, acc in accs.items()]
    rows += [{"model": "merged", "task": task, "accuracy": acc} for task, acc in scores["merged"].items()]
    df = pd.DataFrame(rows)
    # a column of each model's mean over the tasks: whether the merge beats taking its best source as it is;
    # the run's own (weighted by --task-weights, as its search) where scores.json has it
    mean = df.groupby("model", sort=False)["accuracy"].mean()
    if isinstance(scores.get("mean"), dict) and set(scores["mean"]) == set(mean.index):
        mean = pd.Series({name: float(scores["mean"][name]) for name in mean.index})
    weights = list((scores.get("mean_weights") or {}).values())
    label = "weighted mean" if weights and len(set(weights)) > 1 else "mean"
    df = pd.concat([df, pd.DataFrame({"model": mean.index, "task": label, "accuracy": mean.to_numpy()})])
    sources = mean.drop("merged")
    best = sources.idxmax()
    # sources tied for the best: named together ("base" alone was the first of several equal ones)
    tied = [name for name, v in sources.items() if v == sources[best]]
    verdict = "beats" if mean["merged"] > sources[best] else "matches" if mean["merged"] == sources[best] else \
        "does not beat"
    best = " = ".join(map(str, tied))
    models = list(dict.fromkeys(df["model"]))[::-1]  # merged at the bottom, the base on top
    hm = _grid(df, "task", "model", "accuracy", list(dict.fromkeys(df["task"])), models, cmap="Blues", clim=(0, 1))
    title = f"test accuracy: the merge {verdict} its best source{'s' if len(tied) > 1 else ''} ({best}) on the " \
            f"{label}"
    # wide enough for its title (at two tasks, 590 px cut it at "(ba"; a bold title takes ~8 px a character, from
    # past the y axis' labels)
    return _style(hm, title=title, bokeh={"width": max(110 * df["task"].nunique() + 260, 8 * len(title) + 140),
                                          "height": 44 * len(models) + 110})


def _short_group(name: str) -> str:
    """Tensor-group names as the recipe heatmaps write them: model.embed_tokens → embed, layers.3 → layer 3."""
    name = name.removeprefix("model.")
    if name.startswith("layers."):
        return f"layer {name.split('.')[1]}"
    return {"embed_tokens": "embed", "lm_head": "head"}.get(name, name)


def _layer_curves(analysis: dict, values: dict[str, list[float]], ylabel: str):
    hv = _hv()
    groups = analysis.get("layer_groups") or [str(i) for i in range(len(next(iter(values.values()))))]
    groups = [_short_group(g) for g in groups]
    curves = [hv.Curve(pd.DataFrame({"layer group": groups, ylabel: v}), "layer group", ylabel, label=name)
              for name, v in values.items()]
    width = max(520, min(1000, 48 * len(groups) + 300))
    # a paper's legend inside the axes (where matplotlib finds room): to the right it lay on the next panel
    return _style(hv.Overlay(curves), mpl={"xrotation": 90, "legend_position": "best"},
                  bokeh={"width": width, "height": 300, "xrotation": 90 if len(groups) > 12 else 0,
                         "legend_position": "right"})


def norms_plot(analysis: dict | None):
    """Per-layer norm of each expert's task vector."""
    hv = _hv()
    a = analysis or {}
    if not a.get("task_vector_norms"):
        return hv.Div("<i>no task-vector analysis: a run writes it when it finishes, for methods with a base "
                      "model</i>")
    return _style(_layer_curves(a, a["task_vector_norms"], "task-vector norm"), title="task-vector norm")


def cosine_plot(analysis: dict | None):
    """Pairwise cosine similarity of the experts' task vectors, values in the cells."""
    hv = _hv()
    cos = (analysis or {}).get("task_vector_cosine")
    if not cos:
        return hv.Div("<i>no task-vector analysis</i>")
    names, matrix = cos["models"], np.asarray(cos["matrix"])
    data = [(a, b, float(matrix[i, j])) for i, a in enumerate(names) for j, b in enumerate(names)]
    frame = pd.DataFrame(data, columns=["model A", "model B", "cosine"])
    side = 60 * len(names)
    return _style(_grid(frame, "model A", "model B", "cosine", names, names[::-1], cmap="RdBu_r", clim=(-1, 1)),
                  title="task-vector cosine", bokeh={"width": side + 240, "height": side + 110})


def conflict_plot(analysis: dict | None):
    """TIES sign-conflict rate per layer group, and DARE's kept fraction where the run used DARE."""
    hv = _hv()
    a = analysis or {}
    plots = []
    if a.get("sign_conflict"):
        sc = a["sign_conflict"]
        after = " after DARE's drop" if sc.get("after") == "dare drop" else ""
        plots.append(_style(_layer_curves(a, {"conflict": sc["per_layer"]}, "sign-conflict rate"),
                            title=f"TIES sign conflicts{after} ({sc['total']:.1%} overall)", show_legend=False))
    if a.get("dare_kept"):
        # short: the plot's width cut "(survivors rescaled to the task vector's L1 norm)" at "vect"
        rescale = {"l1": "L1-rescaled", "inverse": "survivors ×1/density",
                   "none": "not rescaled"}.get(a.get("dare_rescale"), "")
        plots.append(_style(_layer_curves(a, a["dare_kept"], "kept fraction"),
                            title="DARE kept fraction" + (f" ({rescale})" if rescale else "")))
    if not plots:
        return hv.Div("<i>no TIES/DARE statistics for this method</i>")
    if len(plots) == 1:
        return plots[0]
    # stacked, each wider than high in a paper figure (as fitness_plot's): two square panels made a column figure
    # 7 in tall, an inch of white between them
    from workbench.figures import PANEL_ASPECT

    plots = [_style(p, mpl={"aspect": PANEL_ASPECT}) for p in plots]
    return _style(hv.Layout(plots).cols(1), shared_axes=False, mpl={"sublabel_format": "", "vspace": 0.7})


def recipe_thumbnail(data: MergeRun, width: int = 224, height: int = 144) -> np.ndarray | None:
    """A small picture of a run's recipe for the Runs gallery, uint8 (height, width, 3): the weight heatmap
    (rows model · tensors, columns layer groups, viridis) or, for DFS runs, the path (step × layer, coloured
    by source model). None while the run has neither."""
    from matplotlib import colormaps

    if data.recipe is not None:
        table = data.recipe_table()
        if table.empty or table["weight"].isna().all():
            return None
        table = table.assign(row=table["model"] + " · " + table["filter"].map(SHORT_FILTERS))
        grid = table.pivot_table(index="row", columns="group", values="weight")[_group_order(table)]
        rgb = colormaps["viridis"](np.nan_to_num(grid.to_numpy(float), nan=0.0))[..., :3]
        rgb[np.isnan(grid.to_numpy(float))] = 0.93  # tensors the recipe does not touch: light grey
    elif data.dfs is not None:
        steps = data.dfs.steps()
        if not steps:
            return None
        models = list(dict.fromkeys(s.model for s in steps))
        colours = colormaps["tab10"](np.arange(len(models)) % 10)[:, :3]
        rgb = np.full((data.dfs.layers, len(steps), 3), 0.95)
        for i, s in enumerate(steps):
            rgb[data.dfs.layers - 1 - s.layer, i] = colours[models.index(s.model)]
    else:
        return None
    from PIL import Image

    image = Image.fromarray((rgb * 255).astype(np.uint8))
    return np.asarray(image.resize((width, height), Image.NEAREST))
