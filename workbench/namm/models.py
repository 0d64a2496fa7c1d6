"""The causal LM a NAMM runs in: checked before its weights load, then loaded with eager attention.

    config = model_config("smollm2")          # the Hugging Face config only (no weights)
    check_model_source("smollm2", context=1100) # eager attention, one full-attention layer per block, the window
    model, tokenizer = load_eager_model("smollm2")   # load_model(...) + set_attn_implementation("eager")

NAMM reads the post-softmax attention weights, which only eager attention returns; SmolLM2 loads with sdpa, so
`load_eager_model` switches it. `check_model_source` builds the model's skeleton on the meta device (no memory,
no weights) to catch, before anything heavy happens, a model that cannot run eager attention (no attention
modules, sliding-window or other non-full layers) and a context longer than its window.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from workbench.checks import user_path
from workbench.lm.hf import transformers_imported

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase


def model_config(name: str):
    """The transformers config of 'smollm2', a .gguf file or a model folder, read without the weights."""
    transformers_imported()  # the first import of transformers under one lock
    from transformers import AutoConfig

    from workbench.lm.models import SMOLLM2, SMOLLM2_CACHE, cache_dir, smollm2_gguf

    path = user_path(name)
    try:
        if name == SMOLLM2:
            cached = cache_dir() / SMOLLM2_CACHE
            if (cached / "config.json").is_file():
                return AutoConfig.from_pretrained(cached)
            gguf = smollm2_gguf()
            return AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if path.is_file() and path.suffix == ".gguf":
            return AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
        if path.is_dir() and (path / "config.json").is_file():
            json.loads((path / "config.json").read_text())  # a clear error for a damaged file
            return AutoConfig.from_pretrained(path)
    except ValueError:
        raise
    except Exception as error:  # transformers raises many types on a foreign or damaged config
        raise ValueError(f"--model {name}: cannot read its config ({type(error).__name__}: {error})") from None
    raise ValueError(f"--model {name}: unknown model; give '{SMOLLM2}', a .gguf file or a Hugging Face model folder "
                     "(config.json + weights)")


def window(config) -> int | None:
    """The model's context window (max_position_embeddings), None when the config does not say."""
    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    return getattr(config, "max_position_embeddings", None)


def check_model_source(name: str, context: int | None = None) -> PretrainedConfig:
    """One clear error, before any weights load, for a model NAMM cannot drive or a context (prompt + answer
    tokens) longer than its window; returns the config."""
    transformers_imported()  # the first import of transformers under one lock
    from transformers import AutoModelForCausalLM

    from workbench.namm.cache import _check_full_attention, check_model

    config = model_config(name)
    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    except Exception as error:  # noqa: BLE001 - any refusal means: no eager attention for this architecture
        raise ValueError(f"--model {name}: cannot build it with eager attention ({type(error).__name__}: {error}); "
                         "NAMM reads post-softmax attention weights: give a Llama-family causal LM such as "
                         "smollm2") from None
    try:
        check_model(skeleton)
        _check_full_attention(config)
    except ValueError as error:
        raise ValueError(f"--model {name}: {error}") from None
    limit = window(config)
    if context is not None and limit is not None and context > limit:
        raise ValueError(f"a context of {context} tokens (prompt + answer) is longer than the window of --model {name} "
                         f"({limit} positions, max_position_embeddings): use a shorter --length")
    return config


def load_eager_model(name: str, device: str | torch.device | None = None
                     ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model in eval mode with eager attention, tokenizer) for 'smollm2', a .gguf file or a model folder."""
    from workbench.lm.models import load_model

    model, tokenizer = load_model(name, device=device)
    try:
        model.set_attn_implementation("eager")
    except Exception as error:  # noqa: BLE001 - transformers refuses with various types
        raise ValueError(f"--model {name} cannot switch to eager attention ({error}); NAMM needs it") from None
    return model, tokenizer


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of 'smollm2' or a model folder alone (fast: prompts can be built and checked before the
    model loads), left padding and a pad token as load_model sets them."""
    transformers_imported()  # the first import of transformers under one lock
    from transformers import AutoTokenizer

    from workbench.lm.models import SMOLLM2, SMOLLM2_CACHE, cache_dir, smollm2_gguf

    path = user_path(name)
    try:
        if name == SMOLLM2:
            cached = cache_dir() / SMOLLM2_CACHE
            if (cached / "tokenizer_config.json").is_file():
                tok = AutoTokenizer.from_pretrained(cached)
            else:
                gguf = smollm2_gguf()
                tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        elif path.is_file() and path.suffix == ".gguf":
            tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        else:
            tok = AutoTokenizer.from_pretrained(path)
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"--model {name}: cannot load its tokenizer ({type(error).__name__}: {error})") from None
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


#: newline and printable ASCII, one token per character (the tiny test model's vocabulary after its three specials)
TINY_CHARS = "\n" + "".join(chr(c) for c in range(32, 127))


def tiny_llama(path: str | Path, seed: int = 0, *, layers: int = 2, window: int = 1024) -> Path:
    """Write a tiny random Llama with GQA (4 query heads on 2 KV heads, hidden 32, eager attention) and a
    char-level tokenizer over printable ASCII to `path`: a model folder for fast tests of the whole pipeline
    (prompts, eviction, training runs). Its answers are noise; its window is `window` positions."""
    transformers_imported()  # the first import of transformers under one lock
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.lm.models import quiet_progress
    from workbench.lm.tasks import char_tokenizer

    tok = char_tokenizer(TINY_CHARS)
    # a wide init makes attention peaky, so heads see different things and evict differently
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=window,
                      initializer_range=0.3, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                      tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):  # the seed is the model's: the caller's generator is left as it was
        torch.manual_seed(int(seed))
        model = LlamaForCausalLM(cfg).eval()
    path = Path(path)
    with quiet_progress():
        model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
