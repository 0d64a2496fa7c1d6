"""LoRA experts with the real `peft` library, on the matrices SVF adapts: the paper's comparison (Transformer²
§4: SVF trains min(out, in) numbers per matrix, LoRA r·(in + out)), trained by the same REINFORCE trainer.

    lora = LoRAModel(model, tokenizer, rank=4)   # peft LoraConfig on every MLP matrix (gate, up, down)
    trainer = ExpertTrainer(lora, "sort", seed=0)  # the same trainer, loss, data and steps as an SVF expert
    lora.apply(trainer.best_params)              # the LoRA weights into peft's modules (B = 0 is the base)
    lora.save(path, trainer.best_params)         # a peft adapter folder (adapter_config.json + safetensors)

`peft.get_peft_model` injects LoRA layers into the model IN PLACE (the model object you pass runs with the
adapters from then on): build a LoRAModel on a model of its own. LoRAModel offers the interface
ExpertTrainer uses (names, key, device, init_params, apply, reset, forward, summary), so the trainer, its
checkpoints and its bit-exact resume are shared with SVF. `key` is the SVF key of the same weights
(workbench.experts.model.weights_key over the MLP matrices), so an SVF and a LoRA expert of one model carry
the same model key.

Initialisation (seeded, unlike peft's global-RNG init): A ~ U(−1/√in, 1/√in) (peft's default kaiming-uniform
with a = √5 has this bound), B = 0, so training starts at the base weights exactly; scaling = alpha / rank
(alpha = rank by default: scaling 1).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from workbench.atomic import replace_dir, staging_dir
from workbench.experts.model import svf_matrix_names, weights_key
from workbench.lm.hf import transformers_imported

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class LoRAModel:
    """A causal LM with peft LoRA adapters on its MLP matrices, driven by explicit parameter dicts (module doc)."""

    def __init__(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase | None = None, *, rank: int = 4,
                 alpha: float | None = None):
        transformers_imported()  # the first import of transformers under one lock
        from peft import LoraConfig, get_peft_model

        if int(rank) < 1:
            raise ValueError(f"the LoRA rank must be at least 1, got {rank} (--rank)")
        matrices = svf_matrix_names(model)
        if not matrices:
            raise ValueError(f"{type(model).__name__} has no 2-D MLP weight matrices (no parameter name contains "
                             "'mlp'), so there is nothing to adapt; give a transformer causal LM such as the zoo's "
                             "Llamas or SmolLM2")
        named = dict(model.named_parameters())
        self.key = weights_key({n: named[n] for n in matrices})
        modules = [n.rsplit(".", 1)[0] for n in matrices]
        for path in modules:
            if not isinstance(model.get_submodule(path), torch.nn.Linear):
                raise ValueError(f"{path} is a {type(model.get_submodule(path)).__name__}, not a Linear layer: "
                                 "peft's LoRA cannot wrap it; use the SVF adapter (--adapter svf)")
        self.rank, self.alpha = int(rank), float(alpha if alpha is not None else rank)
        self.matrices = matrices
        self.config = LoraConfig(r=self.rank, lora_alpha=self.alpha, target_modules=modules, lora_dropout=0.0,
                                 bias="none")
        for p in model.parameters():
            p.requires_grad_(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecation note on a peft call
            self.peft = get_peft_model(model, self.config)
        self.model, self.tokenizer = model, tokenizer  # `model` now holds the LoRA layers (injected in place)
        self.names = [n for n, _ in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]
        self._params = dict(model.named_parameters())
        for n in self.names:
            self._params[n].requires_grad_(False)  # trained as separate leaves through functional_call
        self.shapes = {n: tuple(self._params[n].shape) for n in self.names}
        self.reset()
        self.applied = "base"

    # --- the interface ExpertTrainer uses ---------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """The device the LoRA weights are on (where init_params puts fresh ones)."""
        return self._params[self.names[0]].device

    @property
    def n_params(self) -> int:
        """Trainable numbers: Σ r·(in + out) over the adapted matrices."""
        return sum(math.prod(s) for s in self.shapes.values())

    def init_params(self, seed: int, *_unused: float) -> dict[str, torch.Tensor]:
        """Fresh LoRA weights: A ~ U(−1/√in, 1/√in) from a CPU generator seeded with `seed`, B = 0."""
        gen = torch.Generator().manual_seed(int(seed))
        out = {}
        for n in self.names:
            shape = self.shapes[n]
            if ".lora_A." in n:
                bound = 1.0 / math.sqrt(shape[1])
                out[n] = (torch.rand(shape, generator=gen) * 2 - 1) * bound
            else:
                out[n] = torch.zeros(shape)
        return {n: p.to(self.device) for n, p in out.items()}

    def check(self, params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The weights as float32 on the model's device, after one clear error for a set made for another model."""
        missing = [n for n in self.names if n not in params]
        extra = [n for n in params if n not in self.shapes]
        if missing or extra:
            raise ValueError(f"the LoRA weights {'lack' if missing else 'have'} {(missing or extra)[0]!r}: they were "
                             "made for another model or rank")
        out = {}
        for n in self.names:
            t = torch.as_tensor(params[n])
            if tuple(t.shape) != self.shapes[n]:
                raise ValueError(f"the LoRA weight {n!r} has shape {tuple(t.shape)}, this model needs "
                                 f"{self.shapes[n]} (another model or rank)")
            if not torch.isfinite(t).all():
                raise ValueError(f"the LoRA weight {n!r} has NaN or inf entries")
            out[n] = t.to(self.device, torch.float32)
        return out

    @torch.no_grad()
    def apply(self, params: Mapping[str, torch.Tensor] | None) -> None:
        """Copy LoRA weights into peft's modules (None: the base, B = 0)."""
        if params is None:
            self.reset()
            return
        for n, t in self.check(params).items():
            self._params[n].copy_(t)
        self.applied = "expert"

    @torch.no_grad()
    def reset(self) -> None:
        """The base model exactly: every LoRA weight 0 (B = 0 adds exact zeros to each MLP output)."""
        for n in self.names:
            self._params[n].zero_()
        self.applied = "base"

    def forward(self, params: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """model(*args, **kwargs) with the LoRA weights `params` (differentiable: gradients reach them)."""
        from torch.func import functional_call

        return functional_call(self.model, dict(params), args, kwargs, strict=False)

    @torch.no_grad()
    def summary(self, params: Mapping[str, torch.Tensor]) -> dict:
        """Σ over matrices of ‖scaling·B·A‖_F: how far the expert moved the weights."""
        scale = self.alpha / self.rank
        total = 0.0
        for n in self.names:
            if ".lora_A." in n:
                b = n.replace(".lora_A.", ".lora_B.")
                total += float((params[b] @ params[n]).norm()) * scale
        return {"delta_norm": total}

    # --- files --------------------------------------------------------------------------------------------

    def save(self, path: str | Path, params: Mapping[str, torch.Tensor], meta: dict | None = None) -> Path:
        """A peft adapter folder (peft's own save_pretrained: adapter_config.json + adapter_model.safetensors)
        holding `params`, plus meta.json; written to a temporary folder and renamed into place. The modules
        hold `params` afterwards."""
        import shutil

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.apply(params)
        tmp = staging_dir(path)
        try:
            from workbench.lm.models import quiet_progress

            with quiet_progress():  # transformers' "Writing model shards" bar amid our own output
                self.peft.save_pretrained(tmp)
            # peft keeps target_modules as a set and writes it in hash order, which changes from process to
            # process: sorted, the same adapter is the same file
            config = json.loads((tmp / "adapter_config.json").read_text())
            if isinstance(config.get("target_modules"), list):
                config["target_modules"] = sorted(config["target_modules"])
                (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            (tmp / "meta.json").write_text(json.dumps({**(meta or {}), "model_key": self.key, "rank": self.rank,
                                                       "alpha": self.alpha, "n_params": self.n_params}))
            replace_dir(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path


def lora_param_count(shapes: Mapping[str, tuple[int, int]], rank: int) -> int:
    """r·(in + out) summed over matrices given as {name: (out, in)}."""
    return sum(int(rank) * (o + i) for o, i in shapes.values())


def svf_param_count(shapes: Mapping[str, tuple[int, int]]) -> int:
    """min(out, in) summed over matrices given as {name: (out, in)}."""
    return sum(min(o, i) for o, i in shapes.values())
