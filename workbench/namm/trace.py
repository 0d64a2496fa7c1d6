"""What the NAMM explorer shows, computed without a browser: a trace of every eviction step of one prompt.

    model, tokenizer = explorer_model("tiny")               # or "smollm2", or a Hugging Face model folder
    policy = make_policy("namm", model.config, theta=random_theta(0))   # or "full", "recent", "h2o"
    trace = record_trace(model, tokenizer, "Some prompt …", policy, TraceConfig(n_up=32, max_new_tokens=16))
    retention(trace, i)           # (layers·heads, tokens) codes after eviction step i: not yet / evicted / kept / fill
    cache_sizes(trace)            # slots per layer against tokens processed (a sawtooth: +1 per token, cut per step)
    spectrogram(trace, layer, head, position)    # the token's STFT frames over the steps it was cached
    ema_history(trace, layer, head, position)    # its EMA features (raw and normalised) step after step
    score_table(trace, i)         # every candidate's score at step i: layer, head, position, kept, fill
    text_tokens(trace, i, layer, head)           # the text, what was evicted, each token's scores per layer/head
    agreement_sweep(model, ids, methods, n_up=32)  # next-token agreement with the full cache vs kept-cache fraction
    read_results(path)            # method / budget / task / score / kept rows of an eval or bench JSON file

A trace wraps the policy in a recorder (the eviction cache's own hook, `update_kv`, public API only): for every
step and layer it keeps, for batch row 0, the positions of the T candidate slots, which were kept, which of those
qualified (NAMM: score ≥ 0) and which were kept only to fill the layer's common N, the scores, NAMM's EMA features
(normalised, as the scorer saw them, and raw) and the STFT magnitudes of each token's attention series (recomputed
from the same attention rows the policy got; kept for as many layers as `TraceConfig.spectra_mb` allows).

Positions are original absolute positions: position p is the p-th token processed (prompt, then the generated
tokens fed back). Everything returned is NumPy / pandas.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from workbench.checks import user_path
from workbench.lm.hf import transformers_imported
from workbench.namm.features import HOP, N_FREQ, stft_magnitudes
from workbench.namm.policy import EvictionPolicy, Selection
from workbench.namm.scorer import N_PARAMS

if TYPE_CHECKING:
    import pandas as pd
    from numpy.typing import ArrayLike
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

NOT_YET, EVICTED, KEPT, FILL = 0, 1, 2, 3  # retention codes
CODES = {NOT_YET: "not yet seen", EVICTED: "evicted", KEPT: "kept", FILL: "kept to fill N"}
POLICIES = ("namm", "full", "recent", "h2o")
TINY = "tiny"
SINKS = 4  # recent-window baselines keep the first 4 tokens ("attention sinks")


@dataclass
class TraceConfig:
    """How record_trace runs a prompt. No CLI flags: the NAMM explorer page (dashboards/namm.py) sets n_up,
    max_new_tokens and chat from its sidebar.

    Attributes:
        n_up: tokens between eviction steps, a positive multiple of 16 (default 32; the reference's 512).
        max_new_tokens: greedy tokens generated after the prompt, ≥ 0 (default 16); evictions go on while decoding.
        spectra_mb: MiB for the STFT magnitudes kept (float16): the layers that fit, evenly spaced, keep theirs
            (default 128; 0: none).
        chat: wrap a text prompt in the tokenizer's chat template when it has one (default True); token ids are
            used as given.
    """

    n_up: int = 32
    max_new_tokens: int = 16
    spectra_mb: float = 128.0
    chat: bool = True

    def __post_init__(self):  # refused where the config is made, not at the trace (record_trace checks again)
        from workbench.namm.cache import check_n_up

        check_n_up(self.n_up)
        if not isinstance(self.chat, bool):  # "no" read as on
            raise ValueError(f"chat is True or False, got {self.chat!r}")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an integer ≥ 0, got {self.max_new_tokens!r}")
        mb = self.spectra_mb
        if isinstance(mb, bool) or not isinstance(mb, (int, float)) or not mb >= 0 or mb == float("inf"):
            raise ValueError(f"spectra_mb must be a finite number ≥ 0 (0: no spectra), got {mb!r}")


@dataclass
class LayerStep:
    """One eviction step of one layer (batch row 0): the T candidate slots before the step, arrays (H, T[, …])."""

    step: int                        # tokens processed when the policy ran
    layer: int
    positions: np.ndarray            # (H, T) int: original positions of the candidates
    kept: np.ndarray                 # (H, T) bool: retained
    qualified: np.ndarray            # (H, T) bool: retained and qualified (NAMM: score ≥ 0)
    attended: np.ndarray             # (H, T) bool: retained and still visible to attention (strict: no fill)
    scores: np.ndarray | None = None         # (H, T) float32: NAMM's scores, H2O's accumulated attention
    normalised: np.ndarray | None = None     # (H, T, 17) float32: NAMM's normalised EMA features x̂
    ema: np.ndarray | None = None            # (H, T, 17) float32: the raw EMA (x̂·σ + μ)
    spectra: np.ndarray | None = None        # (H, F, T, 17) float16: STFT magnitudes of this step's frames

    @property
    def fill(self) -> np.ndarray:
        """(H, T) kept only because every head of the layer keeps the same N."""
        return self.kept & ~self.qualified


@dataclass
class Trace:
    """Every eviction step of one prompt run through a policy (module doc)."""

    ids: list[int]                   # tokens processed: prompt, then generated tokens fed back
    pieces: list[str]                # each token as text
    n_prompt: int
    n_layers: int
    n_heads: int                     # KV heads
    n_up: int
    policy: dict                     # policy.config() and a label
    steps: list[int] = field(default_factory=list)          # tokens processed at each eviction step
    records: list[list[LayerStep]] = field(default_factory=list)  # [step index][layer]
    final_sizes: list[int] = field(default_factory=list)    # slots per layer after the last token
    generated: str = ""
    n_generated: int = 0             # tokens generated, an end-of-sequence one included (`generated` leaves it
    #                                  out); the last is answered, not fed back (ids hold one fewer)
    spectra_layers: list[int] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        """Tokens processed: the prompt and the generated tokens fed back."""
        return len(self.ids)

    @property
    def label(self) -> str:
        """The policy's label (its config's label, else its name)."""
        return str(self.policy.get("label", self.policy.get("policy", "policy")))

    def record(self, i: int, layer: int) -> LayerStep:
        """The LayerStep of eviction step `i` (negative counts from the end) at `layer`; ValueError for either out
        of range."""
        check_step(self, i)
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} is outside 0 … {self.n_layers - 1}")
        return self.records[i][layer]


def check_step(trace: Trace, i: int) -> int:
    if not trace.steps:
        raise ValueError(f"no eviction step happened: the {trace.n_tokens} tokens processed are fewer than "
                         f"n_up = {trace.n_up}; use a longer prompt, more new tokens or a smaller n_up")
    if not -len(trace.steps) <= i < len(trace.steps):
        raise ValueError(f"step index {i} is outside 0 … {len(trace.steps) - 1}")
    return i % len(trace.steps)


# ---- models and policies --------------------------------------------------------------------------------------

_MODELS: dict[str, tuple] = {}
_MODEL_LOCKS: dict[str, threading.Lock] = {}  # one per model name: loading SmolLM2 does not hold up the tiny model
#: model folders kept loaded besides tiny and smollm2, the least recently used one dropped past it. A server's NAMM
#: page loads any folder it is given, and each one stayed loaded for good (SmolLM2-sized: ~540 MB of float32 a folder)
FOLDERS_KEPT = 2
_LOCKS_LOCK = threading.Lock()
#: one forward at a time per process: the eviction cache hooks the model's attention modules while it runs
RUN_LOCK = threading.Lock()
TINY_CHARS = "".join(chr(c) for c in range(32, 127))


def tiny_llama(seed: int = 0, layers: int = 2, window: int = 2048):
    """(model, tokenizer): a tiny random Llama with GQA (4 query heads on 2 KV heads, hidden 32, eager attention)
    and a char-level tokenizer over printable ASCII. Its text is noise; it runs any prompt in milliseconds."""
    transformers_imported()  # the first import of transformers under one lock
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.lm.tasks import char_tokenizer

    tok = char_tokenizer(TINY_CHARS)
    gen = torch.Generator().manual_seed(int(seed))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=window,
                      initializer_range=0.3, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                      attn_implementation="eager")
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # a wide init makes attention peaky, so heads see different things and evict differently
        for p in model.parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model, tok


def explorer_model(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model with eager attention, tokenizer) for "tiny", "smollm2" or a model folder; loaded once per process (the
    FOLDERS_KEPT folders used last stay loaded)."""
    name = _model_key(name)
    if not name:
        raise ValueError("give a model: tiny, smollm2 or a Hugging Face model folder")
    with _LOCKS_LOCK:
        lock = _MODEL_LOCKS.setdefault(name, threading.Lock())
    with lock:  # a second caller of the same model waits for the first one's load
        with _LOCKS_LOCK:
            loaded = _MODELS.pop(name, None)
            if loaded is not None:
                _MODELS[name] = loaded  # the most recently used last
        if loaded is None:
            if name == TINY:
                loaded = tiny_llama()
            else:
                from workbench.lm.models import load_model

                model, tok = load_model(name, device="cpu")
                try:
                    model.set_attn_implementation("eager")
                except Exception as error:  # noqa: BLE001 - transformers refuses with various types
                    raise ValueError(f"model {name} cannot run eager attention ({error}); NAMM reads its "
                                     "post-softmax weights: give a Llama-family model") from None
                loaded = (model, tok)
            with _LOCKS_LOCK:
                _MODELS[name] = loaded
                folders = [key for key in _MODELS if key not in (TINY, "smollm2")]
                for key in folders[:max(len(folders) - FOLDERS_KEPT, 0)]:  # a run under way keeps its own model
                    del _MODELS[key]
        return loaded


def _model_key(name: str) -> str:
    """The name a model is loaded and kept under: a folder or file that is there by its resolved path (the same
    folder typed with a trailing slash, through a link or relative to elsewhere loaded it once more), else the name."""
    name = str(name).strip()
    if not name or name in (TINY, "smollm2"):
        return name
    try:
        path = user_path(name)
        return str(path.resolve()) if path.exists() else name
    except (OSError, RuntimeError, ValueError):  # a name too long, a link loop: load_model says why, not the
        return name                               # page's watcher (warm_model) with a traceback


def warm_model(name: str) -> threading.Thread | None:
    """Load `name` (explorer_model) on a background thread, so that the first run finds it loaded; None when it is
    loaded already. A failure is not reported here: the run that needs the model reports it."""
    name = _model_key(name)
    if not name or name in _MODELS:
        return None

    def load() -> None:
        try:
            explorer_model(name)
        except Exception:  # noqa: BLE001 - the run reports why the model cannot load
            logging.getLogger(__name__).debug("warming model %s failed", name, exc_info=True)

    thread = threading.Thread(target=load, name=f"warm {name}", daemon=True)
    thread.start()
    return thread


def random_theta(seed: int, scale: float = 0.065) -> np.ndarray:
    """A random BAM θ: N(0, scale²) per number (σ0 of the CMA-ES, by default), seeded."""
    return np.random.default_rng(int(seed)).normal(0.0, float(scale), N_PARAMS)


def make_policy(kind: str, config: PretrainedConfig, *, theta: torch.Tensor | ArrayLike | None = None,
                stats: tuple[torch.Tensor | ArrayLike, torch.Tensor | ArrayLike] | None = None, strict: bool = False,
                max_kept: float | None = None, budget: int = 64, sinks: int = SINKS) -> EvictionPolicy:
    """A policy for a model of this config: "namm" (θ, None = all zeros: keeps everything; stats None: collected
    on the way; max_kept: the capped variant's fraction, a trained policy's `PolicySource.max_kept`), "full",
    "recent" (`budget` tokens in all: the first `sinks` and the budget − sinks newest), "h2o" (budget/2 heavy +
    budget/2 recent).

    config: the Hugging Face model's config (its layers, attention and KV heads: cache.model_shape); theta: NAMM's
    N_PARAMS numbers (array-like); stats: (mean, var), the feature statistics a trained policy was saved with
    (frozen), None to collect them on the way; strict: NAMM's strict-per-head variant."""
    from workbench.namm.baselines import H2O, FullCache, RecentWindow
    from workbench.namm.cache import model_shape
    from workbench.namm.policy import NAMMPolicy

    shape = model_shape(config)
    if kind == "namm":
        theta = np.zeros(N_PARAMS) if theta is None else theta
        return NAMMPolicy(theta, *shape, stats=stats, strict=strict, max_kept=max_kept)
    if kind == "full":
        return FullCache(*shape)
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 2:
        raise ValueError(f"a baseline's budget is a number of tokens ≥ 2, got {budget!r}")
    if kind == "recent":
        return RecentWindow(max(1, budget - sinks), min(sinks, budget - 1), n_layers=shape[0], n_kv_heads=shape[1],
                            gqa_group=shape[2])
    if kind == "h2o":
        return H2O(budget // 2, budget - budget // 2, n_layers=shape[0], n_kv_heads=shape[1], gqa_group=shape[2])
    raise ValueError(f"unknown policy {kind!r}: choose one of {', '.join(POLICIES)}")


def policy_label(policy: EvictionPolicy) -> str:
    c = policy.config()
    if c["policy"] == "recent":
        return f"recent {c['window']}+{c['sinks']}"
    if c["policy"] == "h2o":
        return f"h2o {c['heavy']}+{c['recent']}"
    variant = [*(["strict"] if c.get("strict") else []),
               *([f"cap {c['max_kept']:.0%}"] if c.get("max_kept") is not None else [])]
    return c["policy"] + (f" ({', '.join(variant)})" if variant else "")


# ---- saved policies ---------------------------------------------------------------------------------------------

@dataclass
class PolicySource:
    """θ and frozen statistics of a trained NAMM (or None for stats), and where they came from."""

    theta: np.ndarray
    stats: tuple[np.ndarray, np.ndarray] | None
    meta: dict
    path: Path

    @property
    def strict(self) -> bool:
        return self.meta.get("variant") == "strict"

    @property
    def max_kept(self) -> float | None:
        """The cache cap the policy was trained with (the capped variant), None: the paper's uncapped NAMM."""
        return self.meta.get("max_kept")


def load_saved_policy(path: str | Path) -> PolicySource:
    """A policy file (policy.safetensors / .npz with theta, mean, var: workbench.namm.saved) or a run folder
    holding one; a missing or broken one is one ValueError."""
    from workbench.namm.saved import load_folder_policy, load_policy

    folder = Path(path) if Path(path).is_dir() else None
    saved = load_folder_policy(folder) if folder else load_policy(path)  # a run's: its model where it records it
    return PolicySource(saved.theta, (saved.mean, saved.var), dict(saved.meta),
                        folder / "policy.safetensors" if folder else Path(path))


def namm_runs(runs_dir: str | Path) -> list[str]:
    """Ids of the "namm" runs in runs_dir that hold a saved policy, oldest first (read defensively: a run being
    written or a damaged run.json is skipped)."""
    from workbench.runs import created_at

    root = Path(runs_dir)
    found = []
    if not root.is_dir():
        return found
    for run in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            info = json.loads((run / "run.json").read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(info, dict):  # JSON, but not a run's (a list, say): the page was a traceback
            continue
        if info.get("kind") == "namm" and (run / "policy.safetensors").is_file():
            found.append((created_at(info) or 0.0, run.name))  # when made, in any time zone
    return [name for _, name in sorted(found)]


def read_results(path: str | Path) -> list[dict]:
    """Rows {method, budget, task, score, kept, source} from a JSON file holding a list "rows" (what `workbench
    namm eval` and `workbench bench namm --json` print: NAMM, the baselines and kvpress presses), or from every
    such *.json file of a run folder. Rows without a numeric score and kept fraction are skipped."""
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not path.exists():
        raise ValueError(f"no file or folder {path}: give a JSON file written by `workbench namm eval --out` or "
                         "`workbench bench namm --json`")
    rows = []
    for file in files:
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as error:
            if not path.is_dir():
                raise ValueError(f"{file} is not valid JSON ({error})") from None
            continue
        found = _rows_in(data)
        for r in found:
            try:
                score, kept = float(r["score"]), float(r["kept"])
            except (KeyError, TypeError, ValueError):
                continue
            budget = r.get("budget")
            rows.append({"method": str(r.get("method", "?")), "budget": None if budget is None else float(budget),
                         "task": str(r.get("task", "")), "score": score, "kept": kept, "source": file.name})
    if not rows and not path.is_dir():
        raise ValueError(f"{path} holds no result rows (a list 'rows' of method, score, kept)")
    return rows


def _rows_in(data) -> list[dict]:
    """Every list named "rows" of dicts in a JSON document (bench output nests them)."""
    if isinstance(data, dict):
        out = [r for r in data.get("rows", []) if isinstance(r, dict)] if isinstance(data.get("rows"), list) else []
        for key, value in data.items():
            if key != "rows":
                out += _rows_in(value)
        return out
    if isinstance(data, list):
        return [r for item in data for r in _rows_in(item)]
    return []


def task_names() -> list[str]:
    """The procedural NAMM tasks (workbench.namm.tasks), [] where that module is not there."""
    try:
        from workbench.namm.tasks import TASKS
    except ImportError:
        return []
    return list(TASKS)


def task_prompt(task: str, tokenizer, length: int = 256, seed: int = 0) -> tuple[str, str]:
    """(prompt text, exact answer) of test example `seed` of a NAMM task at about `length` tokens; the text is
    already in the tokenizer's chat template (run it with chat=False)."""
    if task not in task_names():
        known = ", ".join(task_names()) or "(none: workbench.namm.tasks is missing)"
        raise ValueError(f"unknown task {task!r}: one of {known}")
    from workbench.namm.tasks import make_example

    example = make_example(task, tokenizer, int(length), 0, int(seed), "test")
    return example.text, example.answer


# ---- recording ---------------------------------------------------------------------------------------------------

class _Recorder(EvictionPolicy):
    """Delegates every decision to `inner` and hands (layer, KV-head attention rows, selection) to `on_step`."""

    def __init__(self, inner: EvictionPolicy, on_step: Callable[[int, torch.Tensor, Selection], None]):
        self.inner, self.on_step = inner, on_step
        self.name, self.strict = inner.name, inner.strict
        self.n_layers, self.n_kv_heads, self.gqa_group = inner.n_layers, inner.n_kv_heads, inner.gqa_group

    def bind(self, n_layers: int, n_kv_heads: int, gqa_group: int) -> None:
        self.inner.bind(n_layers, n_kv_heads, gqa_group)
        self.n_layers, self.n_kv_heads, self.gqa_group = n_layers, n_kv_heads, gqa_group

    def reset(self) -> None:
        self.inner.reset()

    def config(self) -> dict:
        return self.inner.config()

    def update_kv(self, layer: int, attn: torch.Tensor, *, positions=None, valid=None) -> Selection:
        sel = self.inner.update_kv(layer, attn, positions=positions, valid=valid)
        self.on_step(layer, attn, sel)
        return sel


def encode(tokenizer, prompt, chat: bool = True) -> list[int]:
    """Token ids of a prompt: ids as given, or text (in the chat template when asked and the tokenizer has one)."""
    if not isinstance(prompt, str):
        return [int(t) for t in prompt]
    if chat and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def _spectra_layers(n_layers: int, n_heads: int, total: int, n_up: int, budget_mb: float) -> list[int]:
    """Layers whose STFT magnitudes fit the budget (float16, T ≤ step tokens per step), evenly spaced."""
    per_layer = sum(n_heads * (n_up // HOP) * s * N_FREQ * 2 for s in range(n_up, total + 1, n_up))
    fit = n_layers if per_layer == 0 else int(budget_mb * 2 ** 20 // per_layer)
    if fit >= n_layers:
        return list(range(n_layers))
    if fit <= 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, n_layers - 1, fit)})


@torch.inference_mode()
def record_trace(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str | Iterable[int],
                 policy: EvictionPolicy, cfg: TraceConfig | None = None, *,
                 progress: Callable[[int, int], None] | None = None) -> Trace:
    """Run `prompt` (text or token ids) through the model with `policy` evicting every cfg.n_up tokens, then
    generate cfg.max_new_tokens greedy tokens; record every step (module doc). progress(tokens done, total)."""
    from workbench.namm.cache import EvictionCache, check_model, check_n_up, model_shape
    from workbench.namm.driver import forward

    cfg = cfg or TraceConfig()
    n_up = check_n_up(cfg.n_up)
    if isinstance(cfg.max_new_tokens, bool) or not isinstance(cfg.max_new_tokens, int) or cfg.max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer ≥ 0, got {cfg.max_new_tokens!r}")
    ids = encode(tokenizer, prompt, cfg.chat)
    if not ids:
        raise ValueError("the prompt is empty: type some text")
    check_model(model)
    n_layers, n_heads, _ = model_shape(model.config)
    window = getattr(model.config.get_text_config(decoder=True), "max_position_embeddings", None)
    total = len(ids) + max(cfg.max_new_tokens - 1, 0)
    if window is not None and total > window:
        raise ValueError(f"{len(ids)} prompt tokens + {cfg.max_new_tokens} new ones exceed the model's window of "
                         f"{window} positions: shorten the prompt or the new tokens")
    spectra_layers = _spectra_layers(n_layers, n_heads, total, n_up, cfg.spectra_mb)
    trace = Trace(ids=[], pieces=[], n_prompt=len(ids), n_layers=n_layers, n_heads=n_heads, n_up=n_up,
                  policy={**policy.config(), "label": policy_label(policy)}, spectra_layers=spectra_layers)
    carry: dict[int, torch.Tensor] = {}  # layer -> (H, T, 16): last 16 attention values of each kept token
    pending: list[LayerStep] = []
    stats = getattr(policy, "statistics", None)

    def on_step(layer: int, attn: torch.Tensor, sel: Selection) -> None:
        a = attn[0].float().cpu()                                    # (H, n_new, T)
        h, n_new, t = a.shape
        retained = sel.retained[0].cpu()
        kept = torch.zeros(h, t, dtype=torch.bool).scatter_(1, retained, True)
        qualified = torch.zeros(h, t, dtype=torch.bool).scatter_(1, retained, sel.keep_above[0].cpu())
        attended = torch.zeros(h, t, dtype=torch.bool).scatter_(1, retained, sel.attend[0].cpu())
        series = torch.cat([torch.zeros(h, t, HOP), a.transpose(-1, -2)], dim=-1)
        if layer in carry:
            series[:, : t - n_new, :HOP] = carry[layer]
        carry[layer] = series[..., -HOP:].gather(1, retained[..., None].expand(-1, -1, HOP))
        spectra = None
        if layer in spectra_layers:
            spectra = stft_magnitudes(series).transpose(1, 2).numpy().astype(np.float16)  # (H, F, T, 17)
        normalised = ema = None
        if sel.features is not None:
            normalised = sel.features[0, ..., -N_FREQ:].float().cpu()
            if stats is not None and stats.mean is not None:  # the statistics this step was normalised with
                std = stats.var.sqrt().clamp_min(1e-7).float().cpu()
                ema = (normalised * std + stats.mean.float().cpu()).numpy()
            normalised = normalised.numpy()
        scores = None if sel.scores is None else sel.scores[0].float().cpu().numpy()
        pending.append(LayerStep(step=cache.total, layer=layer, positions=sel.positions_before[0].cpu().numpy(),
                                 kept=kept.numpy(), qualified=qualified.numpy(), attended=attended.numpy(),
                                 scores=scores, normalised=normalised, ema=ema, spectra=spectra))
        if layer == n_layers - 1:
            trace.steps.append(cache.total)
            trace.records.append(sorted(pending, key=lambda r: r.layer))
            pending.clear()
            if progress is not None:
                progress(min(cache.total, total), total)

    cache = EvictionCache(model.config, _Recorder(policy, on_step), n_up, record="none")
    eos = getattr(tokenizer, "eos_token_id", None)
    fed = list(ids)
    generated: list[int] = []
    with RUN_LOCK:
        logits = forward(model, torch.tensor([ids]), cache, last_only=True)[:, -1]
        for k in range(cfg.max_new_tokens):
            nxt = int(logits.argmax(-1))
            generated.append(nxt)
            if nxt == eos or k == cfg.max_new_tokens - 1:
                break
            fed.append(nxt)
            logits = forward(model, torch.tensor([[nxt]]), cache, last_only=True)[:, -1]
            if progress is not None:
                progress(len(fed), total)
    trace.ids = fed
    trace.pieces = [tokenizer.decode([t]) for t in fed]
    trace.final_sizes = cache.sizes()
    trace.generated = tokenizer.decode(generated, skip_special_tokens=True)
    trace.n_generated = len(generated)
    if progress is not None:
        progress(total, total)
    return trace


# ---- what the views show -------------------------------------------------------------------------------------------

def retention(trace: Trace, i: int) -> np.ndarray:
    """(layers·heads, tokens) int8 after eviction step i, row = layer·H + head: NOT_YET (processed after the step),
    EVICTED, KEPT (qualified) or FILL (kept only to fill the layer's N)."""
    i = check_step(trace, i)
    step = trace.steps[i]
    out = np.full((trace.n_layers * trace.n_heads, trace.n_tokens), NOT_YET, np.int8)
    out[:, :step] = EVICTED
    for rec in trace.records[i]:
        for h in range(trace.n_heads):
            row = rec.layer * trace.n_heads + h
            out[row, rec.positions[h][rec.qualified[h]]] = KEPT
            out[row, rec.positions[h][rec.fill[h]]] = FILL
    return out


def cache_sizes(trace: Trace) -> pd.DataFrame:
    """DataFrame (layer, tokens, size): slots each layer holds as tokens are processed; at every step two rows
    (before and after eviction), so the curve is a sawtooth."""
    import pandas as pd

    rows = []
    for layer in range(trace.n_layers):
        rows.append({"layer": layer, "tokens": 0, "size": 0})
        last_step, last_size = 0, 0
        for step, recs in zip(trace.steps, trace.records, strict=True):
            rec = recs[layer]
            rows.append({"layer": layer, "tokens": step, "size": int(rec.positions.shape[-1])})
            last_step, last_size = step, int(rec.kept[0].sum())
            rows.append({"layer": layer, "tokens": step, "size": last_size})
        if trace.n_tokens > last_step:
            rows.append({"layer": layer, "tokens": trace.n_tokens, "size": last_size + trace.n_tokens - last_step})
    return pd.DataFrame(rows)


def _slot(rec: LayerStep, head: int, position: int) -> int | None:
    where = np.nonzero(rec.positions[head] == position)[0]
    return int(where[0]) if len(where) else None


def spectrogram(trace: Trace, layer: int, head: int, position: int) -> tuple[np.ndarray, np.ndarray]:
    """(times (n,), magnitudes (n, 17)): the STFT frames of token `position`'s attention series in (layer, head)
    over every step it was a candidate; time = the last query position of the frame. Empty when the layer's
    spectra were not kept (trace.spectra_layers) or the token never reached a step."""
    times, frames = [], []
    if layer not in trace.spectra_layers:
        return np.zeros(0, np.int64), np.zeros((0, N_FREQ), np.float32)
    n_frames = trace.n_up // HOP
    for recs in trace.records:
        rec = recs[layer]
        j = _slot(rec, head, position)
        if j is None or rec.spectra is None:
            continue
        for f in range(n_frames):
            times.append(rec.step - trace.n_up + HOP * f + HOP - 1)
            frames.append(rec.spectra[head, f, j].astype(np.float32))
    if not frames:
        return np.zeros(0, np.int64), np.zeros((0, N_FREQ), np.float32)
    return np.asarray(times), np.stack(frames)


def ema_history(trace: Trace, layer: int, head: int, position: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps (n,), raw EMA (n, 17), normalised x̂ (n, 17)) of token `position` in (layer, head) at every step it
    was a candidate (NAMM only: empty for the baselines)."""
    steps, raw, norm = [], [], []
    for recs in trace.records:
        rec = recs[layer]
        j = _slot(rec, head, position)
        if j is None or rec.normalised is None:
            continue
        steps.append(rec.step)
        norm.append(rec.normalised[head, j])
        raw.append(rec.ema[head, j] if rec.ema is not None else np.full(N_FREQ, np.nan, np.float32))
    if not steps:
        empty = np.zeros((0, N_FREQ), np.float32)
        return np.zeros(0, np.int64), empty, empty
    return np.asarray(steps), np.stack(raw), np.stack(norm)


def score_table(trace: Trace, i: int, layer: int | None = None) -> pd.DataFrame:
    """DataFrame (layer, head, position, score, kept, fill) of every candidate at step i (one layer or all);
    empty when the policy has no scores (full cache, recent window)."""
    import pandas as pd

    i = check_step(trace, i)
    frames = []
    for rec in trace.records[i]:
        if rec.scores is None or (layer is not None and rec.layer != layer):
            continue
        h, t = rec.scores.shape
        frames.append(pd.DataFrame({"layer": rec.layer, "head": np.repeat(np.arange(h), t),
                                    "position": rec.positions.reshape(-1), "score": rec.scores.reshape(-1),
                                    "kept": rec.kept.reshape(-1), "fill": rec.fill.reshape(-1)}))
    if not frames:
        return pd.DataFrame({c: [] for c in ("layer", "head", "position", "score", "kept", "fill")})
    return pd.concat(frames, ignore_index=True)


def last_scores(trace: Trace, i: int) -> np.ndarray:
    """(layers, heads, tokens) float: the last score each token got at or before step i (NaN: none)."""
    i = check_step(trace, i)
    out = np.full((trace.n_layers, trace.n_heads, trace.n_tokens), np.nan, np.float32)
    for recs in trace.records[: i + 1]:
        for rec in recs:
            if rec.scores is None:
                continue
            for h in range(trace.n_heads):
                out[rec.layer, h, rec.positions[h]] = rec.scores[h]
    return out


def text_tokens(trace: Trace, i: int, layer: int | None = None, head: int | None = None) -> pd.DataFrame:
    """DataFrame (position, piece, seen, prompt, kept, evicted, title) after step i: seen = processed by the
    step, kept = the fraction of the chosen rows (one layer/head, a layer's heads, or all) holding the token,
    evicted = seen and no chosen row holds it; title = the token's last scores per layer and head."""
    import pandas as pd

    codes = retention(trace, i).reshape(trace.n_layers, trace.n_heads, trace.n_tokens)
    chosen = codes[slice(None) if layer is None else [layer]][:, slice(None) if head is None else [head]]
    chosen = chosen.reshape(-1, trace.n_tokens)
    seen = chosen[0] != NOT_YET
    held = ((chosen == KEPT) | (chosen == FILL)).mean(0)
    scores = last_scores(trace, i)
    titles = []
    for p, piece in enumerate(trace.pieces):
        lines = [f"#{p} {piece!r}" + ("" if p < trace.n_prompt else " (generated)")]
        if not seen[p]:
            lines.append("not yet scored")
        for layer_ in range(trace.n_layers):
            cells = []
            for h in range(trace.n_heads):
                state = CODES[int(codes[layer_, h, p])]
                s = scores[layer_, h, p]
                cells.append(f"h{h} {'–' if np.isnan(s) else f'{s:+.3g}'} {state}")
            lines.append(f"L{layer_}: " + " · ".join(cells))
        titles.append("\n".join(lines))
    return pd.DataFrame({"position": np.arange(trace.n_tokens), "piece": trace.pieces, "seen": seen,
                         "prompt": np.arange(trace.n_tokens) < trace.n_prompt, "kept": held,
                         "evicted": seen & (held == 0), "title": titles})


def text_html(trace: Trace, i: int, layer: int | None = None, head: int | None = None) -> str:
    """The processed text as HTML after step i: evicted tokens struck through, partly kept ones shaded by the
    fraction of heads holding them, generated tokens underlined; hover a token for its scores per layer/head."""
    import html

    df = text_tokens(trace, i, layer, head)
    spans = []
    for row in df.itertuples():
        cls = ["tok"] + (["evicted"] if row.evicted else []) + ([] if row.prompt else ["gen"])
        cls += [] if row.seen else ["unseen"]
        partly = row.seen and not row.evicted and row.kept < 1
        style = f' style="background:rgba(240,166,58,{0.15 + 0.45 * (1 - row.kept):.2f})"' if partly else ""
        text = html.escape(row.piece).replace("\n", "↵<br>")
        spans.append(f'<span class="{" ".join(cls)}" data-pos="{row.position}" title="{html.escape(row.title)}"'
                     f"{style}>{text}</span>")
    return f'<div class="namm-text">{"".join(spans)}</div>'


TEXT_CSS = """
.namm-text { font-family: ui-monospace, monospace; font-size: 13px; line-height: 1.6; white-space: pre-wrap;
             word-break: break-word; }
.namm-text .tok { border-radius: 2px; }
.namm-text .tok:hover { outline: 1px solid #2f5d8a; }
.namm-text .evicted { text-decoration: line-through; color: #b03a2e; opacity: .75; }
.namm-text .unseen { color: #7a8290; }
.namm-text .gen { text-decoration-line: underline; text-decoration-style: dotted; }
.namm-text .gen.evicted { text-decoration-line: line-through underline; }
"""


def check_text_font(view: str, font: str | None) -> None:
    """The text view sets each token in its monospace slots (the page's HTML as its figure): no serif face keeps
    them, so --font serif is refused for it, before the model runs."""
    if view == "text" and font == "serif":
        raise ValueError("--font: the text view sets its tokens in a monospace face; leave --font out")


# ---- score vs cache size ----------------------------------------------------------------------------------------

@torch.inference_mode()
def agreement_sweep(model: PreTrainedModel, ids: list[int], methods: dict[str, Callable[[], EvictionPolicy]], *,
                    n_up: int, new_tokens: int = 16,
                    progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """DataFrame (method, label, kept, agreement): each method (label -> policy factory, "full" added) runs the
    prompt, then reads the full cache's greedy continuation (new_tokens) teacher-forced; agreement = fraction of
    its tokens the method predicts too (top-1), kept = attended slots when the answer starts ÷ prompt tokens
    (mean over layers and heads; tokens after the last step count as kept)."""
    import pandas as pd

    from workbench.namm.baselines import FullCache
    from workbench.namm.cache import EvictionCache, check_n_up
    from workbench.namm.driver import generate

    check_n_up(n_up)
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be ≥ 1, got {new_tokens}")
    prompt = torch.tensor([ids])
    with RUN_LOCK:
        ref = generate(model, prompt, FullCache(), n_up=n_up, max_new_tokens=new_tokens, record="none").tokens
    seq = torch.cat([prompt, ref[:, :-1]], dim=1)
    rows = []
    todo = {"full": FullCache, **methods}
    for k, (label, make) in enumerate(todo.items()):
        from workbench.namm.driver import forward

        policy = make()
        cache = EvictionCache(model.config, policy, n_up, record="none")
        with RUN_LOCK:
            first = forward(model, prompt, cache, last_only=True)[:, -1:]
            held = [float(v.sum(-1).float().mean()) for v in cache.valid if v is not None]
            kept = sum(held) / len(held) / len(ids)
            rest = forward(model, seq[:, len(ids):], cache) if seq.shape[1] > len(ids) else first[:, :0]
        pred = torch.cat([first, rest], dim=1).argmax(-1)
        rows.append({"method": policy.name, "label": label,
                     "kept": min(kept, 1.0), "agreement": float((pred == ref).float().mean())})
        if progress is not None:
            progress(k + 1, len(todo))
    return pd.DataFrame(rows)


def budget_methods(config, n_prompt: int, fractions=(0.25, 0.5, 0.75), n_up: int = 32) -> dict:
    """Recent-window and H2O factories at kept fractions of the prompt (the tokens after the last step count)."""
    out = {}
    for frac in fractions:
        budget = max(SINKS + 2, round(frac * n_prompt) - n_prompt % n_up)
        for kind in ("recent", "h2o"):
            out[f"{kind}@{frac:g}"] = (lambda k=kind, b=budget: make_policy(k, config, budget=b))
    return out
