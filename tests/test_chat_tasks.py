"""The chat-model task `larger` (workbench.lm.chat_tasks): its examples, its registration beside the zoo's tasks
(held-out split, expert training, chat prompt) and the CLI accepting it. No SmolLM2 here (docs/benchmarks.md)."""


import numpy as np
import pytest
from forked import run

from workbench.lm.chat_tasks import LARGER, sample_larger
from workbench.lm.tasks import PRETRAIN_TASKS, TASKS, draw, get_task, heldout, is_eval_prompt, stream


def test_larger_examples_have_one_exact_answer():
    examples = sample_larger(np.random.default_rng(0), 500)
    assert examples == sample_larger(np.random.default_rng(0), 500)  # seeded
    for prompt, answer in examples:
        a, b = (int(x) for x in prompt.split(" "))
        assert a != b and 0 <= min(a, b) and max(a, b) <= 99
        assert answer == str(max(a, b))
    firsts = [int(p.split(" ")[0]) > int(p.split(" ")[1]) for p, _ in examples]
    assert 0.4 < np.mean(firsts) < 0.6  # the larger number is first about half the time: no positional shortcut
    budget = get_task(LARGER).max_new_tokens
    assert budget >= max(len(a) for _, a in examples) + 1  # two digits + eos fit


def test_larger_is_registered_outside_the_zoo_with_a_held_out_split():
    assert LARGER not in TASKS and LARGER not in PRETRAIN_TASKS  # the zoo and its data are unchanged
    test = heldout(LARGER, 64, 0)
    assert test == heldout(LARGER, 64, 0) and all(is_eval_prompt(p) for p, _ in test)
    train = draw(LARGER, 256, stream(0, LARGER, "train"), "train")
    assert not {p for p, _ in train} & {p for p, _ in test}


def test_larger_trains_an_expert_in_the_chat_format():
    from workbench.experts.train import check_expert_task, format_prompt
    from workbench.lm.tasks import make_tokenizer

    assert check_expert_task(LARGER) == LARGER
    with pytest.raises(ValueError, match="larger"):
        check_expert_task("largest")
    tok = make_tokenizer()
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    text = format_prompt(tok, LARGER, "12 7", "chat")
    assert text.startswith("<system>Answer with the larger of the two numbers.\n")
    assert text.endswith("<user>12 7\n<assistant>")
    shots = [line for line in text.splitlines() if line.startswith("<assistant>") and len(line) > len("<assistant>")]
    assert len(shots) == 3 and all(s[len("<assistant>"):].isdigit() for s in shots)  # demonstrations answered


def test_cli_offers_larger():
    out = run("experts", "train", "--task", "largest", timeout=120)
    assert out.returncode == 2 and "'larger'" in out.stderr


def test_larger_needs_the_chat_format():
    from workbench.experts.adapt import AdaptConfig
    from workbench.experts.run import ExpertRunConfig

    with pytest.raises(ValueError, match="--prompt-format chat"):
        ExpertRunConfig(model="smollm2", task=LARGER)
    assert ExpertRunConfig(model="smollm2", task=LARGER, prompt_format="chat").task == LARGER
    for kwargs in ({"tasks": [LARGER, "sort"]}, {"target": LARGER}):
        with pytest.raises(ValueError, match="--prompt-format chat"):
            AdaptConfig(model="smollm2", experts=["e.safetensors"], **kwargs)
        assert AdaptConfig(model="smollm2", experts=["e.safetensors"], prompt_format="chat", **kwargs)


def test_an_unknown_prompt_format_is_one_error_naming_the_flag():
    from workbench.experts.adapt import AdaptConfig
    from workbench.experts.run import ExpertRunConfig

    with pytest.raises(ValueError, match="--prompt-format must be one of plain, chat, got 'json'"):
        ExpertRunConfig(model="smollm2", task="sort", prompt_format="json")
    with pytest.raises(ValueError, match="--prompt-format must be one of plain, chat, got 'json'"):
        AdaptConfig(model="smollm2", experts=["e.safetensors"], prompt_format="json")


def test_prompt_dispatch_names_the_mixed_sets_tasks():
    from workbench.experts.adapt import OTHER, instruction_prompt, parse_label

    text = instruction_prompt("37 85", [LARGER, "sort"])
    head, *examples, last = text.splitlines()
    assert head == "Name the task of each puzzle (larger, sort)."
    assert [e.rsplit(" -> ", 1)[1] for e in examples] == [LARGER, "sort"] and last == "37 85 ->"
    assert examples[0].split(" -> ")[0].count(" ") == 1  # a larger prompt: two numbers
    assert "larger" not in instruction_prompt("s:cab=")  # default: the zoo's tasks
    assert parse_label(" larger.", [LARGER, "sort"]) == LARGER
    assert parse_label("larger", None) == OTHER and parse_label("sort, since", None) == "sort"


def test_cli_adapt_offers_larger_only_with_the_chat_format(tmp_path):
    (tmp_path / "e.safetensors").write_bytes(b"")  # refused for its settings before the file is read
    out = run("experts", "adapt", "--model", "smollm2", "--experts", str(tmp_path / "e.safetensors"), "--tasks",
              "larger", "sort", "--runs", str(tmp_path), timeout=120)
    assert out.returncode == 2, out.stderr
    assert "--prompt-format chat" in out.stderr and "invalid choice" not in out.stderr
