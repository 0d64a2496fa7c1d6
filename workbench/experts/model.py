"""SVFModel: a Hugging Face causal LM whose MLP matrices can be re-weighted by SVF experts (spec §4).

    svf = SVFModel(model, tokenizer)          # any causal LM: the zoo's Llamas, SmolLM2, a local folder
    p = svf.init_params(seed=0)               # a fresh expert: {matrix name: p (r,)}, z = sigmoid(p) ≈ 0.525
    svf.apply(p)                              # compose W′ once and swap it into the modules: inference then
    svf.model.generate(...)                   #   costs exactly what the base model costs
    svf.apply_mixture([p1, p2], alpha)        # z′ = Σ α·p (raw, the reference's rule) composed once
    svf.reset()                               # the base weights, bit for bit
    p = {k: v.requires_grad_() for k, v in p.items()}  # training (ExpertTrainer does this): p is the leaf,
    out = svf.forward(p, input_ids=ids)       # the forward uses W′(z(p)) built with autograd, so
    out.logits.sum().backward()               #   gradients reach p (the module's own weights are untouched)

Which matrices: every 2-D parameter whose name contains "mlp" (the reference's rule: gate, up and down
projections in a Llama; biases and norms never). Their reduced SVDs are computed once, in float32 on the CPU
(the same factors whatever the device), and cached on disk as safetensors under
`<cache_dir>/svf/svf-<hash>.safetensors`, keyed by a SHA-256 of those matrices (names, shapes, float32
values): the same weights reuse the entry, any other model gets its own. `svd_count` says how many
matrices this instance had to decompose (0 when the cache held them all).

The wrapped model's own parameters are frozen (requires_grad False): SVF trains only p, and a frozen base
keeps backward passes from filling .grad on millions of weights nobody updates.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workbench.experts.mixing import RAW, DegenerateMixtureError, mix_params
from workbench.experts.svf import INIT_NOISE, INIT_VALUE, init_params, svf_compose, svf_decompose, z_from_params

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from transformers import PreTrainedTokenizerBase

CACHE_FORMAT = "workbench-svf/1"
EXPERT_FORMAT = "workbench-svf-expert/1"


def svf_matrix_names(model: torch.nn.Module) -> list[str]:
    """The parameters SVF adapts, in the model's order: 2-D, name containing "mlp", never a bias."""
    return [name for name, p in model.named_parameters()
            if "mlp" in name and p.ndim == 2 and not name.endswith("bias")]


def weights_key(weights: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of the matrices the SVDs are computed from (names, shapes, float32 values, in order)."""
    h = hashlib.sha256(CACHE_FORMAT.encode())
    for name, w in weights.items():
        h.update(f"{name}:{tuple(w.shape)};".encode())
        h.update(np.ascontiguousarray(w.detach().to("cpu", torch.float32).numpy()).data)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """`$WORKBENCH_CACHE/svf` (default ~/.cache/workbench/svf), beside the SmolLM2 cache."""
    from workbench.lm.models import cache_dir

    return cache_dir() / "svf"


def _read_cache(path: Path, weights: Mapping[str, torch.Tensor]) -> dict | None:
    """The cached factors when the file holds every matrix with the right shapes, else None (rebuilt)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            if (f.metadata() or {}).get("format") != CACHE_FORMAT:
                return None
            factors = {}
            for name, w in weights.items():
                out, inp = w.shape
                r = min(out, inp)
                U, S, Vh = (f.get_tensor(f"{name}.{part}") for part in ("U", "S", "Vh"))
                if tuple(U.shape) != (out, r) or tuple(S.shape) != (r,) or tuple(Vh.shape) != (r, inp):
                    return None
                factors[name] = (U, S, Vh)
            return factors
    except Exception:  # a missing, truncated or foreign file: decompose again and overwrite it
        return None


def _write_cache(path: Path, factors: dict) -> None:
    from safetensors.torch import save_file

    from workbench.atomic import atomic_write

    tensors = {f"{name}.{part}": t.contiguous() for name, f in factors.items()
               for part, t in zip(("U", "S", "Vh"), f, strict=True)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": CACHE_FORMAT}))
    except OSError as error:  # a read-only cache only costs the next load its SVDs
        warnings.warn(f"could not write the SVD cache {path} ({error}); the next load decomposes again",
                      stacklevel=3)


class SVFModel:
    """A causal LM plus the SVD factors of its MLP matrices; applies SVF experts and mixtures (see module doc)."""

    def __init__(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase | None = None, *,
                 max_mult: float = 1.0, rescale: bool = True, cache: bool = True,
                 cache_dir: str | Path | None = None):
        """model: any torch module with named parameters (a Hugging Face causal LM); tokenizer: kept for the
        trainers (optional). max_mult: z = sigmoid(p)·max_mult for single experts (1, the reference's).
        rescale: False selects the unscaled variant of W′ (the reference always rescales). cache: read and
        write the on-disk SVD cache in cache_dir (default `default_cache_dir()`)."""
        self.model, self.tokenizer = model, tokenizer
        self.max_mult, self.rescale = float(max_mult), bool(rescale)
        self.names = svf_matrix_names(model)
        if not self.names:
            raise ValueError(f"{type(model).__name__} has no 2-D MLP weight matrices (no parameter name contains "
                             "'mlp'), so SVF has nothing to adapt; give a transformer causal LM such as the zoo's "
                             "Llamas or SmolLM2")
        for p in model.parameters():
            p.requires_grad_(False)
        named = dict(model.named_parameters())
        self._modules_params = {name: named[name] for name in self.names}
        self._base = {name: p.detach().clone() for name, p in self._modules_params.items()}
        self.key = weights_key(self._base)
        self.cache_path = Path(cache_dir or default_cache_dir()) / f"svf-{self.key[:40]}.safetensors" if cache \
            else None
        factors = _read_cache(self.cache_path, self._base) if cache else None
        self.svd_count = 0
        if factors is None:
            factors = {}
            for name, w in self._base.items():
                factors[name] = svf_decompose(w.to("cpu"))
                self.svd_count += 1
            if cache:
                _write_cache(self.cache_path, factors)
        self.factors = {name: tuple(t.to(self._base[name].device) for t in f) for name, f in factors.items()}
        self.sizes = {name: int(f[1].shape[0]) for name, f in self.factors.items()}
        self.applied: str = "base"  # what the modules hold now: "base", "expert", "mixture" or "z"

    @classmethod
    def load(cls, name_or_path: str, *, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
             **kwargs: Any) -> SVFModel:
        """An SVFModel around `workbench.lm.models.load_model(name_or_path)` ('smollm2', a .gguf file, a model
        folder such as a zoo's), with its tokenizer."""
        from workbench.lm.models import load_model

        model, tok = load_model(name_or_path, dtype=dtype, device=device)
        return cls(model, tok, **kwargs)

    # --- experts ------------------------------------------------------------------------------------------

    @property
    def n_params(self) -> int:
        """Length of an expert: Σ min(out, in) over the adapted matrices."""
        return sum(self.sizes.values())

    @property
    def device(self) -> torch.device:
        """Where the factors (and the experts' vectors) live: the model's device."""
        return self.factors[self.names[0]][1].device

    @torch.no_grad()
    def summary(self, params: Mapping[str, torch.Tensor]) -> dict:
        """Mean and std of a single expert's z over every matrix (the training log's view of an expert)."""
        z = torch.cat([z_from_params(p, self.max_mult) for p in params.values()])
        return {"z_mean": float(z.mean()), "z_std": float(z.std())}

    def init_params(self, seed: int, value: float = INIT_VALUE, noise: float = INIT_NOISE) -> dict[str, torch.Tensor]:
        """A fresh expert p = value + noise·N(0, 1) (0.1 + 0.01·N: z ≈ 0.525), on the model's device."""
        fresh = init_params(self.sizes, seed, value, noise)
        return {name: p.to(self.factors[name][1].device) for name, p in fresh.items()}

    def check(self, vectors: Mapping[str, torch.Tensor], what: str = "expert") -> dict[str, torch.Tensor]:
        """The vectors as float32 tensors on the factors' devices, after one clear error for a vector set made
        for another model (a missing or extra matrix, a wrong length) or holding NaN / inf."""
        if not isinstance(vectors, Mapping):
            raise ValueError(f"the {what} must be a dict of matrix name -> vector, got {type(vectors).__name__}")
        missing = [n for n in self.names if n not in vectors]
        extra = [n for n in vectors if n not in self.sizes]
        if missing or extra:
            name = missing[0] if missing else extra[0]
            how = "lacks" if missing else "has a vector for"
            raise ValueError(f"the {what} {how} matrix {name!r}, which this model "
                             f"{'adapts' if missing else 'does not have'} ({len(missing)} missing, {len(extra)} "
                             "unexpected): it was made for another model; train or load one for this model")
        out = {}
        for name in self.names:
            v = torch.as_tensor(vectors[name])
            if v.ndim != 1 or v.shape[0] != self.sizes[name]:
                raise ValueError(f"the {what}'s vector for matrix {name!r} has shape {tuple(v.shape)}, this model "
                                 f"needs ({self.sizes[name]},) (one entry per singular value): it was made for "
                                 "another model")
            if not torch.isfinite(v).all():
                raise ValueError(f"the {what}'s vector for matrix {name!r} has NaN or inf entries")
            out[name] = v.to(self.factors[name][1].device, torch.float32)
        return out

    def z_of(self, params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A single expert's z: sigmoid(p)·max_mult per matrix (differentiable in p)."""
        return {name: z_from_params(p, self.max_mult) for name, p in self.check(params).items()}

    def mixture_z(self, experts: Sequence[Mapping[str, torch.Tensor]], alpha: torch.Tensor | ArrayLike,
                  normalize: bool = False,
                  variant: str = RAW) -> dict[str, torch.Tensor]:
        """z′ of a mixture of experts (mix_params over this model's matrices). experts: K experts' raw
        parameters p (matrix name -> vector); alpha: (K, M) with a column per matrix in self.names, or (K, 1) / (K,),
        one coefficient per expert (tensors stay differentiable); normalize: each column of α divided by its sum
        first; variant: "raw" (Σ α·p, the reference's) or "sigmoid" (Σ α·sigmoid(p)·max_mult)."""
        checked = [self.check(e, what=f"expert {k}") for k, e in enumerate(experts)]
        return mix_params(checked, alpha, self.names, normalize, variant=variant, max_mult=self.max_mult)

    def compose(self, z: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """W′ for every matrix (float32, differentiable in z); one error for a z whose rescale divides by 0."""
        z = self.check(z, what="z")
        out = {}
        for name in self.names:
            U, S, Vh = self.factors[name]
            if self.rescale and float((S * z[name].detach()).sum()) == 0.0:
                raise DegenerateMixtureError(f"z for matrix {name!r} gives Σ(σ⊙z) = 0, so the rescale Σσ/Σ(σ⊙z) is "
                                             "undefined; use another z (a mixture with all coefficients 0?)")
            out[name] = svf_compose(U, S, Vh, z[name], rescale=self.rescale)
        return out

    # --- inference: compose once, swap into the modules ---------------------------------------------------

    @torch.no_grad()
    def apply_z(self, z: Mapping[str, torch.Tensor], _what: str = "z") -> None:
        """Compose W′(z) for every matrix and copy it into the model (in the parameter's dtype and device).
        Everything is composed before anything is copied, so an error leaves the model as it was."""
        composed = self.compose(z)
        for name, W in composed.items():
            self._modules_params[name].copy_(W)
        self.applied = _what

    def apply(self, expert: Mapping[str, torch.Tensor] | None) -> None:
        """Swap in one expert (raw parameters p; z = sigmoid(p)·max_mult), or the base weights for None."""
        if expert is None:
            self.reset()
        else:
            self.apply_z(self.z_of(expert), _what="expert")

    def apply_mixture(self, experts: Sequence[Mapping[str, torch.Tensor]], alpha: torch.Tensor | ArrayLike,
                      normalize: bool = False,
                      variant: str = RAW) -> None:
        """Swap in a mixture: z′ = Σ_k α_k·p_k (variant "raw", the reference's: no sigmoid) or Σ_k α_k·sigmoid(p_k)
        (variant "sigmoid"), composed once; experts, alpha, normalize and variant as mixture_z takes them."""
        self.apply_z(self.mixture_z(experts, alpha, normalize, variant), _what="mixture")

    @torch.no_grad()
    def reset(self) -> None:
        """The base weights back in the modules, exactly (copied from the originals, not recomposed)."""
        for name, w in self._base.items():
            self._modules_params[name].copy_(w)
        self.applied = "base"

    # --- training: the forward through W′(z(p)) -------------------------------------------------------------

    def forward_z(self, z: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """model(*args, **kwargs) with every adapted matrix replaced by W′(z), built with autograd, so gradients
        reach z (and whatever z came from). The modules' own weights are neither used nor changed."""
        from torch.func import functional_call

        overrides = {name: W.to(self._base[name].dtype) for name, W in self.compose(z).items()}
        return functional_call(self.model, overrides, args, kwargs, strict=False)

    def forward(self, params: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """The differentiable forward of a single expert (z = sigmoid(p)·max_mult): gradients reach p."""
        return self.forward_z(self.z_of(params), *args, **kwargs)


def save_expert(path: str | Path, params: Mapping[str, torch.Tensor], meta: dict | None = None) -> Path:
    """Write an expert (matrix name -> p) as safetensors, atomically, with JSON-able `meta` (task, model key,
    seed, validation accuracy, ...) in the file's header. No pickle."""
    from workbench.atomic import save_safetensors

    tensors = {name: torch.as_tensor(p).detach().to("cpu", torch.float32).contiguous() for name, p in params.items()}
    header = {"format": EXPERT_FORMAT, "meta": json.dumps(meta or {}, sort_keys=True)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_safetensors(tensors, path, header)


def load_expert(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(params, meta) of an expert written by save_expert (CPU float32 tensors, in the file's order)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            if header.get("format") != EXPERT_FORMAT:
                raise ValueError(f"format {header.get('format')!r}")
            params = {name: f.get_tensor(name) for name in f.keys()}
        return params, json.loads(header.get("meta", "{}"))
    except Exception as error:
        raise ValueError(f"{path} is not an SVF expert file ({error}); write one with "
                         "workbench.experts.save_expert") from None
