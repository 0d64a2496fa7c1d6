"""Export a simulation to PNG (last frame), GIF or MP4, written atomically."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from workbench.atomic import atomic_write, write_png
from workbench.simulations import Substrate
from workbench.simulations.base import Params, check_positive

FORMATS = (".png", ".gif", ".mp4")


def to_uint8(frame: np.ndarray) -> np.ndarray:
    return (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def export(sub: Substrate, params: Params, steps: int, out: str | Path, seed: int = 0, size: int = 224,
           every: int = 1, fps: int = 30, progress: Callable[[int], None] | None = None,
           final_png: str | Path | None = None) -> Path:
    """Run `steps` steps from init and write the result.

    PNG: the final frame. GIF / MP4: every `every`-th state from init to the final one.
    Frames are streamed to the encoder, so long videos need no memory for all frames.
    final_png: a video's last frame is also written to this PNG file (from the same rollout).
    """
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"cannot write {out.name!r}: the output must end in {', '.join(FORMATS)}")
    steps, size, every, fps = (check_positive(n, v) for n, v in
                               (("steps", steps), ("size", size), ("every", every), ("fps", fps)))
    if not out.parent.is_dir():
        raise ValueError(f"the folder {str(out.parent)!r} does not exist; create it first")

    def write(tmp: Path) -> None:
        state = sub.init(params, seed=seed)
        if out.suffix.lower() == ".png":
            state = sub.step(state, params, steps)
            imageio.imwrite(tmp, to_uint8(sub.render(state, params, size)), format="png")
            if progress:
                progress(steps)
            return
        kwargs = {"fps": fps, "macro_block_size": 1, "codec": "libx264", "quality": 8} \
            if out.suffix.lower() == ".mp4" else {"duration": 1000 / fps, "loop": 0}
        with imageio.get_writer(tmp, format=out.suffix.lower()[1:], mode="I", **kwargs) as writer:
            frame = to_uint8(sub.render(state, params, size))
            writer.append_data(frame)
            done = 0
            while done < steps:
                n = min(every, steps - done)
                state = sub.step(state, params, n)
                done += n
                frame = to_uint8(sub.render(state, params, size))
                writer.append_data(frame)
                if progress:
                    progress(n)
        last["frame"] = frame

    last: dict = {}
    atomic_write(out, write)
    if final_png is not None:
        if "frame" not in last:  # out is itself the PNG
            atomic_write(final_png, lambda p: p.write_bytes(out.read_bytes()))
        else:
            write_png(final_png, last["frame"])
    return out


def load_theta(path: str | Path | None, sub: Substrate) -> np.ndarray:
    """θ from a .npy file (checked against the substrate), or zeros (the reference defaults)."""
    if path is None:
        return sub.zero_theta()
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--theta {str(path)!r} is a folder; give a θ .npy file (e.g. a run's best.npy)")
    if not path.is_file():
        raise ValueError(f"θ file {str(path)!r} not found")
    try:
        theta = np.load(path, allow_pickle=False)
    except Exception:  # noqa: BLE001 - any unreadable file gets the same message (numpy's advises pickle)
        raise ValueError(f"cannot read θ from {str(path)!r}: not a NumPy .npy array (save one with numpy.save, "
                         f"or pass a run's best.npy to --theta)") from None
    if not isinstance(theta, np.ndarray) or not np.issubdtype(theta.dtype, np.number):
        raise ValueError(f"θ in {str(path)!r} is not a numeric array; save one with numpy.save")
    if theta.shape != (sub.n_params,):
        raise ValueError(f"θ in {str(path)!r} has shape {theta.shape}; {sub.name} needs ({sub.n_params},)")
    return theta
