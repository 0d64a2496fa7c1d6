"""Whole-model merging: mergekit-style parameter resolution (scalars, layer gradients, name filters) per tensor.

A parameter value follows mergekit's YAML semantics (mergekit.config.evaluate_setting):
- a scalar;
- a list of scalars = a gradient over layers: with s = t·(len−1), i0 = ⌊s⌋, i1 = min(i0+1, len−1), the value is
  (1−(s−i0))·v[i0] + (s−i0)·v[i1]; booleans and strings pick v[⌊s⌋] instead of interpolating;
- a {filter, value} mapping or a list of them: the first entry whose filter is a substring of the tensor name
  (or has no filter / filter "*") gives the value (itself a scalar or gradient); no match = not set here.
t is layer/(num_layers−1) for tensors named `...layers.{i}...` (t = 1 when there is a single layer, as mergekit);
every other tensor (embed_tokens, norm, lm_head) gets t = 0, i.e. the FIRST gradient point, because mergekit
plans those weights with t = 0. Precedence: model parameters > global parameters, and a level whose setting
resolves to nothing (no filter matched) falls through to the next one, exactly like mergekit's resolver.
Per-input parameters (weight, density, passthrough's scale) come from the model level first; shared ones
(normalize, rescale, lambda, t, ...) only from the global level, so shared keys in model_parameters are ignored
(mergekit does the same).

Devices: merge_state_dicts merges each tensor on `device` (default: workbench.kernels.device's choice, the GPU
when torch sees one) and hands the result back on the device its inputs came from (CPU state dicts in, CPU
tensors out). DARE masks come from CPU generators (tensor_generator), identical on every device.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from workbench.checks import check_seed
from workbench.kernels.device import resolve_device
from workbench.merge.methods import METHODS, PARAMETERS, check_parameter_names, merge_tensors

Settings = Mapping[str, Any] | None
_BOOLS = ("normalize", "rescale", "int8_mask")
_STRINGS = ("rescale_norm",)
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_index(name: str) -> int | None:
    """The i of `layers.{i}.` in a tensor name, None for non-layer tensors."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def num_layers_of(names: Sequence[str]) -> int:
    """1 + the largest layer index among the names (0 when there are no layer tensors)."""
    return 1 + max((i for i in map(layer_index, names) if i is not None), default=-1)


def gradient_t(name: str, num_layers: int) -> float:
    """The gradient position of a tensor: layer/(num_layers−1), 1 for a single layer, 0 for non-layer tensors."""
    i = layer_index(name)
    if i is None:
        return 0.0
    return i / (num_layers - 1) if num_layers > 1 else 1.0


def _scalar(key: str, value: Any) -> Any:
    if key in _BOOLS:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        raise ValueError(f"parameter {key!r} must be true or false, got {value!r}")
    if key in _STRINGS:
        return str(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"parameter {key!r} must be a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"parameter {key!r} must be a number, got {value!r}") from None


def evaluate_setting(key: str, setting: Any, tensor_name: str, t: float) -> Any:
    """The value of one parameter setting for one tensor (None when no filter matches)."""
    if isinstance(setting, Mapping):  # a single {filter, value}
        setting = [setting]
    if isinstance(setting, (bool, int, float, str)):
        return _scalar(key, setting)
    if isinstance(setting, Sequence):
        if not setting:
            return None
        if all(isinstance(v, (bool, int, float, str)) for v in setting):
            values = [_scalar(key, v) for v in setting]
            s = t * (len(values) - 1)
            i0 = int(s)
            if not all(isinstance(v, float) for v in values):
                return values[i0]
            i1 = min(len(values) - 1, i0 + 1)
            frac = s - i0
            return (1 - frac) * values[i0] + frac * values[i1]
        for cond in setting:
            if not isinstance(cond, Mapping) or "value" not in cond:
                raise ValueError(f"parameter {key!r}: a filtered entry needs 'value' (and optional 'filter'): {cond!r}")
            f = cond.get("filter")
            if f is None or f == "*" or (tensor_name and f in tensor_name):
                return evaluate_setting(key, cond["value"], tensor_name, t)
        return None
    raise ValueError(f"parameter {key!r}: unexpected setting {setting!r}")


def resolve(key: str, scopes: Sequence[Settings], tensor_name: str, t: float) -> Any:
    """First level (highest precedence first) whose setting for key resolves to a value, else None."""
    for scope in scopes:
        if scope is not None and key in scope:
            value = evaluate_setting(key, scope[key], tensor_name, t)
            if value is not None:
                return value
    return None


def tensor_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator seeded from (seed, tensor name), so DARE masks depend neither on the merge order nor on
    the device the merge runs on (the masks are drawn on the CPU and moved)."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def merge_one(
    tensors: Mapping[str, torch.Tensor],
    method: str,
    *,
    base: str | None,
    name: str,
    t: float,
    shared_scopes: Sequence[Settings],
    model_scopes: Mapping[str, Sequence[Settings]],
    seed: int = 0,
) -> torch.Tensor:
    """Merge one output tensor from {model: tensor}, resolving parameters at gradient position t, on the
    tensors' device (they must share one)."""
    models = list(tensors)
    shapes = {m: tuple(x.shape) for m, x in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shape mismatch for tensor {name!r}: {shapes}")
    first = tensors[models[0]]
    if not all(x.is_floating_point() for x in tensors.values()):
        if any(x.dtype != first.dtype or not torch.equal(x, first) for x in tensors.values()):
            raise ValueError(f"non-float tensor {name!r} differs between models {models}; cannot merge it")
        return first.clone()
    if method == "passthrough":
        if len(models) != 1:
            raise ValueError(f"passthrough takes exactly one source per tensor, got {models} for {name!r}")
        scale = resolve("scale", model_scopes.get(models[0], shared_scopes), name, t)
        return first.clone() if scale is None else first * scale

    # only the keys the method knows are resolved; others in a recipe are ignored, as mergekit's planner does
    allowed = PARAMETERS[method]
    params: dict[str, Any] = {}
    for key in sorted(allowed - {"weight", "density"}):
        value = resolve(key, shared_scopes, name, t)
        if value is not None:
            params[key] = value
    per_input_models = models if method == "linear" else [m for m in models if m != base]
    for key in sorted(allowed & {"weight", "density"}):
        values = [resolve(key, model_scopes.get(m, shared_scopes), name, t) for m in per_input_models]
        if key == "density":
            values = [1.0 if v is None else v for v in values]  # mergekit's default density
        missing = [m for m, v in zip(per_input_models, values, strict=True) if v is None]
        if missing:
            raise ValueError(f"missing parameter {key!r} for model(s) {missing} at tensor {name!r}")
        params[key] = values
    base_index = models.index(base) if base is not None and method != "linear" else None
    generator = tensor_generator(seed, name) if method.startswith("dare") else None
    return merge_tensors(
        [tensors[m] for m in models], method, parameters=params, base_index=base_index, generator=generator, name=name
    )


def check_models(models: Mapping[str, Mapping[str, torch.Tensor]]) -> list[str]:
    """The common tensor names (first model's order); a clear error if the key sets differ."""
    if not models:
        raise ValueError("no models to merge")
    names = list(next(iter(models.values())))
    union = set().union(*(set(sd) for sd in models.values()))
    problems = {m: sorted(union - set(sd)) for m, sd in models.items() if set(sd) != union}
    if problems:
        detail = "; ".join(
            f"{m} lacks {', '.join(miss[:5])}{' ...' if len(miss) > 5 else ''}" for m, miss in problems.items()
        )
        raise ValueError(f"models have different tensor names: {detail}")
    return names


def check_finite(model: str, state_dict: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """`state_dict`, refused where a floating-point tensor holds NaN or inf (a damaged checkpoint): one ValueError
    naming the model, the tensor and how many entries. A merge carried it into the merged model without a word, and
    DARE's L1 rescale and SLERP's angle, computed over the whole tensor, spread one such entry over all of it.
    Checked once per model as it loads (merge apply, merge evolve), not on every merge of a search."""
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):  # (all: cheaper than a count)
            bad = int(tensor.numel() - torch.isfinite(tensor).sum())
            raise ValueError(f"model {model!r}: its tensor {name} holds {bad} NaN or inf value(s) of "
                             f"{tensor.numel()} (a damaged checkpoint?); give a model whose weights are finite")
    return state_dict


def merge_state_dicts(
    models: Mapping[str, Mapping[str, torch.Tensor]],
    method: str,
    *,
    base: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    model_parameters: Mapping[str, Mapping[str, Any]] | None = None,
    num_layers: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Merge whole state dicts {model: {tensor name: tensor}} with mergekit parameter semantics (module doc).

        merged = merge_state_dicts({"base": base_sd, "math": math_sd, "code": code_sd}, "ties", base="base",
                                   parameters={"density": 0.5},
                                   model_parameters={"math": {"weight": 0.6}, "code": {"weight": [0.2, 0.6]}})

    `num_layers` (default: inferred from the `layers.{i}.` names) sets the gradient position of layer tensors.
    DARE masks use one CPU generator per tensor derived from (seed, tensor name): same seed, same masks, on
    any device. Tensors are merged one at a time on `device` (default: resolve_device(None)); each result
    goes back to the device of the first model's tensor.

    Args:
        models: {model name: state dict}, every state dict with the same tensor names and shapes.
        method: one of METHODS ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp") or
            "passthrough" (one model; its tensors copied, times its `scale` where set).
        base: the base model's name: needed by the task-vector methods and slerp (its t = 0 end), whose per-model
            parameters then cover the other models only; linear ignores it.
        parameters: the global (mergekit `parameters:`) settings, key → scalar, layer gradient or filtered
            entries; the shared keys (normalize, rescale, lambda, t, …) are read only here.
        model_parameters: {model name: settings} for the per-input keys (weight, density, scale), which take
            precedence over the global ones for that model.
        num_layers, seed, device: as above.

    Returns:
        {tensor name: merged tensor}, in the first model's order, each of its inputs' promoted dtype. Tensors that
        are not floating point (e.g. integer buffers) are copied, and must be equal in every model.

    Raises:
        ValueError: models not a dict or with other tensor names or shapes, an unknown method or parameter name, a
            base or model_parameters name that is not a model, a missing weight, a parameter of the wrong type or
            out of range, a non-float tensor that differs between models, a bad seed or device.
    """
    if not isinstance(models, Mapping):  # a list of state dicts: which model is the base, which weight whose?
        raise ValueError(f"models is a dict {{model name: state dict}}, got a {type(models).__name__}")
    dev = resolve_device(device)
    if method not in METHODS and method != "passthrough":
        raise ValueError(f"unknown merge method {method!r}; choose one of {', '.join(METHODS)} (or passthrough)")
    names = check_models(models)
    if base is not None and base not in models:
        raise ValueError(f"base model {base!r} is not among the models {list(models)}")
    unknown = set(model_parameters or {}) - set(models)
    if unknown:
        raise ValueError(f"model_parameters names unknown model(s) {sorted(unknown)}; models are {list(models)}")
    check_parameter_names(parameters, "parameters")
    for m, given in (model_parameters or {}).items():
        check_parameter_names(given, f"model_parameters[{m!r}]")
    check_seed(seed, "seed")
    n = num_layers if num_layers is not None else num_layers_of(names)
    shared = [parameters]
    scopes = {m: [(model_parameters or {}).get(m), parameters] for m in models}
    return {
        name: merge_one_on(
            dev,
            {m: sd[name] for m, sd in models.items()},
            method,
            base=base,
            name=name,
            t=gradient_t(name, n),
            shared_scopes=shared,
            model_scopes=scopes,
            seed=seed,
        )
        for name in names
    }


def merge_one_on(device: torch.device, tensors: Mapping[str, torch.Tensor], method: str, **kwargs) -> torch.Tensor:
    """merge_one on `device`; the result goes back to the first input's device (CPU in, CPU out). Nothing is
    copied when the inputs are on `device` already."""
    home = next(iter(tensors.values())).device
    return merge_one({m: x.to(device) for m, x in tensors.items()}, method, **kwargs).to(home)
