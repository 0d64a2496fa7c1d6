"""Tensor-level merge methods with mergekit's parameter names, defaults and numerics (spec §1, PS merging).

One entry point, `merge_tensors(tensors, method, parameters=..., base_index=...)`, merges the inputs that
contribute to one output tensor. Conventions follow mergekit 0.1.5 (checked against it in the tests):

- per-input parameters (`weight`, `density`) are a scalar (broadcast) or a sequence in input order; for the
  base-aware methods (task_arithmetic, ties, dare_*) the sequence EXCLUDES the base. linear ignores the base
  (like mergekit), so its `weight` list covers every input.
- shared parameters: `normalize`, `rescale`, `lambda`, `int8_mask` (accepted; only changes mergekit's mask
  dtype, so it is a no-op here), `t` (slerp) and our `rescale_norm`.
- `weight` (linear and task-vector methods) and `t` (slerp) have no default, as in mergekit.
- defaults: linear normalize=True; task_arithmetic normalize=False; ties normalize=True, rescale=False;
  dare_linear / dare_ties normalize=False, rescale=True; lambda=1, density=1.
- DARE rescaling (when `rescale` is true): `rescale_norm="l1"` (default, mergekit: multiply survivors by
  ‖τ‖₁/‖mask⊙τ‖₁, skipped when either norm < 1e-7) or `"inverse"` (textbook DARE: multiply by 1/density).
  With ties, `rescale=True` applies the same rescaling after the magnitude trim, again like mergekit.

Work happens in fp32 (fp64 when an input is fp64) and the result has the promoted input dtype; mergekit does
the task-vector methods in the input dtype, so bf16/fp16 results can differ from it by rounding.
Randomness (DARE) comes only from the `generator` argument, a CPU torch.Generator: DARE's keep masks are drawn
on the CPU and moved to the tensors' device, so a merge on a GPU keeps exactly the elements a CPU merge keeps.
Everything else runs where the input tensors are (all on one device).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

#: torch adds up to this many entries of a CPU tensor on one thread; a longer sum is cut into its threads' parts,
#: so its last bits follow the thread count (at::internal::GRAIN_SIZE)
_SERIAL_SUM = 32768
#: thread_free_sum's pieces: the copies a piece needs (|x|, a half tensor as float64) stay at 32 MB at most
_SUM_PIECE = 1 << 22


def thread_free_sum(x: torch.Tensor, l1: bool = False) -> torch.Tensor:
    """Σ x (l1: Σ |x|, the L1 norm), a 0-d tensor of x's dtype whose bits do not depend on torch's thread count, so
    a merge is the same on 1 thread, 2, a Dask worker's 1 or another machine's cores. A CPU sum of more than
    _SERIAL_SUM entries goes to numpy (pairwise in float64, on one thread); a shorter one, or one on a GPU, is
    torch's as ever (the same bits as before this function)."""
    if x.device.type != "cpu" or x.numel() <= _SERIAL_SUM:
        return torch.linalg.vector_norm(x, 1) if l1 else x.sum()
    flat = x.detach().contiguous().reshape(-1)
    total = 0.0
    # in pieces of _SUM_PIECE entries, added in order: a 7B model's embedding made whole copies of gigabytes
    for start in range(0, flat.numel(), _SUM_PIECE):
        piece = flat[start:start + _SUM_PIECE]
        a = (piece if piece.dtype in (torch.float32, torch.float64) else piece.double()).numpy()
        total += float(np.abs(a).sum(dtype=np.float64) if l1 else a.sum(dtype=np.float64))
    return torch.tensor(total, dtype=x.dtype)


METHODS = ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp")

class TaskVectorMethod(NamedTuple):
    """How a method of the task-vector family treats each τ (mergekit's defaults for its flags)."""

    sparsify: str | None      # "magnitude" (TIES trim), "random" (DARE drop) or None: keep every entry
    consensus: bool           # TIES sign election
    normalize: bool           # default of `normalize`
    rescale: bool             # default of `rescale`


TASK_VECTOR_METHODS = {
    "task_arithmetic": TaskVectorMethod(None, False, False, False),
    "ties": TaskVectorMethod("magnitude", True, True, False),
    "dare_linear": TaskVectorMethod("random", False, False, True),
    "dare_ties": TaskVectorMethod("random", True, False, True),
}
# parameter names each method accepts (mergekit names plus our rescale_norm)
PARAMETERS = {
    "linear": {"weight", "normalize"},
    "slerp": {"t"},
    **{m: {"weight", "density", "normalize", "rescale", "lambda", "int8_mask", "rescale_norm"}
       for m in TASK_VECTOR_METHODS},
}
RESCALE_NORMS = ("l1", "inverse")
#: every parameter some method reads (passthrough's scale included): keys of other methods are ignored, as
#: mergekit's planner ignores them, but a key no method knows is a typo (a "densty" merged unsparsified)
KNOWN_PARAMETERS = frozenset(set().union(*PARAMETERS.values()) | {"scale"})


def check_parameter_names(params: Mapping[str, Any] | None, where: str) -> None:
    """One ValueError naming the keys of `params` that no merge method reads (`where`: the scope, for the
    message)."""
    typos = sorted(set(params or {}) - KNOWN_PARAMETERS)
    if typos:
        raise ValueError(f"{where} has unknown parameter(s) {', '.join(map(repr, typos))}; merge methods take "
                         f"{', '.join(sorted(KNOWN_PARAMETERS))}")


def merge_tensors(
    tensors: Sequence[torch.Tensor],
    method: str,
    *,
    parameters: Mapping[str, Any] | None = None,
    base_index: int | None = None,
    generator: torch.Generator | None = None,
    name: str | None = None,
) -> torch.Tensor:
    """Merge the inputs of one output tensor; `name` only makes error messages point at the tensor.

    generator: the random draws of DARE's masks (dare_linear, dare_ties). None draws from torch's global
    generator, so two calls give other masks: pass a seeded torch.Generator for the same masks every call
    (merge_state_dicts does, one per tensor from its seed and the tensor's name).

    Args:
        tensors: the inputs, floating point, of one shape, on one device.
        method: one of METHODS (passthrough is merge_state_dicts' own).
        parameters: the method's parameters (module doc), already resolved to scalars: weight / density a scalar
            or one value per input (for the base-aware methods, per input other than the base).
        base_index: the base's position in `tensors`: needed by task_arithmetic, ties, dare_* and slerp (the t = 0
            end); linear ignores it.
        generator, name: as above.

    Returns:
        The merged tensor, of the inputs' promoted dtype, on their device.

    Raises:
        ValueError: an unknown method or parameter, inputs that are not float tensors of one shape on one device,
            a missing base or weight (or slerp's t), a base_index out of range, slerp with other than 2 inputs, a
            density outside (0, 1], a value that is not a finite number, an unknown rescale_norm.
    """
    where = f" for tensor {name!r}" if name else ""
    params = dict(parameters or {})
    tensors = list(tensors)
    _check_inputs(tensors, method, params, base_index, where)
    out_dtype = tensors[0].dtype
    for t in tensors[1:]:
        out_dtype = torch.promote_types(out_dtype, t.dtype)
    work = torch.float64 if out_dtype == torch.float64 else torch.float32

    if method == "linear":
        weights = _per_input(params, "weight", len(tensors), where, required=True)
        result = _linear(tensors, weights, _flag(params, "normalize", True, where), work, where)
    elif method == "slerp":
        if "t" not in params:
            raise ValueError(f"slerp needs parameter 't' (0 = base, 1 = the other model){where}")
        t = _finite(params["t"], "t", where)
        result = slerp(t, tensors[base_index], tensors[1 - base_index], work)
    else:
        sparsify, consensus, normalize_default, rescale_default = TASK_VECTOR_METHODS[method]
        n = len(tensors) - 1
        weights = _per_input(params, "weight", n, where, required=True)
        densities = _per_input(params, "density", n, where, default=1.0)
        for d in densities:
            if not 0.0 < d <= 1.0:
                raise ValueError(f"density must be in (0, 1], got {d}{where}")
        rescale_norm = params.get("rescale_norm", "l1")
        if rescale_norm not in RESCALE_NORMS:
            raise ValueError(f"rescale_norm must be one of {RESCALE_NORMS}, got {rescale_norm!r}{where}")
        base = tensors[base_index]
        others = [t for i, t in enumerate(tensors) if i != base_index]
        result = _task_vector_merge(
            base,
            others,
            weights,
            densities,
            sparsify=sparsify,
            consensus=consensus,
            normalize=_flag(params, "normalize", normalize_default, where),
            rescale=_flag(params, "rescale", rescale_default, where),
            rescale_norm=rescale_norm,
            lam=_finite(params.get("lambda", 1.0), "lambda", where),
            generator=generator,
            work=work,
        )
    return result.to(out_dtype)


# ---------------------------------------------------------------------------------------------- validation


def _check_inputs(tensors: list, method: str, params: dict, base_index: int | None, where: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown merge method {method!r}; choose one of {', '.join(METHODS)}")
    if not tensors:
        raise ValueError(f"no tensors to merge{where}")
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        raise ValueError(f"merge inputs must be torch tensors{where}")
    shapes = [tuple(t.shape) for t in tensors]
    if len(set(shapes)) > 1:
        raise ValueError(f"tensor shapes differ{where}: {shapes}")
    if not all(t.is_floating_point() for t in tensors):
        raise ValueError(f"only floating-point tensors can be merged{where}: {[t.dtype for t in tensors]}")
    if len({t.device for t in tensors}) > 1:
        raise ValueError(f"inputs must be on one device{where}")
    unknown = set(params) - PARAMETERS[method]
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {sorted(unknown)} for {method}{where}; allowed: {sorted(PARAMETERS[method])}"
        )
    if base_index is not None and (isinstance(base_index, bool) or not isinstance(base_index, numbers.Integral)):
        raise ValueError(f"base_index must be a whole number (the base's position in the inputs), got {base_index!r}")
    if base_index is not None and not 0 <= base_index < len(tensors):
        raise ValueError(f"base_index {base_index} out of range for {len(tensors)} inputs{where}")
    if method in TASK_VECTOR_METHODS and base_index is None:
        raise ValueError(f"{method} needs a base model (base_index / base){where}")
    if method == "slerp":
        if base_index is None:
            raise ValueError(f"slerp needs a base model (base_index / base): it is the t=0 end{where}")
        if len(tensors) != 2:
            raise ValueError(f"slerp merges exactly 2 inputs (a base and one other), got {len(tensors)}{where}")


def _finite(value: Any, key: str, where: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"parameter {key!r} must be a number, got {value!r}{where}") from None
    if not math.isfinite(x):
        raise ValueError(f"parameter {key!r} must be finite, got {value!r}{where}")
    return x


def _flag(params: dict, key: str, default: bool, where: str) -> bool:
    value = params.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"parameter {key!r} must be true or false, got {value!r}{where}")


def _per_input(
    params: dict, key: str, n: int, where: str, *, required: bool = False, default: float = 1.0
) -> list[float]:
    """A scalar broadcasts; a sequence must have one value per (non-base) input, in input order."""
    if key not in params:
        if required:
            raise ValueError(f"missing parameter {key!r} (a number or a list of {n}){where}")
        return [default] * n
    value = params[key]
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if len(value) != n:
            raise ValueError(f"parameter {key!r} needs {n} values (one per non-base input), got {len(value)}{where}")
        return [_finite(v, key, where) for v in value]
    return [_finite(value, key, where)] * n


# ---------------------------------------------------------------------------------------------- kernels


def _linear(tensors: list, weights: list[float], normalize: bool, work: torch.dtype, where: str) -> torch.Tensor:
    result = torch.zeros(tensors[0].shape, dtype=work, device=tensors[0].device)
    for t, w in zip(tensors, weights, strict=True):
        result.add_(t.to(work), alpha=w)
    if normalize:
        total = sum(weights)
        if total == 0:
            raise ValueError(f"linear weights sum to 0, cannot normalize; set normalize: false{where}")
        result.div_(total)
    return result


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor, work: torch.dtype = torch.float32) -> torch.Tensor:
    """Spherical interpolation of the whole flattened tensors (t=0 gives v0); the angle comes from the
    normalised vectors, the result combines the raw ones; nearly (anti)colinear pairs fall back to lerp."""
    a = v0.reshape(-1).to(work)
    b = v1.reshape(-1).to(work)
    if a.numel() == 0:
        return v0.to(work)
    eps, dot_threshold = 1e-8, 0.9995
    # whole-tensor sums thread-free (thread_free_sum): torch.dot (MKL) split a long dot among torch's threads
    na, nb = thread_free_sum(a * a).sqrt(), thread_free_sum(b * b).sqrt()
    na = na if na > eps else torch.ones_like(na)  # a zero vector gets norm 1, as mergekit does
    nb = nb if nb > eps else torch.ones_like(nb)
    dot = float(thread_free_sum((a / na) * (b / nb)).clamp(-1, 1))
    if abs(dot) > dot_threshold:
        ca, cb = 1.0 - t, t
    else:
        theta = math.acos(dot)
        s = math.sin(theta)
        ca, cb = math.sin((1 - t) * theta) / s, math.sin(t * theta) / s
    return torch.add(a * ca, b, alpha=cb).reshape(v0.shape)


def _magnitude_trim_(delta: torch.Tensor, density: float, rescale: bool, rescale_norm: str = "l1",
                     ascending: torch.Tensor | None = None) -> None:
    """Zero all but the top-k |delta| entries in place, k = max(1, ⌊density·n⌋) as in mergekit.
    A k-th value threshold (O(n) selection) replaces mergekit's full argsort. Magnitudes tied at the threshold
    are common (task vectors of bf16 checkpoints are quantised: keeping every tie kept 37.7 % at density 0.3),
    so exactly k are kept: all above the threshold, then the ties in index order (mergekit's argsort keeps an
    arbitrary k among them). `ascending`, when given, is |delta| sorted (a MagnitudeCache's): the threshold is
    then read from it instead of selected again."""
    flat = delta.reshape(-1)
    n = flat.numel()
    k = max(1, int(density * n))
    if k >= n:
        return
    mag = flat.abs()
    thr = ascending[n - k] if ascending is not None else _kth_largest(mag, k)
    keep = mag > thr
    short = k - int(keep.sum())
    if short > 0:
        keep[(mag == thr).nonzero().squeeze(1)[:short]] = True
    if rescale and rescale_norm == "inverse":  # the textbook 1/density, as DARE's (it was ignored: L1 ran)
        flat.mul_(keep).mul_(1.0 / density)
    elif rescale:
        before = thread_free_sum(mag)
        after = thread_free_sum(mag.mul_(keep))
        flat.mul_(keep)
        _l1_rescale_(flat, before, after)
    else:
        flat.mul_(keep)


def _kth_largest(mag: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest of a flat non-negative tensor. Large float32 tensors take a one-pass radix step first:
    the bit patterns of non-negative floats sort like the floats, so a histogram of their top 16 bits finds
    the bucket that holds the k-th value, and kthvalue runs on that bucket only (2-3x faster at 28 M entries).
    """
    n = mag.numel()
    if mag.dtype != torch.float32 or n < (1 << 20):
        return torch.kthvalue(mag, n - k + 1).values
    high = mag.view(torch.int32) >> 16
    at_or_above = torch.bincount(high.long(), minlength=1 << 15).flip(0).cumsum(0).flip(0)
    bucket = int((at_or_above >= k).nonzero().max())
    above = int(at_or_above[bucket + 1]) if bucket + 1 < len(at_or_above) else 0
    candidates = mag[high == bucket]
    return torch.kthvalue(candidates, candidates.numel() - (k - above) + 1).values


class MagnitudeCache:
    """Sorted |τ| of the task vectors TIES trims, kept to be read again. An evolution merges the same source
    tensors once per candidate with other densities; selecting each k-th largest |τ| anew was about a sixth of a
    candidate's merge. With a cache the first merge sorts each τ's magnitudes once (float32: a copy of the
    source models' size, up to `budget_bytes`; tensors beyond it are selected as without a cache) and later ones
    read the threshold from the sorted copy: the same threshold, so the same merge, bit for bit.

    Use it around merges with `with magnitude_cache(cache): ...` of inputs that stay the same tensors (an
    evolution's Context's, on the merge's device: inputs copied there anew for each merge would only fill it). An
    entry is found again by its tensors' storage, offset, shape, strides, dtype, device and version (bumped by
    torch's in-place operations; writes through `.data` or a NumPy array sharing the memory are not seen), and it
    holds the tensors themselves, so their memory cannot be reused by other tensors while the entry lives.
    Inference tensors (made under torch.inference_mode) have no version: they are not cached.
    """

    def __init__(self, budget_bytes: int):
        self.budget_bytes = int(budget_bytes)
        self.used_bytes = 0
        self._entries: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def ascending(self, source: torch.Tensor, base: torch.Tensor, delta: torch.Tensor) -> torch.Tensor | None:
        """|delta| (delta = source − base in the work dtype) flattened and sorted ascending, or None when it does
        not fit in the budget."""
        if source.is_inference() or base.is_inference():
            return None
        key = (_tensor_key(source), _tensor_key(base), delta.dtype)
        hit = self._entries.get(key)
        if hit is not None:
            return hit[0]
        size = delta.numel() * delta.element_size()
        if self.used_bytes + size > self.budget_bytes:
            return None
        ascending = delta.reshape(-1).abs().sort().values
        self._entries[key] = (ascending, source, base)
        self.used_bytes += size
        return ascending


def _tensor_key(t: torch.Tensor) -> tuple:
    return (t.device, t.dtype, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()),
            t._version)


_MAGNITUDE_CACHE: contextvars.ContextVar[MagnitudeCache | None] = contextvars.ContextVar("magnitude_cache",
                                                                                          default=None)


@contextlib.contextmanager
def magnitude_cache(cache: MagnitudeCache | None) -> Iterator[MagnitudeCache | None]:
    """Merges inside the block read TIES thresholds from `cache` (None: no cache)."""
    token = _MAGNITUDE_CACHE.set(cache)
    try:
        yield cache
    finally:
        _MAGNITUDE_CACHE.reset(token)


def _l1_rescale_(x: torch.Tensor, before: torch.Tensor, after: torch.Tensor, eps: float = 1e-7) -> None:
    if before >= eps and after >= eps:  # mergekit leaves tiny tensors unscaled
        x.mul_(before / after)


def dare_keep_mask(delta: torch.Tensor, density: float, generator: torch.Generator | None) -> torch.Tensor:
    """The entries of `delta` DARE keeps (bool, on delta's device): each with probability `density`, drawn on the
    CPU from `generator` whatever delta's device (same seed, same mask everywhere). The one draw of the merge
    (_dare_drop_) and of the views that must show its masks (analysis: kept fraction, sign conflicts)."""
    return (torch.rand(delta.shape, generator=generator, dtype=delta.dtype) < density).to(delta.device)


def _dare_drop_(
    delta: torch.Tensor, density: float, rescale: bool, rescale_norm: str, generator: torch.Generator | None
) -> None:
    """Keep each entry with probability `density` (in place) and rescale the survivors. The mask is drawn on
    the CPU (from `generator`, else torch's global CPU generator) whatever delta's device: same seed, same
    kept elements on every device."""
    if density >= 1:
        return
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"DARE draws its masks with a CPU torch.Generator (device-independent masks); got one on "
                         f"{generator.device}: use torch.Generator() or workbench.merge.state.tensor_generator")
    before = thread_free_sum(delta, l1=True) if rescale and rescale_norm == "l1" else None
    keep = dare_keep_mask(delta, density, generator)
    delta.mul_(keep)
    if not rescale:
        return
    if rescale_norm == "inverse":
        delta.mul_(1.0 / density)
    else:
        _l1_rescale_(delta, before, thread_free_sum(delta, l1=True))


def _task_vector_merge(
    base: torch.Tensor,
    others: list,
    weights: list[float],
    densities: list[float],
    *,
    sparsify: str | None,
    consensus: bool,
    normalize: bool,
    rescale: bool,
    rescale_norm: str,
    lam: float,
    generator: torch.Generator | None,
    work: torch.dtype,
) -> torch.Tensor:
    """θ0 + λ·Δ with Δ = Σ wn·τ̃n (optionally sign-elected, optionally normalised by the agreeing weights)."""
    b = base.to(work)
    if not others:
        return b.clone()
    # one buffer holds every weighted, sparsified task vector; everything after it is in place
    deltas = torch.empty((len(others), *b.shape), dtype=work, device=b.device)
    for i, (x, w, d) in enumerate(zip(others, weights, densities, strict=True)):
        di = deltas[i]
        torch.sub(x.to(work), b, out=di)
        if sparsify == "magnitude" and d < 1:
            cache = _MAGNITUDE_CACHE.get()
            ascending = cache.ascending(x, base, di) if cache is not None else None
            _magnitude_trim_(di, d, rescale, rescale_norm, ascending)
        elif sparsify == "random":
            _dare_drop_(di, d, rescale, rescale_norm, generator)
        if w != 1:
            di.mul_(w)

    if not consensus:
        mixed = deltas.sum(0)
        divisor = sum(weights)
        if normalize and abs(divisor) >= 1e-8:  # mergekit treats |Σw| < 1e-8 as 1
            mixed.div_(divisor)
    else:
        # Elected sign s = sign(Σ wn·τ̃n), + on ties. Entries agreeing with s (nonzero, same sign) sum to the
        # positive parts where s = +, else to the negative parts; no n-sized mask tensor is needed.
        total = deltas.sum(0)
        positive = total >= 0
        pos_sum = torch.zeros_like(total)
        scratch = torch.empty_like(total)
        for di in deltas:
            pos_sum.add_(torch.clamp(di, min=0, out=scratch))
        mixed = torch.where(positive, pos_sum, total.sub_(pos_sum))
        if normalize:
            # divisor = Σ wn over the agreeing inputs (0 → 1, as mergekit)
            wpos = torch.zeros_like(total)
            wneg = torch.zeros_like(total)
            for di, w in zip(deltas, weights, strict=True):
                wpos.add_(torch.gt(di, 0, out=scratch), alpha=w)
                wneg.add_(torch.lt(di, 0, out=scratch), alpha=w)
            divisor = torch.where(positive, wpos, wneg)
            divisor.masked_fill_(divisor == 0, 1)
            mixed.div_(divisor)
    del deltas
    if lam != 1:
        mixed.mul_(lam)
    return mixed.add_(b)
