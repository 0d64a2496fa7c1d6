"""The `workbench` command as users run it: real processes, real files. Each command runs in a process of its own,
forked from one that has imported torch already (`forked.py`: about 2.5 s less per command)."""

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from forked import run
from procs import _as_from_a_terminal


def _every_parser(parser: argparse.ArgumentParser | None = None, path: tuple[str, ...] = ()):
    """(command words, parser) of `workbench` and of each of its (sub)commands: "" for the top level, "merge evolve"."""
    if parser is None:
        from workbench.cli import build_parser

        parser = build_parser()
    yield " ".join(path), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _every_parser(child, (*path, name))


def _arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """A parser's own arguments: not its subcommands, nor -h / --version."""
    return [a for a in parser._actions
            if not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction, argparse._VersionAction))]


def test_help_everywhere():
    for args in ([], ["view"], ["render"], ["bench"], ["bench", "substrates"]):
        out = run(*args, "--help")
        assert out.returncode == 0, out.stderr
        assert "usage: workbench" in out.stdout


def test_help_says_each_default():
    """Defaults the README gave (serve --port 5006, zoo eval --n 128) were in no --help: each option with a
    default says it, once (help that says its own default is left as it is), switches and unset options don't."""
    serve = run("serve", "--help").stdout
    assert "default: 5006" in serve and "default: 127.0.0.1" in serve
    zoo = " ".join(run("zoo", "eval", "--help").stdout.split())
    assert "held-out prompts per task (default: 128)" in zoo
    target = run("asal", "target", "--help").stdout
    assert target.count("(default: 224)") == 1 and "default: None" not in target and "default: False" not in target


@pytest.mark.parametrize("name, suffix, frames", [("lenia", "png", 1), ("boids", "gif", 4), ("plife", "mp4", 3)])
def test_render_writes_png_gif_mp4(tmp_path, name, suffix, frames):
    out = tmp_path / f"{name}.{suffix}"
    steps = {"lenia": 4, "boids": 30, "plife": 4}[name]
    every = ["--every", str(max(1, steps // (frames - 1)))] if frames > 1 else []  # a picture has no --every
    res = run("render", name, "--steps", str(steps), "--out", str(out), "--size", "96", *every)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out)
    images = imageio.mimread(out) if suffix != "png" else [imageio.imread(out)]
    assert len(images) == frames
    assert images[0].shape[:2] == (96, 96)
    assert np.asarray(images[-1]).std() > 1  # not a blank frame
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary files left behind


def test_render_png_equals_library_frame(tmp_path):
    from workbench.export import to_uint8
    from workbench.simulations import make_substrate

    theta = 0.2 * np.random.default_rng(0).standard_normal(193)
    np.save(tmp_path / "theta.npy", theta)
    out = tmp_path / "b.png"
    res = run("render", "boids", "--steps", "25", "--out", str(out), "--theta", str(tmp_path / "theta.npy"),
              "--seed", "4")
    assert res.returncode == 0, res.stderr
    sub = make_substrate("boids")
    params = sub.decode(theta)
    frame = sub.render(sub.step(sub.init(params, seed=4), params, 25), params, 224)
    np.testing.assert_array_equal(imageio.imread(out), to_uint8(frame))


def test_a_seed_a_substrate_does_not_read_is_said(tmp_path):
    """Lenia starts from one fixed pattern: --seed 3 drew the same picture as --seed 0, without a word."""
    seeded = run("render", "lenia", "--steps", "2", "--size", "32", "--out", "s.png", "--seed", "3", cwd=tmp_path)
    plain = run("render", "lenia", "--steps", "2", "--size", "32", "--out", "p.png", cwd=tmp_path)
    assert seeded.returncode == 0 and plain.returncode == 0, seeded.stderr
    assert seeded.stderr.strip() == "note: lenia starts from one fixed initial state: --seed 3 changes nothing"
    assert plain.stderr == "" and (tmp_path / "s.png").read_bytes() == (tmp_path / "p.png").read_bytes()


@pytest.mark.parametrize("args, message", [
    (["render", "lenia", "--steps", "0", "--out", "x.png"], "argument --steps: give a whole number of at least 1"),
    (["render", "lenia", "--steps", "3", "--out", "x.jpg"], ".png, .gif, .mp4"),
    (["render", "lenia", "--steps", "3", "--out", "x.png", "--theta", "missing.npy"], "--theta missing.npy: no such"),
    # a path as bash takes it back (repr showed it's x as "it's x", and a\b as 'a\\b': neither pastes)
    (["render", "lenia", "--steps", "3", "--out", "x.png", "--theta", "it's x.npy"],
     "--theta 'it'\"'\"'s x.npy': no such"),
    (["render", "lenia", "--steps", "3", "--out", "x.png", "--theta", "."], "is a folder; give a θ .npy file"),
    (["render", "boids", "--steps", "3", "--out", "nowhere/x.png"], "does not exist"),
    (["render", "boids", "--steps", "3", "--out", "x.png", "--theta", "wrong.npy"], r"needs \(193,\)"),
    (["render", "boids", "--steps", "3", "--out", "x.png", "--theta", "notes.txt"], "not a NumPy .npy array"),
    (["render", "gol", "--steps", "3", "--out", "x.png", "--theta", "rule.npy"], r"whole number in \[0, 2\^18\)"),
    (["render", "boids", "--steps", "3", "--out", "x.png", "--every", "2"], "--every sets a video's frames"),
    (["render", "boids", "--steps", "3", "--out", "x.png", "--every", "2", "--fps", "9"],
     "--every and --fps set a video's frames; a .png is the last frame alone: leave them out"),
    # found before the simulation, not after it ("Is a directory", exit 1)
    (["render", "boids", "--steps", "3", "--out", "adir.png"], "--out adir.png is a folder; give a file name"),
    (["render", "gol", "--steps", "1", "--out", "notes.txt/x.png"], "--out notes.txt/x.png: notes.txt is a file, not "
                                                                   "a folder"),
    (["render", "gol", "--steps", "1", "--out", "a.txt"], "--out a.txt: the output must end in .png, .gif, .mp4"),
    (["view", "boids", "--out-dir", "notes.txt/shots", "--frames", "1"], "--out-dir notes.txt/shots: notes.txt is a "
                                                                         "file"),
    (["view", "boids", "--render-size", "100000"], "argument --render-size: give a whole number from 2 to 8192"),
    # browsers play GIF frames under 2 hundredths at 10 frames/s
    (["render", "gol", "--steps", "3", "--out", "x.gif", "--fps", "60"], "--fps 60: a GIF's frames last whole "
                                                                        "hundredths of a second"),
    # a θ far out of its range: the swarm diverges (NaN), said, not drawn black
    (["render", "plenia", "--steps", "5", "--out", "x.png", "--theta", "p6.npy"], "the simulation diverged"),
])
def test_render_bad_input_is_one_clear_error(tmp_path, args, message):
    (tmp_path / "adir.png").mkdir()
    np.save(tmp_path / "p6.npy", np.full(6, 50.0))
    np.save(tmp_path / "wrong.npy", np.zeros(42))
    np.save(tmp_path / "rule.npy", np.array([2 ** 18]))  # one past the last life-like rule
    (tmp_path / "notes.txt").write_text("a text file, not θ\n" * 20)
    res = run(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert "error:" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert message.replace("\\", "") in res.stderr.replace("\n", " ") or __import__("re").search(message, res.stderr)
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("args, message", [
    (["asal", "openended", "--substrate", "lenia", "--fm", "pixels", "--sigma", "0"], "--sigma must be a finite"),
    (["asal", "openended", "--substrate", "lenia", "--fm", "pixels", "--steps", "2", "--frames", "5"],
     "--frames 5 is more than --steps 2"),
    (["asal", "illuminate", "--substrate", "boids", "--fm", "pixels", "--chunk", "0"],
     "--chunk must be a whole number of at least 1"),
    (["asal", "target", "--substrate", "lenia", "--fm", "pixels", "--prompt", "a", "--c-softmax", "-1"],
     "--c-softmax weighs a term of the loss: give a finite number ≥ 0"),
    (["asal", "target", "--substrate", "lenia", "--fm", "pixels", "--prompt", "a", "--iters", "0"],
     "--iters must be a whole number of at least 1"),
    # a softmax over one frame is 1: the term is 0 for every θ, the run the same with it or without it
    (["asal", "target", "--substrate", "lenia", "--fm", "pixels", "--prompt", "a", "--c-softmax", "1"],
     "one frame (--frames 1) makes it 0 for every θ"),
    (["asal", "openended", "--substrate", "lenia", "--fm", "pixels", "--runs", "file.json"],
     "--runs file.json is a file, not a folder"),
    (["asal", "openended", "--substrate", "lenia", "--fm", "pixels", "--runs", "file.json/runs"],
     "--runs file.json/runs: file.json is a file, so no folder can be made under it"),
    (["zoo", "build", "--quick", "--out", "file.json"], "--out file.json is a file"),
    (["zoo", "build", "--quick", "--out", "file.json/zoo"], "file.json is a file, so no folder can be made under it"),
    (["zoo", "build", "--quick", "--tasks", "foo"], "--tasks: unknown task 'foo'; choose from"),
    (["bench", "fm", "--arch", "bogus"], "--arch bogus: unknown open_clip architecture 'bogus'"),
    (["bench", "asal", "--fm", "openclip:bogus"], "--fm openclip:bogus: unknown open_clip architecture 'bogus'"),
    (["asal", "target", "--substrate", "lenia", "--fm", "openclip:bogus", "--prompt", "a"],
     "--fm openclip:bogus: unknown open_clip architecture 'bogus'"),
    (["bench", "merge", "--repeats", "0"], "argument --repeats: give a whole number of at least 1, got 0"),
    (["bench", "gpu", "--min-time", "0"], "argument --min-time: give a number greater than 0, got 0"),
    (["bench", "substrates", "--reference", "nowhere"], "--reference nowhere: not a checkout of the reference "
                                                        "implementation"),
    (["bench", "substrates", "--min-time", "nan"], "argument --min-time: give a finite number, got nan"),
    (["bench", "asal", "--steps", "4"], "--steps must be at least 8: the bench samples 1 and 8 frames a rollout"),
    (["bench", "asal", "--pop", "1"], "--pop must be at least 2"),
    (["bench", "substrates", "--substrates"], "argument --substrates: expected at least one argument"),
    (["bench", "dashboards", "--url", "http://127.0.0.1:9/"], "no workbench server answers at http://127.0.0.1:9 "),
    (["bench", "merge", "--zoo", "nope"], "--zoo nope: no such folder, so no model in it; build a zoo there with "
                                          "`workbench zoo build --out nope`"),
    (["bench", "merge", "--zoo", "file.json"], "--zoo file.json is a file, not a model zoo: give the zoo's folder"),
    (["merge", "apply", "nope.yaml", "--out", "merged", "--eval", "bogus"], "unknown task 'bogus'"),
    (["merge", "evolve", "--models", "add", "add"], "--models names a model twice: add add"),
    (["figure", "atlas", "x", "--out", "a.png", "--font", "serif"], "unrecognized arguments: --font serif"),  # no text
    (["figure", "curves", "x", "--out", "c.png", "--runs", "nowhere"], "(no such folder: give --runs)"),
    # scored twice, recorded once at the last weight
    (["merge", "evolve", "--models", "add", "sort", "--tasks", "sort", "sort"], "--tasks names a task twice"),
    (["merge", "evolve", "--models", "add", "sort", "--tasks", "nosuch"], "--tasks: unknown task 'nosuch'"),
    (["merge", "evolve", "--models", "add", "sort", "--zoo", "."], "--base: no model 'base'"),
    # the zoo's tasks, as zoo eval takes them (it offered the classifier's and the chat models' tasks too)
    (["merge", "apply", "nope.yaml", "--out", "merged", "--eval", "larger"], "unknown task 'larger'; choose from "
                                                                            "add, reverse, sort, recall, brackets"),
    (["experts", "eval", "--model", "nope", "--n", "0"], "argument --n: give a whole number of at least 1"),
    (["namm", "eval", "--n", "0"], "argument --n: give a whole number of at least 1"),
    (["namm", "train", "--length", "0"], "argument --length: give a whole number of at least 1"),
    (["view", "lenia", "--frames", "0"], "argument --frames: give a whole number of at least 1"),
    (["view", "lenia", "--out-dir", "file.json"], "--out-dir file.json is a file"),
    # a folder nothing can be written in ended the session at the first `s`; SDL's largest window, after the build
    (["view", "gol", "--out-dir", "/proc/self/shots"], "--out-dir /proc/self/shots: cannot write in /proc/self"),
    (["view", "gol", "--window", "16385"], "argument --window: give a whole number from 64 to 16384 pixels"),
    (["figure", "curves", "some-run", "--out", "c.png", "--dpi", "0"], "argument --dpi: give a whole number of at "
                                                                        "least 1, got 0"),
    # found by a probe of every command: tracebacks, work thrown away, zeros taken for "the default", failed runs
    (["asal", "target", "--substrate", "lenia", "--fm", "pixels", "--prompt", "a", "--seed", "-1"],
     "argument --seed: give a whole number from 0 to 4294967295"),
    (["merge", "evolve", "--zoo", "z", "--models", "add", "--seed", "-1"], "argument --seed: give a whole number"),
    (["experts", "eval", "--model", "nope", "--threads", "0"], "argument --threads: give a whole number of at least 1"),
    (["experts", "eval", "--model", "nope", "--experts", "e", "--alpha", "nan"], "argument --alpha: give a finite"),
    (["namm", "eval", "--threads", "0"], "argument --threads: give a whole number of at least 1"),
    (["namm", "eval", "--length", "0"], "argument --length: give a whole number of at least 1, got 0"),
    (["namm", "eval", "--max-new-tokens", "0"], "argument --max-new-tokens: give a whole number of at least 1"),
    (["namm", "eval", "--out", "nowhere/x.json"], "--out nowhere/x.json: the folder nowhere does not exist"),
    (["namm", "eval", "--out", "."], "--out . is a folder; give a file name"),
    (["bench", "namm", "--out", "nowhere/x.json"], "--out nowhere/x.json: the folder nowhere does not exist"),
    (["bench", "namm", "--policy", "p.safetensors", "--run", "r"], "give --policy FILE or --run ID, not both"),
    (["bench", "namm", "--max-new-tokens", "0"], "argument --max-new-tokens: give a whole number of at least 1, got 0"),
    (["asal", "illuminate", "--substrate", "lenia", "--fm", "pixels", "--workers", "0"],
     "argument --workers: give a whole number of at least 1 (leave --workers out"),
    (["asal", "illuminate", "--substrate", "lenia", "--fm", "pixels", "--workers", "2", "--dask", "tcp://127.0.0.1:9"],
     "give --workers N or --dask ADDRESS, not both"),
    (["zoo", "eval", "smollm2", "--batch-size", "0"], "argument --batch-size: give a whole number of at least 1"),
    (["figure", "video", "some-run", "--out", "v.mp4", "--steps", "0"], "argument --steps: give a whole number"),
    (["serve", "--port", "70000"], "argument --port: give a whole number from 1 to 65535, got 70000"),
    (["serve", "--runs", "file.json"], "--runs file.json is a file, not a folder: give the run store's folder"),
    (["screenshots", "--runs", "file.json"], "--runs file.json is a file, not a folder: give the run store's folder"),
    (["serve", "--address", "nowhere.invalid"], "--address nowhere.invalid: not an address of this machine"),
    (["serve", "--address", "::1"], "--address ::1: the dashboards' server (Bokeh) takes IPv4 addresses and names"),
    (["asal", "openended", "--substrate", "lenia", "--fm", "pixels", "--c-oe", "0"],
     "--c-oe 0 would leave an open-ended search without its objective"),
    (["screenshots", "--out", "file.json"], "--out file.json is a file; give a folder for the PNGs"),
    (["asal", "target", "--substrate", "lenia", "--thread", "2"], "workbench asal target: unrecognized arguments: "
                                                                  "--thread 2 (see workbench asal target --help)"),
    (["--bogus", "asal", "target"], "error: workbench: unrecognized arguments: --bogus (see workbench --help)"),
    (["--bogus"], "error: workbench: unrecognized arguments: --bogus (see workbench --help)"),  # not "COMMAND"
    (["asal", "--bogus", "target"], "error: workbench asal: unrecognized arguments: --bogus (see workbench asal "
                                    "--help)"),
    (["asal", "openended", "--substrate", "lenia", "--fm", "pixels", "--trust-pickle"],
     "--trust-pickle only applies to --resume ID"),
    (["asal", "openended", "--substrate", "boids", "--fm", "pixels", "--init", "random"],
     "--init random: boids has no random initialisation"),
    (["asal", "openended", "--substrate", "boids", "--fm", "dino", "--weights", "nowhere"],
     "--fm dino takes --weights FOLDER"),
    (["runs", "show", "some-run", "--tail", "0"], "argument --tail: give a whole number of at least 1, got 0"),
    (["runs", "compare", "some-run", "some-run"], "give different runs to compare: some-run is named more than once"),
    (["figure", "compare", "some-run", "--out", "c.png"], "give two or more runs to compare, got 1"),
    # each figure has the flags it reads: one it would ignore is refused (--dpi of a video, a curve's --metric)
    (["figure", "video", "some-run", "--out", "v.mp4", "--dpi", "5"], "figure video: unrecognized arguments: --dpi 5"),
    (["figure", "atlas", "some-run", "--out", "a.png", "--metric", "loss"], "unrecognized arguments: --metric loss"),
    # an illumination reads no loss weights and embeds the final state: these flags went unused, silently
    (["asal", "illuminate", "--substrate", "boids", "--fm", "pixels", "--c-oe", "5"],
     "illuminate: unrecognized arguments: --c-oe 5"),
    (["asal", "illuminate", "--substrate", "boids", "--fm", "pixels", "--frames", "16"],
     "illuminate: unrecognized arguments: --frames 16"),
    (["asal", "openended", "--substrate", "boids", "--fm", "pixels", "--c-softmax", "1"],
     "--c-softmax weighs a softmax loss over the targets: give --prompt TEXT or --target-image FILE"),
    (["asal", "target", "--substrate", "boids", "--fm", "pixels", "--prompt", "a", "--size", "1"],
     "--size must be at least 2 pixels, got 1"),
    (["asal", "openended", "--substrate", "boids", "--fm", "pixels", "--size", "6000"],
     "--size 6000: the frames the FM reads are at most 4096 pixels a side"),
    (["render", "boids", "--steps", "3", "--out", "x.png", "--size", "100000"],
     "argument --size: give a whole number from 2 to 8192 (pixels a side), got 100000"),
    (["asal", "illuminate", "--substrate", "boids", "--fm", "pixels", "--population", "100000000"],
     "--population 100000000: the GA's similarities of 100000032 members"),
    (["asal", "openended", "--substrate", "boids", "--fm", "pixels", "--steps", "10000000", "--frames", "10000000"],
     "--frames 10000000: the open-endedness loss over 16 × 1 rollouts needs about"),
    # GoL's GAs flip a rule's bits at 1/18: a --sigma was recorded, unused, and split comparisons of equal runs
    (["asal", "openended", "--substrate", "gol", "--fm", "pixels", "--sigma", "0.9"],
     "--sigma 0.9 does not apply to Game of Life"),
    # a --pop whose batch fits at no --frames: --pop is named (--frames 3 was, then --pop once that was followed)
    (["asal", "openended", "--substrate", "lenia", "--fm", "pixels", "--pop", "100000000"],
     "--pop 100000000: evaluating 100000000 θ of 3117 numbers each"),
    # the bench's foundation models, before ViT-B-32 is built (an unknown one was refused after; another open_clip
    # architecture was handed ViT-B-32's weights); frames beyond the memory free (the bench swapped, deaf to SIGTERM)
    (["bench", "asal", "--fm", "bogus"], "unknown foundation model --fm bogus"),
    (["bench", "asal", "--fm", "clip"], "--fm clip: the bench times pixels, efficientnet-lite0 and openclip:ARCH"),
    (["bench", "asal", "--iters", "0"], "argument --iters: give a whole number of at least 1, got 0"),
    (["bench", "fm", "--batch", "100000000"], "--batch 100000000: its frames and activations need about"),
    (["bench", "gpu", "--sections"], "argument --sections: expected at least one argument"),
    # bench namm's tasks and sections listed in its help and refused by argparse (the library's error came later)
    (["bench", "namm", "--tasks", "bogus"], "argument --tasks: invalid choice: 'bogus'"),
    (["bench", "namm", "--sections", "x"], "argument --sections: invalid choice: 'x'"),
    # from the CLI audit of 2026-12-07: the config's field named ("prompts must be non-empty text"), not the flag;
    # namm eval's --device checked after the tokenizer had loaded (15 s), and after a --model error
    (["asal", "target", "--substrate", "lenia", "--fm", "pixels", "--prompt", " "],
     "--prompt ' ': a prompt must be non-empty text"),
    (["namm", "eval", "--methods", "full", "--model", "nowhere", "--device", "tpu"], "--device tpu: not a device"),
    # from its follow-up (cli2): a missing zoo said as merge evolve says it, not with Python's "[Errno 2] …"; a
    # folder given for an image; namm eval's default methods that named namm, which always failed without a policy
    (["qd", "cycle", "--zoo", "nope"], "--zoo nope: no such folder, so no model in it; build a zoo there with"),
    (["experts", "generalist", "--zoo", "nope"], "--zoo nope: no such folder, so no model in it"),
    (["bench", "qd", "--zoo", "."], "--zoo . is not a model zoo (no zoo.json in it); build one with"),
    (["asal", "target", "--substrate", "lenia", "--fm", "pixels", "--target-image", "."],
     "--target-image . is a folder; give an image file in it"),
    (["namm", "eval", "--model", "nowhere"], "--model nowhere: unknown model"),
    # a mistyped --runs was made, and filled with a minute and a half of sample runs (as runs list, refused)
    (["screenshots", "--runs", "nope", "--pages", "home"], "--runs nope: no such folder, so no run store there"),
])
def test_bad_numbers_and_paths_are_one_clear_error_before_any_work(tmp_path, args, message):
    """Each said in one line before a model loads, a run folder is made or a benchmark starts (found by an
    audit: these were tracebacks, errors after the work, or messages naming Python fields)."""
    (tmp_path / "file.json").write_text("{}")
    res = run(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("error:") == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.json"]  # no runs/, zoo or merge written


def test_serve_refuses_a_port_in_use_before_it_says_serving():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        res = run("serve", "--port", str(port), "--runs", "runs")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == f"error: port {port} is in use (another server?); give another --port, e.g. " \
                                 f"--port {port + 1}"


def test_serve_reads_a_tilde_in_runs_as_the_run_store_does(tmp_path, monkeypatch):
    """`--runs=~/runs` (bash leaves a "~" after "=" alone): the run store read the home folder's runs, the NAMM page
    and serve's "does not exist yet" note a folder named "~" here. Every page is given the store's own folder."""
    import argparse

    from workbench.cli.serve import check_serve

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "runs").mkdir(parents=True)
    args = argparse.Namespace(runs="~/runs", address="127.0.0.1", port=0)
    check_serve(args)
    assert args.runs == str(tmp_path / "home" / "runs")
    args.runs = "plain/runs"
    check_serve(args)
    assert args.runs == "plain/runs"  # as given: the pages say the folder the researcher named


def test_serve_warns_that_an_address_beyond_this_machine_has_no_login():
    """--address 0.0.0.0 (or a LAN address) lets anyone who reaches the port drive the pages (start and remove runs,
    open files by path): serve says so, with the tunnel to use instead; 127.0.0.1 and localhost say nothing."""
    from workbench.cli.serve import exposure

    assert exposure("127.0.0.1", 5006) is None and exposure("localhost", 5006) is None
    said = exposure("0.0.0.0", 5006)
    assert said is not None and "no login" in said and "ssh -L 5006:localhost:5006" in said
    assert exposure("", 5006) is not None  # tornado binds '' on every interface


def test_progress_waits_for_the_run_to_start(monkeypatch):
    """The bar of a search appears when its run starts (on_start, or its first iteration); before that a transient
    spinner stands in, so an error in the set-up is alone on the screen and a run that is done draws nothing."""
    import io

    from rich.console import Console

    from workbench.cli import common

    def shown(body) -> str:
        out = io.StringIO()
        monkeypatch.setattr(common, "err", Console(file=out, force_terminal=True, width=100, markup=False))
        try:
            with common.iteration_progress("asal target", 3, "loss", lambda row: f"{row['loss']:.2f}") as tick:
                body(tick)
        except ValueError:
            pass
        return out.getvalue()

    def fails(tick):
        raise ValueError("bad input found while setting up")

    def runs(tick):
        tick.start(None)
        tick(1, 3, {"loss": 0.25})
        tick(3, 3, {"loss": 0.125})
        tick.phase("test scores of the baselines …")  # a run's end: the bar shows it while it lasts

    def fails_at_the_end(tick):
        runs(tick)
        raise ValueError("the baselines failed")

    assert "0/3" not in shown(fails) and "setting up" in shown(fails)   # the spinner, never the bar
    assert "0/3" not in shown(lambda tick: None)                         # a run done already: no bar
    last = shown(runs).rsplit("\r", 1)[-1]
    assert "3/3" in last and "loss 0.12" in last and "setting up" not in last and "baselines" not in last
    assert "loss test scores of the baselines" in shown(fails_at_the_end).rsplit("\r", 1)[-1]  # where it stopped
    # a resumed run: the count it goes on from at once (the spinner stood until its next iteration ended)
    resumed = shown(lambda tick: tick.resumed(2, 3, {"loss": 0.5})).rsplit("\r", 1)[-1]
    assert "2/3" in resumed and "loss 0.50" in resumed and "setting up" not in resumed, resumed


def test_the_qd_cycle_bar_counts_generations_and_is_told_a_resumed_cycles_generation():
    """`qd cycle`'s bar counts generations as --gens does (run_cycleqd's count has generation 0 too); its wrapper
    passed on the calls but not the bar's resumed(…), so a resumed cycle's bar read "setting up" until its next
    generation ended."""
    from workbench.cli.qd import by_generation

    calls = []

    def bar(done: int, total: int, row: dict) -> None:
        calls.append(("generation", done, total, row))

    bar.resumed = lambda done, total, row: calls.append(("resumed", done, total, row))
    on_generation = by_generation(bar)
    on_generation.resumed(3, 5, {"qd_score": 1.0})
    on_generation(4, 5, {"qd_score": 2.0})
    assert calls == [("resumed", 2, 4, {"qd_score": 1.0}), ("generation", 3, 4, {"qd_score": 2.0})]


def test_progress_off_a_terminal_says_the_set_up_and_the_count_now_and_then(monkeypatch):
    """Off a terminal (a batch job's log) rich draws the bar once, as it ends: a set-up longer than PLAIN_AFTER
    is said in a line, and the count at most every PLAIN_EVERY seconds; an error in the set-up has no "setting up"
    after it, and quick runs write no more than the bar at the end."""
    import io
    import time

    from rich.console import Console

    from workbench.cli import common

    outs = []

    def shown(body, after=0.05, every=0.0) -> list[str]:
        out = io.StringIO()
        outs.append(out)
        monkeypatch.setattr(common, "err", Console(file=out, force_terminal=False, width=100, markup=False))
        monkeypatch.setattr(common, "PLAIN_AFTER", after)
        monkeypatch.setattr(common, "PLAIN_EVERY", every)
        try:
            with common.iteration_progress("namm train", 3, "loss", lambda row: f"{row['loss']:.2f}") as tick:
                body(tick)
        except ValueError:
            pass
        time.sleep(0.2)  # a set-up line due after the block would be written by now
        return out.getvalue().splitlines()

    def quick(tick):
        tick(1, 3, {"loss": 0.25})
        tick(2, 3, {"loss": 0.2})
        tick(3, 3, {"loss": 0.125})

    def slow_set_up(tick):
        deadline = time.monotonic() + 30  # until the line is out (a loaded machine's timer thread runs late)
        while "setting up" not in outs[-1].getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        quick(tick)

    lines = shown(slow_set_up)
    assert lines[:3] == ["namm train: setting up …", "namm train 1/3 loss 0.25 0:00:00",
                         "namm train 2/3 loss 0.20 0:00:00"]
    assert len(lines) == 4 and "3/3 loss 0.12" in lines[3]  # the last: rich's bar
    assert shown(quick, after=5.0, every=5.0)[:-1] == []  # within both times: the bar alone

    def fails(tick):
        raise ValueError("bad input found while setting up")

    assert shown(fails, after=0.1) == []


def test_one_shot_work_shows_a_bar_on_a_terminal_only(monkeypatch):
    """Evaluations (zoo eval, experts eval, merge apply --eval) show "loading …" then a bar of prompts on a terminal;
    piped or in scripts, nothing but their JSON line."""
    import io

    from rich.console import Console

    from workbench.cli import common

    for terminal in (True, False):
        out = io.StringIO()
        monkeypatch.setattr(common, "err", Console(file=out, force_terminal=terminal, width=100, markup=False))
        with common.work_progress("zoo eval", 10, loading="smollm2") as advance:
            advance(4)
            advance(6)
        shown = out.getvalue()
        assert ("10/10" in shown.rsplit("\r", 1)[-1] and "loading smollm2" in shown) if terminal else shown == ""


def test_messages_keep_their_brackets(capsys):
    """Users' values in square brackets ("--tasks [add, sort]") were read by rich as markup and vanished."""
    from workbench.cli.common import say

    say("note", "tasks [add] and [sort, larger] (--range TASK LO HI])")
    assert capsys.readouterr().err == "note: tasks [add] and [sort, larger] (--range TASK LO HI])\n"


def test_unknown_substrate_is_rejected_with_choices():
    res = run("render", "gameoflife", "--steps", "3", "--out", "x.png")  # "gol" is one since issue 15
    assert res.returncode == 2 and "lenia" in res.stderr and "plife" in res.stderr and "flow_lenia" in res.stderr


def test_bench_prints_one_json_line():
    # the CPU's kernels by default, whatever WORKBENCH_ARCH says (=cuda on a machine without a GPU refused it)
    env = {} if __import__("torch").cuda.is_available() else {"WORKBENCH_ARCH": "cuda"}
    res = run("bench", "substrates", "--json", "--substrates", "boids", "--min-time", "0.05", env=env)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["device"] == "cpu" and data["backend"] in ("x64", "arm64")  # the CPU's Taichi kernels, said
    assert set(data["boids"]) >= {"steps_per_s_p1", "sim_steps_per_s_p16", "render_ms"}
    assert data["boids"]["steps_per_s_p1"] > 0


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the errors of a machine without a GPU")
@pytest.mark.parametrize("args, env, message", [
    (["render", "lenia", "--steps", "1", "--out", "x.png"], {"WORKBENCH_ARCH": "cuda"},
     "WORKBENCH_ARCH=cuda: torch sees no CUDA GPU; unset it or use --device cpu"),
    (["render", "lenia", "--steps", "1", "--out", "x.png"], {"WORKBENCH_ARCH": "tpu"},
     "WORKBENCH_ARCH='tpu' is not one of cpu, cuda, gpu, vulkan, metal"),
    (["render", "lenia", "--steps", "1", "--out", "x.png", "--device", "cuda"], {},
     "--device cuda: torch sees no CUDA GPU; use --device cpu"),
    (["asal", "target", "--substrate", "lenia", "--fm", "pixels", "--target-image", "t.png", "--device", "cuda:1"],
     {}, "--device cuda:1: torch sees no CUDA GPU; use --device cpu"),
    (["bench", "gpu"], {}, "workbench bench gpu needs a CUDA GPU"),
    (["bench", "asal", "--device", "cuda"], {}, "--device cuda: torch sees no CUDA GPU; use --device cpu"),
    (["bench", "substrates", "--device", "cuda"], {}, "--device cuda: torch sees no CUDA GPU; use --device cpu"),
    (["bench", "gpu", "--device", "cpu"], {}, "--device cpu: bench gpu times a CUDA GPU; give --device cuda"),
])
def test_a_gpu_asked_for_where_there_is_none_is_one_clear_error(tmp_path, args, env, message):
    res = run(*args, cwd=tmp_path, env=env)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("error:") == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr and list(tmp_path.iterdir()) == []


def _bare_python(folder: Path) -> Path:
    """A python3 that sees this environment's packages but has no workbench installed, as on the GPU image: a venv
    whose .pth names our site-packages as a plain path (its .pth files, the editable install's finder among them,
    are not read)."""
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([folder / "bin" / "python", "-c", where], check=True, capture_output=True,
                          text=True).stdout.strip()
    (Path(site) / "ours.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return folder / "bin"


def _tiny_wheel(folder: Path) -> None:
    """A wheel of nothing, for a kit: `.ci/bench-gpu` installs whatever .gpu/wheels holds."""
    import zipfile

    info = "gpukit_probe-0.0.0.dist-info"
    files = {f"{info}/METADATA": "Metadata-Version: 2.1\nName: gpukit-probe\nVersion: 0.0.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "gpukit_probe-0.0.0-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="on a GPU it would run the whole GPU check")
def test_the_gpu_script_runs_the_kits_workbench_not_the_working_trees(tmp_path):
    """`bash .ci/bench-gpu` on a machine with no workbench installed (the GPU image): `python3 -m` puts the working
    directory, the repository's root, first on sys.path, and its workbench/ has no kernels/ (it died at once on
    "No module named 'workbench.kernels'", the one device run lost). Here, without a GPU, it gets as far as the
    bench's own refusal."""
    import os
    import shutil

    root, tree = Path(__file__).resolve().parents[1], tmp_path / "tree"
    for part in ("workbench", "kernels", "simulations", "dashboards", "data", ".ci"):
        shutil.copytree(root / part, tree / part, ignore=shutil.ignore_patterns("__pycache__", "zoo", "zoo-quick"))
    _tiny_wheel(tree / ".gpu" / "wheels")
    env = {**os.environ, "PATH": f"{_bare_python(tmp_path / 'bare')}:{os.environ['PATH']}",
           "OUT": str(tmp_path / "out"), "WORKBENCH_SITE": str(tmp_path / "site")}
    env.pop("PYTHONPATH", None)
    res = subprocess.run(["bash", ".ci/bench-gpu"], cwd=tree, env=env, capture_output=True, text=True, timeout=300)
    log = (tmp_path / "out" / "gpu.log").read_text()
    assert "workbench bench gpu needs a CUDA GPU" in log and "Traceback" not in res.stdout + res.stderr, res.stderr
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert f"workbench from {tmp_path / 'site' / 'workbench'}" in res.stdout


def test_the_gpu_kit_refuses_a_bad_python_and_the_gpu_script_an_empty_kit_in_one_line(tmp_path):
    """`make gpu-kit GPU_PY=…` that pip cannot take was a traceback, and left an empty .gpu/wheels that
    `.ci/bench-gpu` took for a kit (pip then failed on the literal "*.whl", on the device's time)."""
    import shutil

    ci = Path(__file__).resolve().parents[1] / ".ci"
    res = subprocess.run([sys.executable, ci / "gpu-kit", "--python", "abc"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "error: argument --python: give the GPU machine's Python as 3.N, e.g. 3.12, got 'abc'" in res.stderr
    assert list(tmp_path.iterdir()) == []  # nothing emptied or made before the refusal
    shutil.copytree(ci, tmp_path / ".ci")
    (tmp_path / ".gpu" / "wheels").mkdir(parents=True)
    res = subprocess.run(["bash", ".ci/bench-gpu"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == "", res
    assert res.stderr.strip() == "no wheels in .gpu/wheels here: make the kit first (make gpu-kit) and bring .gpu along"


def test_a_gpu_kit_pip_cannot_download_leaves_the_kit_made_before(tmp_path):
    """`make gpu-kit` where pip reaches no package registry removed .gpu/ before its download failed: the kit made
    before, which still served the GPU machine, was lost. It is kept, and the refusal is one line."""
    import os

    old = tmp_path / ".gpu" / "wheels" / "old-0.0.0-py3-none-any.whl"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"the kit made before")
    res = subprocess.run([sys.executable, Path(__file__).resolve().parents[1] / ".ci" / "gpu-kit"], cwd=tmp_path,
                         env={**os.environ, "PIP_NO_INDEX": "1"}, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "error: pip could not download the kit's wheels for Python 3.12" in res.stderr, res.stderr
    assert res.stderr.rstrip().endswith(".gpu/ is as it was"), res.stderr
    assert old.read_bytes() == b"the kit made before" and [p.name for p in tmp_path.iterdir()] == [".gpu"]


def test_the_gpu_kit_refuses_a_python_with_more_after_it_and_outlives_a_half_kit_left_before(tmp_path):
    """From mutation sampling: --python 3.12x is refused as "abc" is (pip's own refusal came after the download
    began); a .gpu.new/ that a killed `make gpu-kit` left is made again, not a FileExistsError traceback."""
    import os

    kit = Path(__file__).resolve().parents[1] / ".ci" / "gpu-kit"
    res = subprocess.run([sys.executable, kit, "--python", "3.12x"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "give the GPU machine's Python as 3.N, e.g. 3.12, got '3.12x'" in res.stderr, \
        res.stderr
    (tmp_path / ".gpu.new" / "wheels").mkdir(parents=True)
    res = subprocess.run([sys.executable, kit], cwd=tmp_path, env={**os.environ, "PIP_NO_INDEX": "1"},
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "error: pip could not download the kit's wheels" in res.stderr and list(tmp_path.iterdir()) == [], \
        res.stderr


def test_bench_asal_prints_the_split_per_phase():
    res = run("bench", "asal", "--json", "--substrates", "boids", "--fm", "pixels", "--steps", "20", "--pop", "4",
              "--device", "cpu", "--iters", "2")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["unit"] == "ms per iteration (median of 2)"
    for k in (1, 8):
        row = data[f"boids/pixels/K{k}"]
        phases = {"ask", "decode", "simulate", "render", "embed", "thumbnails", "search"}
        assert set(row) == {"total", "other", *phases}
        assert row["simulate"] > 0 and row["decode"] > 0 and row["thumbnails"] > 0
        assert row["total"] >= sum(row[p] for p in phases) - 0.05  # medians of rounded ms: a little slack
    # the machine it was timed on, as docs/benchmarks.md records it ("x86_64" was all it said)
    cpu = data["machine"]
    assert cpu["cpu"] and cpu["cores"] >= 1 and cpu["memory_gib"] > 0, cpu
    import torch  # the GPU named where there is one (a CPU bench on a GPU machine names it too)

    assert cpu["gpu"] == (torch.cuda.get_device_name() if torch.cuda.is_available() else None), cpu
    assert cpu["versions"]["numpy"] == np.__version__ and cpu["versions"]["taichi"], cpu["versions"]
    assert set(cpu["cpu_flags"]) <= {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


def test_the_machine_line_reads_the_cpu_model_and_the_flags_timings_depend_on():
    from workbench.machine import _cpuinfo, _memory_gib

    text = ("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 sha_ni\n\n"
            "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    assert _cpuinfo(text) == ("AMD EPYC 9R14", ["avx2", "avx512f", "avx512_bf16"])
    assert _cpuinfo("") == (None, [])
    assert _memory_gib("MemTotal:       24641536 kB\nMemFree: 1 kB\n") == 23.5 and _memory_gib("") is None


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"), reason="needs Linux's CPU affinity")
def test_the_machine_line_counts_the_cores_this_process_may_use():
    """From mutation sampling: "cores" is what this process may use (a SLURM job's share, `taskset`'s), "cpus" the
    machine's; a process held to one core said the machine's count of both."""
    import os

    code = ("import json, os\nos.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
            "from workbench.machine import machine\nm = machine()\nprint(json.dumps([m['cores'], m['cpus']]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [1, os.cpu_count()], res.stdout


def test_bench_fm_times_plain_open_clip_and_ours_against_the_roof():
    """The FM benchmark at a small batch: the two towers agree, and each is given as images/s and as a fraction of
    the machine's fp32 GEMM roof (figures checked for their form, never for their speed)."""
    res = run("bench", "fm", "--json", "--batch", "2", "--repeats", "1", "--precision", "fp32")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["precision"] == "fp32" and data["repeats"] == 1 and data["min_cosine_vs_plain"] > 0.999
    assert data["plain_fp32_img_per_s"] > 0 and data["ours_img_per_s"] > 0 and data["roof_gflop_per_s"]["fp32"] > 0
    # the fraction is of the unrounded images/s (printed to 0.1, and to 0.001 itself): on a loaded machine, 0.84
    # images/s printed as 0.8 is 5 % off, so the check is the rounding's interval, not a relative tolerance
    per_s, roof = data["ours_img_per_s"], data["roof_gflop_per_s"]["fp32"]
    assert (per_s - 0.05) * 8.8 / roof - 0.0005 <= data["ours_fraction_of_roof"] <= (per_s + 0.05) * 8.8 / roof + 0.0005


def test_bench_fm_forced_to_bf16_without_bf16_instructions_has_its_roof(monkeypatch):
    """--precision bf16 on a CPU without bf16 instructions (AVX2 only): the roof of the dtype the model ran in is
    measured too (the bench died with a KeyError after all its timings); and bench output is JSON, which has no
    Infinity (a PSNR of bit-identical renders is infinite): non-finite numbers are null."""
    import workbench.fm
    from workbench.bench import bench_fm, finite

    monkeypatch.setattr(workbench.fm, "bf16_supported", lambda: False)
    out = bench_fm(batch=1, repeats=1, precision="bf16")
    assert out["precision"] in out["roof_gflop_per_s"] and out["ours_fraction_of_roof"] > 0, out
    assert finite({"psnr": [float("inf"), 30.5], "x": float("nan"), "n": 3}) == {"psnr": [None, 30.5], "x": None,
                                                                                "n": 3}


def test_help_and_argument_errors_import_no_heavy_library():
    """`workbench --help` and argparse errors answer at once: building the parser imports neither torch nor the
    library (checked by module, not by clock)."""
    code = ("import sys; from workbench.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'taichi', 'transformers', 'open_clip', 'panel') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_runs_list_imports_neither_the_models_nor_pandas(tmp_path):
    """`workbench runs list` reads run.json files into DuckDB: it answers without torch, transformers, pandas,
    pyarrow or NumPy (pyarrow's table from Python lists imported pandas, a third of the command's time)."""
    store = tmp_path / "runs"
    code = ("import sys; from workbench.cli import main; from workbench.runs import RunStore; "
            "run = RunStore(sys.argv[1]).create('merge', 'ties', 'a+b', {}, 0, metric='fitness'); "
            "run.update(status='done', best_loss=-0.5, iterations=2); "
            "assert main(['runs', 'list', '--json', '--runs', sys.argv[1]]) == 0; "
            "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'pyarrow', 'numpy') if m in sys.modules), "
            "file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code, str(store)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "[]", res.stderr
    rows = json.loads(res.stdout)
    assert [(r["kind"], r["best"], r["iterations"]) for r in rows] == [("merge", 0.5, 2)]


def test_cli_method_list_matches_the_library():
    from workbench.cli.merge import PS_METHODS
    from workbench.merge import evolution

    assert PS_METHODS == evolution.PS_METHODS
    # namm's are spelled out in the CLI so that --help needs no torch import
    from workbench.cli import namm as cli_namm
    from workbench.namm import saved, tasks, train

    assert cli_namm.TASK_NAMES == tuple(tasks.TASKS) and cli_namm.VARIANTS == saved.VARIANTS
    assert cli_namm.CMA_VARIANTS == train.CMA_VARIANTS and cli_namm.NORMALIZERS == train.NORMALIZERS


def test_asal_checks_the_fm_request_before_any_progress_bar(tmp_path):
    (tmp_path / "flock.png").write_text("not an image")
    res = run("asal", "target", "--substrate", "boids", "--fm", "efficientnet-lite0", "--target-image", "flock.png",
              "--iters", "1", "--runs", "runs", cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "--target-image flock.png: cannot read it as an image" in res.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    res = run("asal", "target", "--substrate", "boids", "--fm", "clip", "--prompt", "a flock", "--runs", "runs",
              cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2 and "offline, pass --weights FILE" in res.stderr, res.stderr


def test_merge_evolve_checks_models_before_a_bar_and_notes_a_quick_zoo(tmp_path, quick_zoo):
    res = run("merge", "evolve", "--zoo", str(quick_zoo), "--models", "nosuch", "sort", "--iters", "1",
              "--runs", "runs", "--device", "cpu", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [res.stderr.strip()], res.stderr
    assert "no model 'nosuch'" in res.stderr and "merge evolve" not in res.stderr  # no progress bar first
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    res = run("merge", "evolve", "--zoo", str(quick_zoo), "--models", "add", "sort", "--iters", "1", "--pop", "2",
              "--n-eval", "4", "--n-test", "4", "--runs", "runs", "--device", "cpu", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "quick smoke-test zoo" in res.stderr


# (screenshots without --runs: a --runs that does not exist is refused first; its sample runs go to a temporary
# folder, so no runs/ may appear)
@pytest.mark.parametrize("argv", [["screenshots", "--out", "shots"],
                                  ["bench", "dashboards", "--seconds", "1"]])
def test_the_commands_that_drive_chromium_say_playwright_is_missing(tmp_path, argv):
    """Playwright is in the dev extra only: from an installed wheel `workbench screenshots` and `workbench bench
    dashboards` ended in a ModuleNotFoundError traceback. One line naming the install now, before any run is made."""
    code = ("import sys\n"
            "sys.modules['playwright'] = None  # as where it is not installed: its import fails\n"
            "from workbench.entry import run\n"
            f"sys.argv = ['workbench', *{argv!r}]\n"
            "run()\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "Playwright, which the workbench installs only with its dev extra: pip install playwright" \
        in res.stderr, res.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "shots").exists()


def test_screenshots_say_in_one_line_that_their_server_failed(tmp_path):
    """The server `screenshots` starts exiting (or not answering) ended the command in a RuntimeError traceback:
    one error line now, exit 1, with the command that shows why. The server here is `false`, which exits at once
    as a server that cannot start would."""
    import shutil

    code = ("import sys\n"
            f"sys.executable = {shutil.which('false')!r}  # the interpreter screenshots starts the server with\n"
            "from workbench.entry import run\n"
            "sys.argv = ['workbench', 'screenshots', '--pages', 'lab', '--out', 'shots']\n"
            "run()\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("error: screenshots: workbench serve exited with 1; `workbench serve --runs "), \
        res.stderr
    assert res.stderr.rstrip().endswith("` shows why"), res.stderr


def test_screenshots_of_pages_in_chromium(tmp_path):
    res = run("asal", "illuminate", "--substrate", "boids", "--fm", "pixels", "--population", "8", "--pop", "4",
              "--steps", "10", "--iters", "2", "--runs", "runs", "--quiet", "--device", "cpu", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = run("screenshots", "--out", "shots", "--runs", "runs", "--pages", "home", "runs", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["shots/home.png", "shots/runs.png"]
    from PIL import Image

    for name in ("home", "runs"):
        img = np.asarray(Image.open(tmp_path / "shots" / f"{name}.png").convert("RGB"))
        assert img.shape[:2] == (900, 1440) and img.std() > 10  # a drawn page, not a blank one


@pytest.mark.parametrize("loaded", [False, True])
def test_a_ctrl_c_while_the_command_line_loads_ends_it_quietly(tmp_path, loaded):
    """A Ctrl-C in the second the command line takes to import and build its parser: exit 130, nothing printed
    (a KeyboardInterrupt traceback from inside an import, or from building the parser, before). The Ctrl-C is
    delivered as the interpreter delivers SIGINT (`_thread.interrupt_main`), 10 ms into the entry point: within
    the command line's imports, or (loaded: imported already) within building the parser or the command."""
    code = ("import _thread, sys, threading, time\n"
            "from workbench.entry import run\n"
            + ("import workbench.cli\n" if loaded else "")
            + "sys.argv = ['workbench', 'runs', 'list', '--runs', 'runs']\n"
            "threading.Thread(target=lambda: (time.sleep(0.01), _thread.interrupt_main()), daemon=True).start()\n"
            "run()\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         preexec_fn=_as_from_a_terminal)  # SIGINT as a terminal leaves it (`make test &` ignores it)
    assert (res.returncode, res.stderr) == (130, ""), res.stderr


def test_a_ctrl_c_that_lands_in_a_finaliser_still_stops_the_command():
    """Python drops a KeyboardInterrupt raised inside __del__ ("Exception ignored in …"): a Ctrl-C that landed in
    one while a model loaded was lost, and the command ran on to its end. The command line's hook raises it again."""
    code = ("import sys, time\n"
            "from workbench.cli import redeliver_interrupts\n"
            "sys.unraisablehook = redeliver_interrupts\n"
            "class Finalised:\n"
            "    def __del__(self):\n"
            "        raise KeyboardInterrupt\n"
            "try:\n"
            "    Finalised()\n"
            "    time.sleep(600)\n"  # a real signal cuts it short; a simulated one would wait (timeout)
            "    print('lost')\n"
            "except KeyboardInterrupt:\n"
            "    print('stopped')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         preexec_fn=_as_from_a_terminal)  # SIGINT as a terminal leaves it (`make test &` ignores it)
    assert (res.stdout, res.stderr) == ("stopped\n", ""), (res.stdout, res.stderr)


def test_every_command_says_what_it_does_atop_its_help():
    """38 of the 54 (sub)command --help pages showed only their usage and options: each opens with the line its
    parent's list gives it."""
    import argparse

    from workbench.cli import build_parser

    bare, twice = [], []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                listed = {a.dest: a.help for a in action._choices_actions}
                for name, child in action.choices.items():
                    if not (child.description or "").startswith(listed[name] or "\0"):
                        bare.append(" ".join([*path, name]))
                    # its own notes opening as the line put before them (namm train said its first words twice)
                    line, notes = listed[name] or "", child.description or ""
                    opening = " ".join(line.split()[:5])
                    if len(opening.split()) >= 3 and opening in notes[len(line):]:
                        twice.append(" ".join([*path, name]))
                    walk(child, [*path, name])

    walk(build_parser(), ["workbench"])
    assert bare == [] and twice == []


def test_every_argument_says_what_it_is():
    """56 arguments had no help, or help that gave only their default ("--seed default: 0", serve --port, the
    figures' run ids, `view`'s substrate): each says what it is; the formatter adds the default."""
    bare = []
    for command, parser in _every_parser():
        for action in _arguments(parser):
            text = (action.help or "").strip()
            if not text or text.lower().startswith("default"):
                bare.append(" ".join([*command.split(), action.option_strings[-1] if action.option_strings
                                      else action.dest]))
    assert bare == []


def test_every_command_on_dask_says_workers_and_dask_alike():
    """--workers / --dask were added by five commands with five texts ("start a Dask LocalCluster", "evaluate on a
    local Dask cluster"): each says what it sends there, in one wording (cli.common.add_dask_arguments)."""
    found = {}
    for command, parser in _every_parser():
        options = {o: a for a in _arguments(parser) for o in a.option_strings}
        if "--workers" in options and "--dask" in options:
            found[command] = (options["--workers"].help, options["--dask"].help)
    assert {"asal target", "asal openended", "asal illuminate", "asal sweep", "merge evolve", "qd cycle",
            "namm train"} <= set(found), sorted(found)
    for command, (workers, dask) in found.items():
        what = workers.removeprefix("evaluate ").split(" on a local Dask cluster")[0]
        assert workers == f"evaluate {what} on a local Dask cluster (LocalCluster) of N workers", command
        assert dask == f"evaluate {what} on an existing Dask scheduler, e.g. tcp://host:8786", command


def test_a_stop_signal_while_taichi_decorates_the_kernels_is_not_lost(tmp_path):
    """Taichi's kernel decorators look up frames inside a bare `except: pass`: a SIGTERM (or Ctrl-C) landing there,
    1.8 s of a cold kernel import's 2.2, was swallowed, and `render` (a search, a resume) ran to its end and exited
    0. The signal is sent from inside Taichi's first such lookup: the command stops, exit 143, and writes
    nothing."""
    out = tmp_path / "x.png"
    script = textwrap.dedent(f"""
        import inspect, os, signal, sys
        real = inspect.getframeinfo
        def sending(*args, **kwargs):  # Taichi's first frame lookup sends the stop signal
            if sys._getframe(1).f_globals.get("__name__", "").startswith("taichi."):
                inspect.getframeinfo = real
                os.kill(os.getpid(), signal.SIGTERM)
            return real(*args, **kwargs)
        inspect.getframeinfo = sending
        sys.argv = ["workbench", "render", "plenia", "--steps", "5", "--size", "16", "--out", {str(out)!r}]
        from workbench.cli import run
        run()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 143, (proc.returncode, proc.stderr[-2000:])
    assert not out.exists()


def test_the_top_options_abbreviated_still_work(capsys):
    """`workbench --vers` is --version's (argparse's abbreviations), not an unknown flag as `workbench --bogus` is."""
    from workbench.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--vers"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("workbench ")


def test_json_text_is_standard_json_for_numpy_torch_and_non_finite_values():
    """What a command prints: non-finite floats as null wherever they sit (NumPy and torch scalars too, which
    json.dumps wrote as NaN or refused), a non-finite key as the text json.dumps gave it."""
    import math

    import torch

    from workbench.cli.common import json_text

    text = json_text({"a": np.float32("nan"), "b": torch.tensor(1.5), "c": np.int64(3), "d": np.bool_(True),
                      "e": [math.inf, (np.float64(-math.inf), 0.25)], math.nan: 1}, default=str)
    assert json.loads(text, parse_constant=lambda name: pytest.fail(name)) == {
        "a": None, "b": 1.5, "c": 3, "d": True, "e": [None, [None, 0.25]], "NaN": 1}


def _as_bash_splits(command: str, cwd: Path) -> list[str]:
    """The words bash makes of `command` pasted at its prompt (quotes, $, ;, ~ as bash reads them)."""
    res = subprocess.run(["bash", "-c", f"printf '%s\\0' {command}"], cwd=cwd, capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout.split("\0")[:-1]


def test_the_resume_command_of_an_awkward_run_store_pastes_into_bash(tmp_path):
    """A run store named "-dash" (typed --runs=-dash) printed `--runs -dash`, which argparse refuses ("expected one
    argument"). The resume command, pasted into bash as printed, goes on with its run where it is: quotes, $, ; and
    non-ASCII letters in the store's name too."""
    from PIL import Image

    from workbench.runs import RunStore

    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "t.png")
    search = ["asal", "target", "--substrate", "boids", "--fm", "pixels", "--target-image", "t.png", "--pop", "2",
              "--steps", "4", "--size", "32", "--device", "cpu", "--quiet"]
    name = "-é日本'q\"$x;y"  # every awkward character in one store (a space would hide the dash from argparse)
    res = run(*search, "--iters", "1", f"--runs={name}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    made = json.loads(res.stdout)
    RunStore(tmp_path / name).open(made["id"]).update(status="stopped")  # as a Ctrl-C leaves it
    res = run("runs", "show", made["id"], f"--runs={name}", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    command = json.loads(res.stdout)["resume_command"]
    words = _as_bash_splits(command, tmp_path)
    assert words[0] == "workbench", command
    res = run(*words[1:], "--iters", "2", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, (command, res.stderr)
    resumed = json.loads(res.stdout)
    assert (resumed["path"], resumed["iterations"]) == (str(tmp_path / name / made["id"]), 2), command


def test_a_run_store_named_tilde_here_is_not_the_home_folder(tmp_path):
    """`--runs ./~` names a folder "~" here; pathlib drops the "./", and the store was the home folder itself (runs
    written, listed and removed there). Its resume command names the folder here, as bash reads it."""
    from workbench.runs import RunStore

    home = tmp_path / "home"
    home.mkdir()
    run_id = RunStore(tmp_path / "~").create("target", "boids", "pixels", {}, 0).update(status="stopped")["id"]
    res = run("runs", "show", run_id, "--runs", "./~", "--json", cwd=tmp_path, env={"HOME": str(home)})
    assert res.returncode == 0, res.stderr
    command = json.loads(res.stdout)["resume_command"]
    assert _as_bash_splits(command, tmp_path)[-2:] == ["--runs", str(tmp_path / "~")], command


def test_the_zoo_build_an_error_names_pastes_into_bash(tmp_path):
    """`--zoo` of a folder with quotes, spaces and $ in its name: the `workbench zoo build --out …` the error names
    was the path as it is (`--out no zoo 'é" $x`), which bash splits and expands; now it is quoted."""
    for name, made in (("no zoo 'é\" $x", False), ("-not a zoo 'x", True)):
        if made:  # a folder without the models: lm.models' message, not the merge command's own
            (tmp_path / name).mkdir()
        res = run("merge", "evolve", "--zoo", f"./{name}" if made else name, "--models", "add", "sort",
                  "--iters", "1", "--runs", "runs", cwd=tmp_path)
        assert res.returncode == 2, res.stderr
        command = res.stderr.split("`")[1]
        assert command.startswith("workbench zoo build --out "), res.stderr
        assert _as_bash_splits(command, tmp_path)[4:] == [f"./{name}" if made else name], command


def test_a_save_share_out_of_its_range_is_one_error_before_any_work(tmp_path):
    """WORKBENCH_SAVE_SHARE (how much of a run's time its saves may take) outside (0, 1] is said at once, naming the
    variable and its range, before a model loads or a run folder is made (not after a search's set-up)."""
    from PIL import Image

    Image.new("RGB", (8, 8), "green").save(tmp_path / "target.png")
    for value in ("0", "2", "often"):
        res = run("asal", "target", "--substrate", "lenia", "--fm", "pixels", "--target-image", "target.png",
                  "--iters", "1", cwd=tmp_path, env={"WORKBENCH_SAVE_SHARE": value})
        assert res.returncode == 2 and res.stderr.strip() == (
            f"error: WORKBENCH_SAVE_SHARE={value}: give the share of a run's time its saves may take, above 0 and at "
            "most 1 (1: a save after every iteration), or unset it for 0.1"), res.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["target.png"]  # no run store made
    helped = run("asal", "target", "--help", cwd=tmp_path, env={"WORKBENCH_SAVE_SHARE": "often"})
    assert helped.returncode == 0 and "--target-image" in helped.stdout, helped.stderr  # the help still reads

def test_a_run_folder_typed_as_a_path_names_its_run_or_the_runs_flag_it_needs(tmp_path):
    """`runs show other/ID`, as tab completion gives a run: taken for an id, it was "no run 'other/ID' in runs", with
    no word of --runs. A folder of the store opened is its run; one of another store is refused naming its --runs."""
    from workbench.runs import RunStore

    made = RunStore(tmp_path / "other").create("target", "lenia", "pixels", {}, 0)
    shown = run("runs", "show", f"other/{made.id}/", "--runs", "other", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == made.id
    for args in (["runs", "show", f"other/{made.id}"], ["figure", "curves", f"other/{made.id}", "--out", "c.png"]):
        res = run(*args, cwd=tmp_path)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert res.stderr.strip() == f"error: other/{made.id} is a run of another run store: give its id {made.id} " \
                                     "with --runs other"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]  # no runs/ made for the path taken for an id


def test_the_device_flag_says_its_resume_rule_after_its_default():
    """--device's help read "(default: the GPU when torch sees one, else the CPU) (with --resume: the run's own)",
    two parentheses side by side, in five commands: the resume rule follows the default after a semicolon."""
    doubled = [command for command, parser in _every_parser() if ") (with --resume" in
               " ".join(parser.format_help().split())]
    assert doubled == []
    resumed = " ".join(run("merge", "evolve", "--help").stdout.split())
    assert "else the CPU); with --resume: default the run's own" in resumed


def test_screenshots_make_sample_runs_only_for_the_pages_that_show_runs(tmp_path):
    """`screenshots --pages lab` made six sample runs (a minute and a half) that no page of its showed: only the
    pages that show the store's runs want them, and only while the store has none."""
    from workbench.dashboards.screenshots import needs_sample_runs
    from workbench.runs import RunStore

    empty = tmp_path / "empty"
    for pages in (["lab"], ["search"], ["namm"], ["lab", "search", "namm"]):
        assert not needs_sample_runs(pages, empty), pages
    for pages in (["home"], ["runs"], ["lab", "atlas"], ["merge"], ["qd"], ["experts"]):
        assert needs_sample_runs(pages, empty), pages
    RunStore(tmp_path / "full").create("target", "lenia", "pixels", {}, 0)
    assert not needs_sample_runs(["home", "runs"], tmp_path / "full")


def test_help_metavars_are_upper_case_and_one_name_for_one_thing():
    """From the CLI audit: `merge apply` showed `recipe` and `qd archive` `path` where every other positional is
    upper case; `merge evolve --models MODELS --tasks TASKS` where the others show TASK; `bench qd --workers
    WORKERS` where the others show N; the figures' --width gave 3.25 twice."""
    found = []
    for command, parser in _every_parser():
        for action in _arguments(parser):
            shown = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
            if not action.option_strings and not shown.isupper():
                found.append((command, shown))
            if "--workers" in action.option_strings and shown != "N":
                found.append((command, f"--workers {shown}"))
            if {"--tasks", "--models"} & set(action.option_strings) and action.choices is None \
                    and shown not in ("TASK", "MODEL"):
                found.append((command, f"{action.option_strings[0]} {shown}"))
    assert found == []
    for name in ("curves", "compare", "atlas", "frames"):
        page = " ".join(run("figure", name, "--help").stdout.split())
        assert page.count("3.25") == 1, (name, page)
    methods = " ".join(run("namm", "eval", "--help").stdout.split())
    assert "methods scored (default: all; namm only with --policy or --run)" in methods


def test_asal_says_how_many_candidates_diverged(tmp_path):
    """A candidate whose simulation blew up (Particle Lenia at θ of 100 σ) is ranked last and counted in the
    metrics' `diverged`: the command says so too, with the run's total and the flag that keeps θ in range, and
    says nothing of it where none diverged."""
    import pyarrow.parquet as pq
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "black.png")
    said = {}
    for sigma in ("100", "0.1"):
        res = run("asal", "target", "--substrate", "plenia", "--fm", "pixels", "--target-image", "black.png",
                  "--sigma", sigma, "--iters", "2", "--pop", "4", "--steps", "20", "--size", "32", "--runs",
                  f"runs-{sigma}", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        path = json.loads(res.stdout)["path"]
        said[sigma] = (res.stderr, sum(pq.read_table(f"{path}/metrics.parquet").column("diverged").to_pylist()))
    stderr, total = said["100"]
    assert total > 0
    assert (f"warning: {total} candidate(s) of this run diverged (NaN or inf in a simulation) and were ranked last"
            in stderr and "a smaller --sigma" in stderr), stderr
    assert said["0.1"][1] == 0 and "diverged" not in said["0.1"][0], said["0.1"][0]


def test_a_figure_with_a_home_that_cannot_be_written_says_nothing_of_matplotlibs_folders(tmp_path):
    """HOME on a folder that cannot be made (a cluster job's or a container's HOME=/nonexistent, a read-only
    home): every figure command printed Matplotlib's two-paragraph warning ("mkdir -p failed …", "Matplotlib
    created a temporary cache directory …") above its output. Here HOME lies under a file: not even root makes it."""
    from PIL import Image

    Image.new("RGB", (8, 8), "green").save(tmp_path / "t.png")
    made = run("asal", "target", "--substrate", "boids", "--fm", "pixels", "--target-image", "t.png", "--pop", "2",
               "--steps", "4", "--size", "32", "--device", "cpu", "--quiet", "--iters", "2", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    (tmp_path / "a-file").touch()
    res = run("figure", "curves", json.loads(made.stdout)["id"], "--out", "c.png", cwd=tmp_path,
              env={"HOME": str(tmp_path / "a-file" / "home")},
              unset=("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR"))
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert res.stdout.strip() == "c.png" and (tmp_path / "c.png").stat().st_size > 0


def test_a_utf8_run_store_name_under_an_ascii_locale_names_the_locale_not_the_name(tmp_path):
    """`LC_ALL=C` with PYTHONUTF8=0 (Python's file names then ASCII): a store named "runs-é" was refused as "the
    folder's name is not UTF-8 text", which it is; the error names the locale and what to set. A fresh process:
    the file system's encoding is fixed as Python starts."""
    import os

    from PIL import Image

    Image.new("RGB", (8, 8), "green").save(tmp_path / "t.png")
    env = {**os.environ, "LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    res = subprocess.run([sys.executable, "-m", "workbench", "asal", "target", "--substrate", "lenia", "--fm",
                          "pixels", "--target-image", "t.png", "--iters", "1", "--runs", "runs-é"], env=env,
                         cwd=tmp_path, capture_output=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.decode().strip() == (
        "error: --runs runs-\\xe9: Python reads file names as ascii in this locale, and a run's tables cannot be "
        "written under a name it cannot read; set a UTF-8 locale (LC_ALL=C.UTF-8) or PYTHONUTF8=1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.png"]
