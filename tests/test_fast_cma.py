"""FastCMA against the installed cmaes' CMA: the same draws, means, step sizes and covariances, bit for bit."""

import json

import numpy as np
import pytest
from cmaes import CMA

from workbench.checkpoint import cmaes_from_state, cmaes_state, fresh_cmaes, pack, unpack
from workbench.fast_cma import FastCMA, as_fast_cma


def _assert_same_state(a, b, where):
    assert set(vars(a)) == set(vars(b)), where
    for key, va in vars(a).items():
        vb = getattr(b, key)
        if key == "_rng":
            assert va.get_state()[1].tolist() == vb.get_state()[1].tolist(), where
        elif isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
            assert va is None and vb is None or np.array_equal(va, vb), (where, key)
        else:
            assert va == vb, (where, key, va, vb)


@pytest.mark.parametrize(("n", "pop", "gens", "bounded"), [(40, 10, 25, False), (6, 32, 40, False),
                                                          (150, 12, 4, False), (5, 8, 30, True), (1, 16, 20, False)])
def test_fast_cma_is_cmaes_cma_bit_for_bit(n, pop, gens, bounded):
    """Noisy shifted sphere: the worse half's negative (active) weights, σ moving both ways; with bounds the
    library's resampling goes through FastCMA's sampler too."""
    kwargs = dict(mean=np.full(n, 0.5 if bounded else 0.0), sigma=0.4, population_size=pop, seed=7,
                  bounds=np.array([[0.0, 1.0]] * n) if bounded else None)
    ours, theirs = fresh_cmaes(FastCMA(**kwargs)), fresh_cmaes(CMA(**kwargs))
    noise = np.random.default_rng(0)
    for g in range(gens):
        xs = [ours.ask() for _ in range(pop)]
        np.testing.assert_array_equal(np.stack(xs), np.stack([theirs.ask() for _ in range(pop)]), err_msg=f"gen {g}")
        values = [float(np.sum((x - 0.8) ** 2) + 0.1 * noise.normal()) for x in xs]
        ours.tell(list(zip(xs, values, strict=True)))
        theirs.tell(list(zip([x.copy() for x in xs], values, strict=True)))
        _assert_same_state(ours, theirs, f"after generation {g}")
    assert ours._sigma != kwargs["sigma"]


def test_the_h_sigma_stall_takes_the_same_branch():
    """A linear slope drives p_σ long, so h_σ = 0 (the rank-one update's correction term) at some generation."""
    ours, theirs = (fresh_cmaes(c(mean=np.zeros(3), sigma=0.3, population_size=6, seed=1)) for c in (FastCMA, CMA))
    stalled = 0
    for _ in range(12):
        xs = [ours.ask() for _ in range(6)]
        assert all(np.array_equal(x, theirs.ask()) for x in xs)
        values = [float(x[0]) for x in xs]
        before = ours._pc.copy()
        ours.tell(list(zip(xs, values, strict=True)))
        theirs.tell(list(zip(xs, values, strict=True)))
        decay = (1 - ours._cc) * before
        stalled += np.allclose(ours._pc, decay)  # h_σ = 0: p_c only decays
        _assert_same_state(ours, theirs, "slope")
    assert stalled > 0


def test_fast_cma_checkpoints_and_continues_bit_for_bit():
    opt = fresh_cmaes(FastCMA(mean=np.zeros(12), sigma=0.3, population_size=6, seed=2))
    for _ in range(3):
        xs = [opt.ask() for _ in range(6)]
        opt.tell([(x, float(np.sum(x ** 2))) for x in xs])
    packed, arrays = pack(cmaes_state(opt))  # as a checkpoint holds it: strict JSON and arrays
    clone = cmaes_from_state(unpack(json.loads(json.dumps(packed, allow_nan=False)), arrays))
    assert type(clone) is FastCMA
    np.testing.assert_array_equal(np.stack([opt.ask() for _ in range(6)]), np.stack([clone.ask() for _ in range(6)]))
    # a checkpoint of cmaes' CMA (a --cma full run from before FastCMA) goes on as FastCMA, the same numbers
    old = fresh_cmaes(CMA(mean=np.zeros(12), sigma=0.3, population_size=6, seed=2))
    for _ in range(2):
        xs = [old.ask() for _ in range(6)]
        old.tell([(x, float(np.sum(x ** 2))) for x in xs])
    packed, arrays = pack(cmaes_state(old))  # (copies: a checkpoint's arrays are read from its file)
    resumed = as_fast_cma(cmaes_from_state(unpack(json.loads(json.dumps(packed)), {k: v.copy() for k, v in
                                                                                   arrays.items()})))
    assert type(resumed) is FastCMA and as_fast_cma(opt) is opt
    for _ in range(2):
        xs = [old.ask() for _ in range(6)]
        assert all(np.array_equal(x, resumed.ask()) for x in xs)
        values = [float(np.sum(x ** 2)) for x in xs]
        old.tell(list(zip(xs, values, strict=True)))
        resumed.tell(list(zip(xs, values, strict=True)))
        _assert_same_state(resumed, old, "resumed")


def test_namm_full_covariance_is_fast_cma_and_lr_adapt_is_refused():
    from workbench.namm.train import NAMMTrainConfig, new_search

    assert type(new_search(NAMMTrainConfig(cma="full", pop=4))) is FastCMA
    with pytest.raises(ValueError, match="lr_adapt"):
        FastCMA(mean=np.zeros(3), sigma=0.1, lr_adapt=True)
    with pytest.raises(ValueError, match="lr_adapt"):  # positionally too
        FastCMA(np.zeros(3), 0.1, None, 100, 0, None, None, True)


def test_sigma_is_capped_where_cmaes_caps_it():
    """Steps far out (near cmaes' mean limit) from a σ near its cap: σ stops at cmaes' _SIGMA_MAX, as CMA's does."""
    from cmaes._cma import _SIGMA_MAX

    ours, theirs = (fresh_cmaes(c(mean=np.zeros(2), sigma=1.0, seed=0)) for c in (FastCMA, CMA))
    for opt in (ours, theirs):
        opt._sigma = 0.9 * _SIGMA_MAX
        xs = [np.full(2, 0.99e32 * (1 if k % 2 else 0.98)) for k in range(opt.population_size)]
        opt.tell([(x, -float(k)) for k, x in enumerate(xs)])
    assert ours._sigma == theirs._sigma == _SIGMA_MAX
    _assert_same_state(ours, theirs, "capped")


def test_a_cma_with_learning_rate_adaptation_is_left_as_cmaes_cma():
    """as_fast_cma turns a restored cmaes CMA into a FastCMA only where FastCMA does what it did: one adapting its
    learning rate (which FastCMA does not carry) stays a CMA."""
    adapting = CMA(mean=np.zeros(3), sigma=0.1, lr_adapt=True, seed=0)
    assert type(as_fast_cma(adapting)) is CMA
    assert type(as_fast_cma(CMA(mean=np.zeros(3), sigma=0.1, seed=0))) is FastCMA
