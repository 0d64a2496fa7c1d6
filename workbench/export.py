"""Export a simulation to PNG (last frame), GIF or MP4, written atomically."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np

from workbench.atomic import atomic_write, write_png
from workbench.checks import output_file, shell_path
from workbench.simulations import Substrate
from workbench.simulations.base import Params, check_positive

FORMATS = (".png", ".gif", ".mp4")
#: libx264's threads, fixed: its bitstream depends on them, and left to ffmpeg they follow the CPUs it may use (the
#: same frames made other bytes on a laptop than on a 2-core VM)
X264_THREADS = 4
#: what an MP4's stream says of its colours (BT.709, limited range), as the frames are converted to them
COLOUR_TAGS = "colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv"


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """Frames as `rollout` and `Substrate.render` give them (float in [0, 1], any shape) → uint8 for PNG, GIF
    and MP4: clipped to [0, 1] and rounded to the nearest of 0 … 255, as the Lab, the runs and the figures write
    them. A NaN (a diverged simulation's pixel) is black: cast as it was, its byte was whatever the CPU's
    float-to-integer conversion gave (C leaves it undefined; NumPy warned)."""
    return (np.clip(np.nan_to_num(frame, nan=0.0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _even(n: int) -> int:
    return n + n % 2


class Mp4Writer:
    """H.264 MP4 from RGB uint8 frames, piped to the ffmpeg that imageio-ffmpeg ships.

    Why not imageio's own writer: it starts ffmpeg with a `preexec_fn`, which makes Python fork for real, and
    OpenBLAS stops its worker threads before every fork. A threaded BLAS call that another thread of the process
    is making at that moment (numpy in a notebook's kernel, a page's PCA) then waits for good. Started with
    `start_new_session` instead, Python on Linux spawns through vfork, which runs no fork handlers; ffmpeg still
    sits in a session of its own, so a Ctrl-C meant for us does not cut the video short under us (we stop it).
    Odd sizes are padded by a copy of their last row / column: H.264 in 4:2:0 needs even ones (a black one drew a
    line along the edge of a white picture).
    """

    def __init__(self, path: str | Path, fps: float, quality: int = 8) -> None:
        self.path, self.fps, self.quality = Path(path), fps, quality
        self.proc: subprocess.Popen | None = None
        self.shape: tuple[int, ...] | None = None

    def _start(self, shape: tuple[int, ...]) -> None:
        import imageio_ffmpeg

        h, w = _even(shape[0]), _even(shape[1])
        crf = int((1 - self.quality / 10) * 51)  # imageio's mapping of its quality 0-10 to libx264's CRF
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{w}x{h}", "-r", str(Fraction(self.fps).limit_denominator()), "-i", "-", "-an",
               # RGB to YUV by BT.709, and the stream says so: untagged, ffmpeg converted by BT.601 and players
               # guess (a player that took it for BT.709, as browsers may, showed pure green as 0,215,0)
               "-vf", f"scale=out_color_matrix=bt709:out_range=tv,setparams={COLOUR_TAGS}",
               "-vcodec", "libx264", "-pix_fmt", "yuv420p",
               "-threads", str(X264_THREADS),
               # faststart: the index (moov) before the frames, so a browser plays a video on a web page while it
               # loads rather than after the whole file has come
               "-crf", str(crf), "-movflags", "+faststart", "-f", "mp4", str(self.path)]
        self.log = tempfile.TemporaryFile()  # a file, not a pipe: ffmpeg can never block on a full stderr pipe
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.log,
                                         start_new_session=True)
        except BaseException:
            self.log.close()
            raise
        self.shape = shape

    def append(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"an MP4 frame is H x W x 3 RGB; got shape {frame.shape}")
        if self.proc is None:
            self._start(frame.shape)
        elif frame.shape != self.shape:
            raise ValueError(f"every frame of a video has one shape: {self.shape}, then {frame.shape}")
        if frame.shape[0] % 2 or frame.shape[1] % 2:
            frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
        try:
            self.proc.stdin.write(frame.tobytes())
        except BrokenPipeError:
            self.close()  # ffmpeg ended early: close() raises with what it said
            raise

    def close(self) -> None:
        """Let ffmpeg finish the file; an error if it failed, with what it said."""
        if self.proc is None:
            raise ValueError("a video needs at least one frame")
        proc = self.proc
        try:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            code = proc.wait()
        except BaseException:  # a Ctrl-C while ffmpeg finishes: it sits in its own session, so we end it
            self.kill()
            raise
        self.proc = None
        try:
            if code != 0:
                self.log.seek(0)
                said = self.log.read().decode(errors="replace").strip()[-2000:]
                for number in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT):  # the system's, as one
                    if os.strerror(number) in said:  # error line of the CLI naming the file (atomic_write's)
                        raise OSError(number, os.strerror(number), str(self.path))
                raise RuntimeError(f"ffmpeg could not write {self.path.name}: {said or f'exit {code}'}")
        finally:
            self.log.close()

    def kill(self) -> None:
        """End ffmpeg at once (the file it was writing is left as it is; atomic_write throws it away)."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.kill()
        with contextlib.suppress(OSError):  # frames still buffered for the pipe: nobody reads them now
            proc.stdin.close()
        proc.wait()
        self.log.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:  # stopped (an error, a Ctrl-C): the partial file is thrown away by atomic_write
            self.kill()


class _GifWriter:
    """imageio's GIF writer (pillow, in process) behind Mp4Writer's append. It holds every frame until it closes
    (Pillow writes a GIF's frames at once): long videos belong in an .mp4, which streams."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def append(self, frame: np.ndarray) -> None:
        self.writer.append_data(frame)

    def __enter__(self) -> _GifWriter:
        return self

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        try:
            if exc_type is None:
                self.writer.close()
        finally:  # written, failed (a full disk) or stopped: the frames go, and the file, so that imageio's __del__
            self.writer.instance.images_to_write.clear()  # does not try again (two tracebacks after the error)
            with contextlib.suppress(Exception):
                self.writer.instance.close()
            self.writer.closed = True


#: the fastest a GIF plays: frames of 2 hundredths of a second (browsers play shorter ones at 10 frames/s)
GIF_MAX_FPS = 50


def check_out(out: str | Path, final_png: str | Path | None = None, fps: int | None = None) -> Path:
    """`out` as a Path, or one error naming the fix (before a simulation, not after it): not a folder itself, a
    format export writes (FORMATS), in a folder that exists; final_png likewise; a GIF's `fps` it can play."""
    out = Path(out)
    if out.is_dir():  # a folder named like a file or not: said as what it is
        output_file(out, "--out", "sim.gif")
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"--out {out}: the output must end in {', '.join(FORMATS)}")
    output_file(out, "--out", "sim" + out.suffix)
    if final_png is not None:
        output_file(final_png, "final_png", "final.png")
    if fps is not None and out.suffix.lower() == ".gif" and fps > GIF_MAX_FPS:
        raise ValueError(f"--fps {fps}: a GIF's frames last whole hundredths of a second and browsers play those "
                         f"under 2 at 10 frames/s; give --fps {GIF_MAX_FPS} or less, or write an .mp4")
    return out


def export(sub: Substrate, params: Params, steps: int, out: str | Path, seed: int = 0, size: int = 224,
           every: int = 1, fps: int = 30, progress: Callable[[int], None] | None = None,
           final_png: str | Path | None = None, strict: bool = False) -> Path:
    """Run `steps` steps from init and write the result.

    PNG: the final frame. GIF / MP4: every `every`-th state from init to the final one.
    An MP4's frames are streamed to the encoder, so long videos need no memory for all frames; a GIF holds them all
    until it is written (Pillow's GIF writer).
    final_png: a video's last frame is also written to this PNG file (from the same rollout).
    strict: a simulation that diverges (NaN or inf in a frame) is a ValueError naming --theta, not frames drawn
    black (`workbench render` and `figure video`; a search's best.mp4 keeps what it shows).
    """
    steps, size, every, fps = (check_positive(n, v) for n, v in
                               (("steps", steps), ("size", size), ("every", every), ("fps", fps)))
    out = check_out(out, final_png, fps)

    def picture(state, step: int) -> np.ndarray:
        """The rendered state as uint8; a simulation that diverged (NaN, inf) is said, not drawn black."""
        frame = np.asarray(sub.render(state, params, size))
        if strict and not np.isfinite(frame).all():
            raise ValueError(f"the simulation diverged (NaN or inf) by step {step}: θ sets it outside its stable "
                             f"range; give another --theta (or fewer --steps to see it before)")
        return to_uint8(frame)

    def write(tmp: Path) -> None:
        state = sub.init(params, seed=seed)
        if out.suffix.lower() == ".png":
            # in a hundred pieces where a bar shows them (one call sat at 0 until the end); a seed gives the same
            # run however its steps are split
            chunk = max(1, steps // 100) if progress else steps
            for done in range(0, steps, chunk):
                n = min(chunk, steps - done)
                state = sub.step(state, params, n)
                if progress:
                    progress(n)
            imageio.imwrite(tmp, picture(state, steps), format="png")
            return
        if out.suffix.lower() == ".mp4":
            writer = Mp4Writer(tmp, fps)
        else:
            # whole hundredths (what a GIF stores): 30 fps plays at 33, the nearest it can
            delay = 10 * max(2, round(100 / fps))
            writer = _GifWriter(imageio.get_writer(tmp, format="gif", mode="I", duration=delay, loop=0))
        with writer:
            frame = picture(state, 0)
            writer.append(frame)
            done = 0
            while done < steps:
                n = min(every, steps - done)
                state = sub.step(state, params, n)
                done += n
                frame = picture(state, done)
                writer.append(frame)
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


def read_theta(file, name: str, hint: str = "") -> np.ndarray:
    """A numeric array from a .npy file (a path, or a file object such as a page's upload), or one ValueError
    naming it (`name`) that says how to make one: NumPy's own error advises loading with pickle."""
    try:
        theta = np.load(file, allow_pickle=False)
    except Exception:  # noqa: BLE001 - any unreadable file gets the same message
        raise ValueError(f"cannot read θ from {name}: not a NumPy .npy array (save one with numpy.save{hint})") \
            from None
    if not isinstance(theta, np.ndarray) or not np.issubdtype(theta.dtype, np.number):
        raise ValueError(f"θ in {name} is not a numeric array; save one with numpy.save")
    return theta


def load_theta(path: str | Path | None, sub: Substrate) -> np.ndarray:
    """θ from a .npy file (checked against the substrate), or zeros (the reference defaults)."""
    if path is None:
        return sub.zero_theta()
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--theta {shell_path(path)} is a folder; give a θ .npy file (e.g. a run's best.npy)")
    if not path.is_file():
        raise ValueError(f"--theta {shell_path(path)}: no such file; give a θ .npy file (e.g. a run's best.npy)")
    theta = read_theta(path, shell_path(path), " or pass a run's best.npy to --theta")
    if theta.shape != (sub.n_params,):
        raise ValueError(f"θ in {shell_path(path)} has shape {theta.shape}; {sub.name} needs ({sub.n_params},)")
    return theta
