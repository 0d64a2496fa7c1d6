"""Videos: MP4s come from ffmpeg started without a fork, odd sizes work, and a stopped export leaves nothing."""

import os

import imageio.v2 as imageio
import numpy as np
import psutil
import pytest

from workbench.export import Mp4Writer, export

_FORKS: list[int] = []
os.register_at_fork(before=lambda: _FORKS.append(1))  # runs for os.fork() and for Popen with a preexec_fn


def _ffmpegs() -> list:
    """This process's ffmpeg children still there (other tests may leave children of other kinds)."""
    return [c for c in psutil.Process().children(recursive=True) if "ffmpeg" in c.name()]


def test_mp4_export_never_forks_and_pads_odd_sizes(tmp_path, substrates):
    """A real fork stops OpenBLAS's worker threads under any threaded BLAS call another thread is making, which
    then waits for good (the server hang of 2026-12-02); imageio's writer forked for every video. H.264 in 4:2:0
    needs even sizes: an odd one used to end in an ffmpeg error, then with a black line along its edges."""
    sub = substrates["boids"]
    before = len(_FORKS)
    out = export(sub, sub.decode(sub.zero_theta()), 6, tmp_path / "b.mp4", size=33, every=2)
    assert len(_FORKS) == before
    frames = imageio.mimread(out)
    assert len(frames) == 4 and frames[0].shape == (34, 34, 3)
    assert np.asarray(frames[-1])[:33, :33].std() > 1  # the picture, not a blank video
    last = np.asarray(frames[-1], np.int16)  # the pad is the edge again (black drew a line along a white picture)
    assert np.abs(last[:, 33] - last[:, 32]).mean() < 8 and np.abs(last[33] - last[32]).mean() < 8
    assert [p.name for p in tmp_path.iterdir()] == ["b.mp4"]
    data = out.read_bytes()  # the index before the frames: a web page plays it while it loads
    assert data.index(b"moov") < data.index(b"mdat")


def test_a_stopped_mp4_export_leaves_no_file_and_no_ffmpeg(tmp_path, substrates):
    sub = substrates["plife"]

    def stop(_: int) -> None:
        raise KeyboardInterrupt  # what Ctrl-C does mid-video: ffmpeg sits in a session of its own, we end it

    with pytest.raises(KeyboardInterrupt):
        export(sub, sub.decode(sub.zero_theta()), 8, tmp_path / "p.mp4", size=32, every=2, progress=stop)
    assert list(tmp_path.iterdir()) == []
    assert _ffmpegs() == []


def test_mp4_writer_errors_say_what_went_wrong(tmp_path):
    with pytest.raises(ValueError, match="H x W x 3"), Mp4Writer(tmp_path / "a.mp4", 10) as w:
        w.append(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="one shape"), Mp4Writer(tmp_path / "b.mp4", 10) as w:
        w.append(np.zeros((8, 8, 3), np.uint8))
        w.append(np.zeros((10, 8, 3), np.uint8))
    with pytest.raises(RuntimeError, match="ffmpeg could not write c.mp4"), \
            Mp4Writer(tmp_path / "missing" / "c.mp4", 10) as w:
        w.append(np.zeros((8, 8, 3), np.uint8))
    assert _ffmpegs() == []


def test_a_full_disk_is_an_os_error_naming_the_file_and_leaves_no_traceback_behind(tmp_path):
    """A full disk under ffmpeg was a RuntimeError (the CLI printed its traceback), naming the temporary file; a
    GIF's failed close left imageio's __del__ to write the frames again (two tracebacks after the error line).
    /dev/full answers every write with ENOSPC."""
    import errno
    import gc
    import sys

    frames = np.random.default_rng(0).integers(0, 255, (30, 64, 64, 3), dtype=np.uint8)
    with pytest.raises(OSError) as caught, Mp4Writer("/dev/full", 10) as w:
        for frame in frames:
            w.append(frame)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == "/dev/full"
    assert _ffmpegs() == []

    from workbench.export import _GifWriter

    unraisable, hook = [], sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with pytest.raises(OSError), \
                _GifWriter(imageio.get_writer("/dev/full", format="gif", mode="I", duration=30, loop=0)) as g:
            for frame in frames[:3]:
                g.append(frame)
        del g
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert unraisable == []


def test_a_png_export_reports_progress_as_it_goes_and_equals_one_call(tmp_path, substrates):
    """The PNG branch stepped in one call: a bar sat at 0 until the end. In pieces, the same picture."""
    sub = substrates["boids"]
    params = sub.decode(0.2 * np.random.default_rng(0).standard_normal(sub.n_params))
    calls: list[int] = []
    out = export(sub, params, 250, tmp_path / "b.png", size=48, seed=3, progress=calls.append)
    assert len(calls) == 125 and sum(calls) == 250  # steps // 100 = 2 a piece
    want = sub.render(sub.step(sub.init(params, seed=3), params, 250), params, 48)
    from workbench.export import to_uint8

    np.testing.assert_array_equal(imageio.imread(out), to_uint8(np.asarray(want)))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to run ffmpeg on one and on several")
def test_an_mp4_is_the_same_bytes_on_any_number_of_cores(tmp_path):
    """A paper's repository or a run folder synced between machines keeps its videos: libx264 picks its threads
    from the CPUs it may use, and its bitstream depends on them, so the same frames made another file on a laptop
    than on a 2-core VM (every regeneration a diff). The encoder's threads are fixed."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    frames = [np.roll(base, 3 * i, axis=1) // 2 + rng.integers(0, 128, base.shape, dtype=np.uint8)
              for i in range(40)]

    def write(name: str) -> bytes:
        with Mp4Writer(tmp_path / name, 30) as w:
            for frame in frames:
                w.append(frame)
        return (tmp_path / name).read_bytes()

    many = write("many.mp4")
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # this thread's ffmpeg child inherits one CPU
    try:
        one = write("one.mp4")
    finally:
        os.sched_setaffinity(0, cpus)
    assert one == many


def test_frames_are_rounded_to_the_nearest_8_bit_value_and_a_video_ends_at_the_last_step(tmp_path, substrates):
    """From mutation sampling: a frame's floats become the nearest of 0 … 255 (truncated, every exported frame
    came out up to one level darker than the Lab's and the runs' pictures), clipped at both ends; and a video
    whose --every does not divide --steps ends at the last step asked for, not past it (its last frame, and the
    final PNG written beside it, showed step 6 of a 5-step render)."""
    from workbench.export import to_uint8

    assert to_uint8(np.array([-0.2, 0.0, 0.6 / 255, 1.4 / 255, 254.5 / 255, 1.0, 1.5])).tolist() == [
        0, 0, 1, 1, 255, 255, 255]
    sub = substrates["boids"]
    params = sub.decode(0.2 * np.random.default_rng(0).standard_normal(sub.n_params))
    final = tmp_path / "last.png"
    export(sub, params, 5, tmp_path / "b.gif", size=32, seed=3, every=2, final_png=final)
    want = sub.render(sub.step(sub.init(params, seed=3), params, 5), params, 32)
    np.testing.assert_array_equal(imageio.imread(final), to_uint8(np.asarray(want)))


def test_a_video_of_odd_height_and_even_width_keeps_its_picture(tmp_path):
    """A figure's frames need not be square: 33 rows by 40 columns gets one more row (a copy of the last) and no
    more columns, so every frame stays the picture it was (a column too many shifted each row of the stream)."""
    frame = np.full((33, 40, 3), 255, np.uint8)
    frame[:, :10] = (200, 0, 0)  # a red band along the left edge
    with Mp4Writer(tmp_path / "a.mp4", 10) as w:
        for _ in range(3):
            w.append(frame)
    frames = imageio.mimread(tmp_path / "a.mp4")
    assert len(frames) == 3 and all(f.shape == (34, 40, 3) for f in frames)
    last = np.asarray(frames[-1], np.int16)
    assert np.abs(last[:, 2:8] - (200, 0, 0)).max() < 40 and np.abs(last[:, 14:] - 255).max() < 40


def test_a_png_export_of_steps_that_do_not_split_evenly_stops_at_the_steps_asked(tmp_path, substrates):
    """From mutation sampling: `render --steps 251 --out f.png` with its progress bar steps in pieces of 2; the
    last piece is the one step left, so the picture is step 251's (as without a bar) and the bar ends at 251/251,
    not 252."""
    sub = substrates["boids"]
    params = sub.decode(0.2 * np.random.default_rng(1).standard_normal(sub.n_params))
    calls: list[int] = []
    out = export(sub, params, 251, tmp_path / "b.png", size=32, seed=2, progress=calls.append)
    assert sum(calls) == 251 and calls[-1] == 1
    plain = export(sub, params, 251, tmp_path / "plain.png", size=32, seed=2)
    np.testing.assert_array_equal(imageio.imread(out), imageio.imread(plain))


def test_a_gif_faster_than_fifty_frames_a_second_is_refused_before_it_runs(tmp_path):
    """From mutation sampling: a GIF's frames last whole hundredths of a second, so 50 frames/s is its fastest
    (2 hundredths); `--fps 51` is refused like `--fps 60` (it would play at 10 frames/s in browsers), 50 is not."""
    from workbench.export import GIF_MAX_FPS, check_out

    assert GIF_MAX_FPS == 50
    assert check_out(tmp_path / "v.gif", fps=50) == tmp_path / "v.gif"
    with pytest.raises(ValueError, match="--fps 51: a GIF's frames last whole hundredths"):
        check_out(tmp_path / "v.gif", fps=51)
    assert check_out(tmp_path / "v.mp4", fps=60) == tmp_path / "v.mp4"  # an MP4 plays any rate


def test_a_folder_given_as_the_output_is_said_to_be_one_whatever_its_name(tmp_path):
    """From mutation sampling: a folder named like no video (`--out shots`) was refused for its suffix ("must end
    in .png, .gif, .mp4"), as if a file of that name could be written there."""
    from workbench.export import check_out

    (tmp_path / "shots").mkdir()
    with pytest.raises(ValueError, match="shots is a folder; give a file name, e.g. --out .*sim.gif"):
        check_out(tmp_path / "shots")


def test_a_theta_of_the_right_size_but_another_shape_is_refused(tmp_path, substrates):
    """From mutation sampling: θ is one vector of the substrate's n_params; the same numbers as a (1, n) row (a
    population of one, saved from a search's table) are refused by their shape, not played as something else."""
    from workbench.export import load_theta

    sub = substrates["boids"]
    np.save(tmp_path / "row.npy", np.zeros((1, sub.n_params)))
    with pytest.raises(ValueError, match=rf"has shape \(1, {sub.n_params}\); boids needs \({sub.n_params},\)"):
        load_theta(tmp_path / "row.npy", sub)
    np.save(tmp_path / "flat.npy", np.zeros(sub.n_params))
    assert load_theta(tmp_path / "flat.npy", sub).shape == (sub.n_params,)


def test_an_mp4_says_its_colours_are_bt709_and_shows_them_so(tmp_path):
    """A browser or slide program shows an MP4 by the colour matrix its stream names, and guesses where it names
    none: the frames were converted by BT.601 and left untagged, so a player taking them for BT.709 (HD video's, as
    browsers may) showed pure green as 0,215,0. They are converted by BT.709 now and tagged so: shown as they were
    by a player that reads the tag (imageio's ffmpeg) and by one that assumes BT.709."""
    import subprocess

    import imageio_ffmpeg

    colours = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (33, 145, 140)], np.uint8)
    frame = np.repeat(np.repeat(colours[None], 32, axis=0), 32, axis=1).reshape(32, 32 * len(colours), 3)
    with Mp4Writer(tmp_path / "c.mp4", 10) as w:
        for _ in range(2):
            w.append(frame)
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    said = subprocess.run([ffmpeg, "-hide_banner", "-i", str(tmp_path / "c.mp4")], capture_output=True,
                          text=True, timeout=60).stderr
    assert "yuv420p(tv, bt709" in said, said
    as_709 = subprocess.run([ffmpeg, "-v", "error", "-i", str(tmp_path / "c.mp4"), "-frames:v", "1", "-vf",
                             "scale=in_color_matrix=bt709:in_range=tv", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                            capture_output=True, timeout=60, check=True).stdout
    for shown in (np.frombuffer(as_709, np.uint8).reshape(frame.shape), imageio.mimread(tmp_path / "c.mp4")[0]):
        centres = np.asarray(shown, np.int16)[16, 16::32]  # each patch's middle: away from 4:2:0's shared edges
        assert np.abs(centres - colours).max() <= 4, centres
