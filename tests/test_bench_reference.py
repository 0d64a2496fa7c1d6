"""The reference implementation timed beside ours (workbench.bench_reference): the ratios, the refusals, and — where
JAX and a checkout of SakanaAI/asal are at hand (WORKBENCH_REFERENCE=DIR) — the timing itself."""

import os

import pytest

from workbench.bench_reference import check_reference, ratios


def test_ratios_are_ours_over_theirs_and_faster_is_above_one_for_renders_too():
    ours = {"lenia": {"steps_per_s_p1": 800.0, "render_ms": 0.5}, "boids": {"steps_per_s_p1": 10.0}}
    theirs = {"jax": "0.10", "lenia": {"P1": 400.0, "render_ms_p1": 1.0}, "boids": {"P1": 0, "P1_error": "OOM"},
              "flow_lenia": {"skipped": "not in the reference implementation"}}
    got = ratios(ours, theirs, {"steps_per_s_p1": "P1", "render_ms": "render_ms_p1"})
    assert got == {"lenia": {"steps_per_s_p1": 2.0, "render_ms": 2.0}}  # a failed size gives no ratio
    assert ratios({"lenia": {"P16": 30.0}}, {"lenia": {"P16": 10.0}}) == {"lenia": {"P16": 3.0}}


def test_a_folder_that_is_not_the_reference_is_refused_naming_the_flag(tmp_path):
    with pytest.raises(ValueError, match=r"--reference .*: not a checkout of the reference implementation .*"
                                         r"github.com/SakanaAI/asal"):
        check_reference(tmp_path)


@pytest.mark.skipif(not os.environ.get("WORKBENCH_REFERENCE"),
                    reason="set WORKBENCH_REFERENCE to a checkout of SakanaAI/asal (with jax, flax, einops) to time it")
def test_the_reference_is_timed_at_each_size():
    from workbench.bench_reference import reference_rates

    got = reference_rates(os.environ["WORKBENCH_REFERENCE"], {"boids": (1, 2), "flow_lenia": (1,)},
                          {"boids": 5}, min_time=0.01)
    assert got["boids"]["P1"] > 0 and got["boids"]["P2"] > 0 and got["boids"]["render_ms_p1"] > 0
    assert "skipped" in got["flow_lenia"] and got["backend"] in ("cpu", "gpu", "cuda")
