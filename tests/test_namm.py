"""NAMM (spec §3): every public function against NumPy written from the spec, the policy against a NumPy
re-implementation of a whole multi-layer run, and the evicting cache in tiny random Llamas (GQA) against
transformers' own full-cache decoding and against full forwards that mask out exactly the evicted tokens."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from workbench.namm import (
    H2O,
    N_PARAMS,
    EvictionCache,
    FullCache,
    NAMMPolicy,
    RecentWindow,
    RunningStats,
    age_embedding,
    bam_scores,
    ema_update,
    generate,
    offsets,
    select_tokens,
    stft_magnitudes,
)

GAMMA = 0.99
F32_MIN = float(np.finfo(np.float32).min)


# ---------------------------------------------------------------- NumPy references, written from the spec
def np_hann() -> np.ndarray:
    n = np.arange(32)
    return 0.5 - 0.5 * np.cos(2 * np.pi * n / 32)  # periodic: divides by 32, not 31


def np_stft(series: np.ndarray) -> np.ndarray:
    """(..., 16 + n) -> (..., F, 17): frame f = series[16f : 16f + 32]."""
    n_frames = (series.shape[-1] - 16) // 16
    return np.stack([np.abs(np.fft.rfft(series[..., 16 * f: 16 * f + 32] * np_hann()))
                     for f in range(n_frames)], axis=-2)


def np_ema(mag: np.ndarray, n_new: int, prev: np.ndarray | None) -> np.ndarray:
    """mag (H, F, T, 17) -> (H, T, 17), the spec's formula token by token."""
    n_heads, n_frames, n_tokens, _ = mag.shape
    n_old, a = n_tokens - n_new, GAMMA ** 16
    out = np.zeros((n_heads, n_tokens, 17))
    for t in range(n_tokens):
        for f in range(n_frames):
            m = 1.0 if t < n_old else float((t - n_old) // 16 <= f)
            out[:, t] += a ** (n_frames - 1 - f) * (1 - a) * m * mag[:, f, t]
        if t < n_old and prev is not None:
            out[:, t] += GAMMA ** n_new * prev[:, t]
    return out


def np_age(ages) -> np.ndarray:
    omega = 50000.0 ** (-np.arange(4) / 4)
    angle = np.asarray(ages, dtype=np.float64)[..., None] * omega
    return np.concatenate([np.sin(angle), np.cos(angle)], axis=-1)


def np_bam(theta: np.ndarray, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """One head: x (T, 25), valid (T,) -> scores (T,), from the spec's layout and equations."""
    w_qkv, b_qkv = theta[0:2400].reshape(25, 96), theta[2400:2496]
    w_o, b_o = theta[2496:4096].reshape(32, 50), theta[4096:4146]
    w_s, b_s = theta[4146:4171], theta[4171]
    qkv = x @ w_qkv + b_qkv
    q, k, v = qkv[:, :32], qkv[:, 32:64], qkv[:, 64:]
    logits = q @ k.T / np.sqrt(32)
    n = len(x)
    hidden = (np.arange(n)[None, :] < np.arange(n)[:, None]) | ~valid[None, :]
    logits = logits + np.where(hidden, F32_MIN, 0.0)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = p @ v @ w_o + b_o
    r, g = o[:, :25], o[:, 25:]
    return (x * (1 + g) + r) @ w_s + b_s


def np_select(scores: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, T) -> retained (H, N) ascending, keep_above (H, N)."""
    s = np.where(valid, scores, -np.inf)
    s[:, -1] = np.inf
    n = int((s >= 0).sum(-1).max())
    retained = np.sort(np.argsort(-s, axis=-1, kind="stable")[:, :n], axis=-1)
    return retained, np.take_along_axis(s, retained, -1) >= 0


class NpNAMM:
    """A whole NAMM run for one sequence, all layers: pooled statistics recomputed from every value so far."""

    def __init__(self, theta: np.ndarray, group: int, stats=None):
        self.theta, self.group, self.frozen = theta.astype(np.float64), group, stats
        self.state: dict[int, dict] = {}
        self.pool: list[np.ndarray] = []

    def update(self, layer: int, attn: np.ndarray):
        n_q, n_new, n_tokens = attn.shape
        rows = attn.reshape(n_q // self.group, self.group, n_new, n_tokens).mean(1)  # (H, n, T)
        heads, n_old, st = rows.shape[0], n_tokens - n_new, self.state.get(layer)
        carry = np.zeros((heads, n_tokens, 16))
        if st is not None:
            carry[:, :n_old] = st["carry"]
        series = np.concatenate([carry, rows.transpose(0, 2, 1)], axis=-1)
        mag = np_stft(series).transpose(0, 2, 1, 3)                     # (H, F, T, 17)
        ema = np_ema(mag, n_new, None if st is None else st["ema"])
        if self.frozen is None:
            self.pool.append(ema.reshape(-1, 17))
            every = np.concatenate(self.pool)
            mean, var = every.mean(0), every.var(0)
        else:
            mean, var = self.frozen
        x_hat = (ema - mean) / np.maximum(np.sqrt(var), 1e-7)
        seen = 0 if st is None else st["seen"]
        pos = np.arange(seen, seen + n_new)[None].repeat(heads, 0)
        if st is not None:
            pos = np.concatenate([st["pos"], pos], axis=-1)
        feats = np.concatenate([np_age(pos[:, -1:] - pos), x_hat], axis=-1)
        valid = np.ones((heads, n_tokens), bool)
        scores = np.stack([np_bam(self.theta, feats[h], valid[h]) for h in range(heads)])
        retained, keep = np_select(scores, valid)
        take = retained[..., None]
        self.state[layer] = {"carry": np.take_along_axis(series[..., -16:], take, 1),
                             "ema": np.take_along_axis(ema, take, 1),
                             "pos": np.take_along_axis(pos, retained, 1), "seen": seen + n_new}
        return retained, keep, scores, feats


def causal_rows(rng: np.random.Generator, heads: int, n_new: int, n_tokens: int) -> np.ndarray:
    """Post-softmax-like rows: query i (slot T − n + i) spreads weight over slots ≤ its own, zeros after."""
    w = rng.exponential(size=(heads, n_new, n_tokens)) ** 3  # peaky, so tokens differ
    slot = n_tokens - n_new + np.arange(n_new)
    w = np.where(np.arange(n_tokens)[None, None, :] <= slot[None, :, None], w, 0.0)
    return w / w.sum(-1, keepdims=True)


def structured_theta(seed: int = 1, noise: float = 0.1) -> np.ndarray:
    """Small random weights plus a score that reads cos(age) and two spectrogram bins: evicts about half,
    differently per head."""
    theta = np.random.default_rng(seed).normal(size=N_PARAMS) * noise
    o = offsets()
    theta[o["W_s"]: o["W_s"] + 25] = 0.0
    theta[o["W_s"] + 4] = 1.0    # cos(age·ω_0)
    theta[o["W_s"] + 8] = 2.0    # x̂ of STFT bin 0
    theta[o["W_s"] + 10] = -1.5  # x̂ of STFT bin 2
    theta[o["b_s"]] = 0.0
    return theta


# ---------------------------------------------------------------- features
def test_age_embedding_order_and_frequencies():
    ages = np.array([0, 1, 7, 250, 4000])
    emb = age_embedding(ages)
    assert emb.dtype == torch.float32 and emb.shape == (5, 8)
    np.testing.assert_allclose(emb.numpy(), np_age(ages), atol=1e-6)
    np.testing.assert_array_equal(emb[0].numpy(), [0, 0, 0, 0, 1, 1, 1, 1])  # sin block first, then cos
    assert emb[1, 0] == pytest.approx(np.sin(1.0)) and emb[1, 7] == pytest.approx(np.cos(50000 ** -0.75))


def test_stft_framing_and_periodic_hann():
    rng = np.random.default_rng(0)
    series = rng.random((3, 2, 16 + 64))
    mag = stft_magnitudes(torch.tensor(series))
    assert mag.shape == (3, 2, 4, 17)
    np.testing.assert_allclose(mag.numpy(), np_stft(series), rtol=1e-5, atol=1e-5)
    # a unit impulse at series index 16 + 20 = 36 lies in frames 1 (16–47) and 2 (32–63), at offsets 20 and 4
    impulse = np.zeros(16 + 64)
    impulse[36] = 1.0
    got = stft_magnitudes(impulse).numpy()
    np.testing.assert_allclose(got[:, 0], [0, np_hann()[20], np_hann()[4], 0], atol=1e-7)
    assert np_hann()[16] == 1 and np_hann()[31] > 0  # periodic, not symmetric
    with pytest.raises(ValueError, match="multiple of 16"):
        stft_magnitudes(np.zeros(16 + 20))


def test_ema_formula_with_new_token_masks():
    rng = np.random.default_rng(1)
    mag, prev = rng.random((2, 3, 60, 17)), rng.random((2, 12, 17))  # F = 3: n_new = 48, 12 old tokens
    got = ema_update(torch.tensor(mag), 48, torch.tensor(prev))
    assert got.shape == (2, 60, 17)
    np.testing.assert_allclose(got.numpy(), np_ema(mag, 48, prev), rtol=1e-5, atol=1e-7)
    # energy only in frame 0: new tokens past the first 16 cannot have it (they came after those queries)
    only0 = np.zeros_like(mag)
    only0[:, 0] = 1.0
    ema = ema_update(only0, 48).numpy()
    a = GAMMA ** 16
    np.testing.assert_allclose(ema[:, :28], a ** 2 * (1 - a), rtol=1e-6)  # 12 old + new j < 16: weight of frame 0
    np.testing.assert_array_equal(ema[:, 28:], 0.0)
    with pytest.raises(ValueError, match="n_new"):
        ema_update(mag, 32)
    with pytest.raises(ValueError, match="gather"):
        ema_update(mag, 48, prev[:, :5])


def test_running_stats_pool_like_one_population():
    rng = np.random.default_rng(2)
    chunks = [rng.normal(i, 1 + i, size=(2, 3, 5 + i, 17)) for i in range(4)]
    masks = [rng.random((2, 3, 5 + i)) > 0.3 for i in range(4)]
    stats = RunningStats()
    for c, m in zip(chunks, masks, strict=True):
        stats.merge(torch.tensor(c), torch.tensor(m))
    every = np.concatenate([c[m] for c, m in zip(chunks, masks, strict=True)])
    np.testing.assert_allclose(stats.mean.numpy(), every.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.var.numpy(), every.var(0), rtol=1e-10)  # population variance (ddof 0)
    assert stats.count == len(every)
    x = torch.tensor(chunks[0][0, 0], dtype=torch.float32)
    np.testing.assert_allclose(stats.normalise(x).numpy(), (chunks[0][0, 0] - every.mean(0)) / every.std(0),
                               rtol=1e-4, atol=1e-5)
    flat = RunningStats.frozen(np.zeros(17), np.zeros(17))  # var 0: divided by the 1e-7 floor
    np.testing.assert_allclose(flat.normalise(torch.full((17,), 1e-7)).numpy(), 1.0, rtol=1e-5)


# ---------------------------------------------------------------- scorer
def test_bam_scores_match_numpy_with_backward_mask_and_padding():
    rng = np.random.default_rng(3)
    theta = rng.normal(size=N_PARAMS) * 0.3
    x = rng.normal(size=(2, 11, 25))
    valid = np.ones(11, bool)
    valid[[0, 1, 6]] = False
    got = bam_scores(theta, torch.tensor(x), torch.tensor(valid))
    assert got.shape == (2, 11)
    want = np.stack([np_bam(theta, x[h], valid) for h in range(2)])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)
    assert np.all(bam_scores(np.zeros(N_PARAMS), x, valid).numpy() == 0)  # all-zero θ: score 0 everywhere


def test_theta_layout_known_values_land_in_known_weights():
    o = offsets()
    assert o == {"W_qkv": 0, "b_qkv": 2400, "W_o": 2496, "b_o": 4096, "W_s": 4146, "b_s": 4171}
    assert N_PARAMS == 4172
    rng = np.random.default_rng(4)
    x = rng.normal(size=(7, 25))
    valid = np.array([False, True, True, True, False, True, True])

    def scores(**entries):
        theta = np.zeros(N_PARAMS)
        for at, value in entries.values():
            theta[at] = value
        return bam_scores(theta, x, valid).numpy()

    np.testing.assert_allclose(scores(b=(4171, 0.7)), 0.7, rtol=1e-6)                       # b_s
    np.testing.assert_allclose(scores(w=(4146 + 3, 1.0)), x[:, 3], rtol=1e-5)               # W_s[3]
    np.testing.assert_allclose(scores(w=(4146 + 20, 1.0), g=(4096 + 25 + 20, 1.0)),          # g_20 = b_o[45]
                               2 * x[:, 20], rtol=1e-5)
    np.testing.assert_allclose(scores(w=(4146 + 9, 1.0), r=(4096 + 9, 0.5)), x[:, 9] + 0.5, rtol=1e-5)  # r_9
    # value path: v_5 = x[:, 2] (W_qkv row 2, column 64 + 5), r_7 = o_5 (W_o row 5, column 7), score reads x′_7;
    # q = k = 0 gives uniform attention over the valid tokens j ≥ i (backward mask)
    got = scores(v=(2 * 96 + 64 + 5, 1.0), o=(2496 + 5 * 50 + 7, 1.0), w=(4146 + 7, 1.0))
    mean_after = [x[[j for j in range(i, 7) if valid[j]], 2].mean() for i in range(7)]
    np.testing.assert_allclose(got, x[:, 7] + np.array(mean_after), rtol=1e-5)
    # query/key path: q_0 = 8 (b_qkv[0]), k_0 = x[:, 1] (W_qkv row 1, column 32) sharpen attention towards
    # the valid later token with the largest x[:, 1]
    got = scores(q=(2400, 8.0), k=(1 * 96 + 32, 1.0), v=(2 * 96 + 64 + 5, 1.0), o=(2496 + 5 * 50 + 7, 1.0),
                 w=(4146 + 7, 1.0))
    want = []
    for i in range(7):
        js = [j for j in range(i, 7) if valid[j]]
        p = np.exp(8 * x[js, 1] / np.sqrt(32))
        want.append(x[i, 7] + (p / p.sum()) @ x[js, 2])
    np.testing.assert_allclose(got, want, rtol=1e-4)
    with pytest.raises(ValueError, match="4172"):
        bam_scores(np.zeros(4171), x, valid)


# ---------------------------------------------------------------- selection
def test_select_same_n_per_head_newest_and_padding():
    scores = torch.tensor([[5.0, 0.5, -1.0, 2.0, -0.2, -3.0],     # slots 1, 3 and the newest qualify
                           [9.0, -0.1, -2.0, -0.5, -4.0, -1.0]])  # only the newest qualifies
    valid = torch.tensor([False, True, True, True, True, True])   # slot 0 is padding: −∞ despite its score
    retained, keep = select_tokens(scores, valid)
    assert retained.tolist() == [[1, 3, 5], [1, 3, 5]]  # N = 3 on both heads, ascending; head 1 fills with its best
    assert keep.tolist() == [[True, True, True], [False, False, True]]
    r, k = select_tokens(torch.zeros(2, 6))  # all-zero scores keep everything
    assert r.tolist() == [list(range(6))] * 2 and bool(k.all())
    # leading batch rows share N; a row with fewer real tokens keeps padding slots (not "above")
    batch = torch.tensor([[[1.0, 1.0, 1.0, 1.0]], [[1.0, 1.0, 1.0, 1.0]]])
    r, k = select_tokens(batch, torch.tensor([[[True] * 4], [[False, False, False, True]]]))
    assert r.shape == (2, 1, 4) and k[1].tolist() == [[False, False, False, True]]


def test_numpy_select_agrees_on_random_scores():
    rng = np.random.default_rng(5)
    scores, valid = rng.normal(size=(3, 40)), rng.random((3, 40)) > 0.2
    r, k = select_tokens(scores, valid)
    want_r, want_k = np_select(scores, valid)
    np.testing.assert_array_equal(r.numpy(), want_r)
    np.testing.assert_array_equal(k.numpy(), want_k)



def test_capped_selection_keeps_the_best_qualifying_tokens():
    scores = torch.tensor([[5.0, 0.5, -1.0, 2.0, 0.2, -3.0],
                           [9.0, -0.1, -2.0, -0.5, -4.0, -1.0]])
    retained, keep = select_tokens(scores, max_n=3)
    assert retained.tolist()[0] == [0, 3, 5]  # 5.0, 2.0 and the newest; 0.5 and 0.2 qualify but lose to the cap
    assert keep.tolist()[0] == [True, True, True] and keep.tolist()[1] == [True, False, True]
    assert select_tokens(scores, max_n=99)[0].tolist() == select_tokens(scores)[0].tolist()  # a loose cap: none
    assert select_tokens(scores, max_n=0)[0].tolist() == [[5], [5]]  # at least the newest


# ---------------------------------------------------------------- the policy
def test_policy_matches_numpy_run_over_layers_and_updates():
    """Three updates × two layers: STFT carry, EMA with gathering, statistics pooled layer after layer and
    including the update itself, age embedding, BAM, selection."""
    rng = np.random.default_rng(6)
    theta = structured_theta()
    policy, ref = NAMMPolicy(theta, n_layers=2, n_kv_heads=2, gqa_group=2), NpNAMM(theta, group=2)
    kept = {0: 0, 1: 0}
    evicted = 0
    for step, n_new in enumerate([32, 16, 32]):
        for layer in (0, 1):
            attn = causal_rows(rng, 4, n_new, kept[layer] + n_new)
            retained = policy.update(layer, torch.tensor(attn, dtype=torch.float32))
            want_r, want_k, want_s, want_f = ref.update(layer, attn)
            np.testing.assert_allclose(policy.last.features[0].numpy(), want_f, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(policy.last.scores[0].numpy(), want_s, rtol=1e-4, atol=1e-4)
            np.testing.assert_array_equal(retained.numpy(), want_r, err_msg=f"step {step} layer {layer}")
            np.testing.assert_array_equal(policy.last.keep_above[0].numpy(), want_k)
            evicted += attn.shape[-1] - retained.shape[-1]
            kept[layer] = retained.shape[-1]
    assert evicted > 0
    every = np.concatenate(ref.pool)
    np.testing.assert_allclose(policy.stats[0].numpy(), every.mean(0), rtol=1e-5)
    np.testing.assert_allclose(policy.stats[1].numpy(), every.var(0), rtol=1e-5)



def test_statistics_pool_only_the_valid_tokens():
    """model-evolution.md: the normalisation's statistics pool over batch, KV heads and valid tokens (padding left
    out); read back from the features: x̂ = (EMA − mean) / std with the statistics that include this update."""
    rng = np.random.default_rng(12)
    policy = NAMMPolicy(structured_theta(), 1, 2, 2)
    valid = np.ones(32, bool)
    valid[:10] = False  # left padding
    policy.update(0, torch.tensor(causal_rows(rng, 4, 32, 32), dtype=torch.float32), valid=torch.tensor(valid))
    mean, var = (s.double().numpy() for s in policy.stats)
    ema = policy.last.features[0][..., 8:].double().numpy() * np.sqrt(var) + mean  # (H, T, 17)
    np.testing.assert_allclose(mean, ema[:, valid].reshape(-1, 17).mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(var, ema[:, valid].reshape(-1, 17).var(0), rtol=1e-3, atol=1e-8)
    assert policy.statistics.count == 2 * 22  # two KV heads × the 22 valid tokens
    assert np.abs(ema.reshape(-1, 17).mean(0) - mean).max() > 1e-3  # the padding's values would have moved it


def test_capped_policy_bounds_each_layer_by_the_tokens_it_has_seen():
    """max_kept: at most ⌈f · seen⌉ slots per layer, the best-scored of those the uncapped policy would keep; a cap
    of 1 changes nothing; a bad fraction is one error naming --max-kept."""
    theta = structured_theta()
    theta[-1] += 1.0  # the score layer's bias: (nearly) every token qualifies, so the cap is what binds
    rng = np.random.default_rng(11)
    rows = {}
    capped, loose, free = (NAMMPolicy(theta, 1, 2, 2, max_kept=f) for f in (0.3, 1.0, None))
    seen, n_kept = 0, {id(p): 0 for p in (capped, loose, free)}
    for n_new in (32, 32, 16, 48):
        seen += n_new
        for policy in (capped, loose, free):
            key = (seen, n_kept[id(policy)])
            if key not in rows:
                rows[key] = torch.tensor(causal_rows(rng, 4, n_new, n_kept[id(policy)] + n_new), dtype=torch.float32)
            retained = policy.update(0, rows[key])
            n_kept[id(policy)] = retained.shape[-1]
        assert n_kept[id(capped)] <= int(np.ceil(0.3 * seen))
        # the capped step keeps the top of its scores among the qualifying tokens
        last = capped.last
        s = last.scores[0].clone()
        s[..., -1] = float("inf")
        for head in range(2):
            kept = set(last.retained[0, head].tolist())
            worst_kept = min(float(s[head, i]) for i in kept)
            dropped = [float(s[head, i]) for i in range(s.shape[-1]) if i not in kept]
            assert not dropped or max(dropped) <= worst_kept
        assert loose.last.retained.tolist() == free.last.retained.tolist()
    assert n_kept[id(free)] > int(np.ceil(0.3 * seen))  # without the cap it keeps more: the cap did bind
    assert capped.config()["max_kept"] == 0.3 and free.config()["max_kept"] is None
    for bad in (0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="--max-kept"):
            NAMMPolicy(theta, 1, 2, 2, max_kept=bad)


def test_frozen_stats_stay_and_are_used():
    rng = np.random.default_rng(7)
    theta = structured_theta()
    collect = NAMMPolicy(theta, 1, 2, 2)
    collect.update(0, causal_rows(rng, 4, 32, 32))
    stats = collect.stats
    frozen, ref = NAMMPolicy(theta, 1, 2, 2, stats=stats), NpNAMM(theta, 2, stats=[s.double().numpy() for s in stats])
    attn = causal_rows(rng, 4, 48, 48)  # another sequence: with collection these statistics would move
    retained = frozen.update(0, attn)
    want_r, _, want_s, _ = ref.update(0, attn)
    np.testing.assert_array_equal(retained.numpy(), want_r)
    np.testing.assert_allclose(frozen.last.scores[0].numpy(), want_s, rtol=1e-4, atol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(frozen.stats, stats, strict=True))
    collect.update(0, causal_rows(rng, 4, 16, collect.last.retained.shape[-1] + 16))
    moved = collect.stats
    assert not torch.equal(moved[0], stats[0])
    collect.freeze()
    collect.reset()
    collect.update(0, attn)
    assert all(torch.equal(a, b) for a, b in zip(collect.stats, moved, strict=True))
    with pytest.raises(ValueError, match="17"):
        NAMMPolicy(theta, 1, 2, 2, stats=(np.zeros(16), np.ones(16)))


def test_gqa_groups_average_adjacent_query_heads():
    rng = np.random.default_rng(8)
    theta = structured_theta()
    attn = causal_rows(rng, 4, 32, 32)
    grouped = NAMMPolicy(theta, 1, 2, 2)
    r_grouped = grouped.update(0, attn)
    means = np.stack([attn[0:2].mean(0), attn[2:4].mean(0)])  # KV head h <- query heads 2h, 2h + 1
    plain = NAMMPolicy(theta, 1, 2, 1)
    r_plain = plain.update(0, means)
    assert torch.equal(r_grouped, r_plain)
    torch.testing.assert_close(grouped.last.features, plain.last.features)
    interleaved = NAMMPolicy(theta, 1, 2, 1)  # the wrong grouping (heads 0, 2 and 1, 3) sees other features
    interleaved.update(0, np.stack([attn[[0, 2]].mean(0), attn[[1, 3]].mean(0)]))
    assert not torch.allclose(interleaved.last.features, grouped.last.features)
    with pytest.raises(ValueError, match="query heads"):
        grouped.update(0, attn[:3])


def test_policy_checks_its_inputs():
    with pytest.raises(ValueError, match="4172"):
        NAMMPolicy(np.zeros(100), 2, 2, 2)
    policy = NAMMPolicy(np.zeros(N_PARAMS), 2, 2, 2)
    with pytest.raises(ValueError, match="multiple of 16"):
        policy.update(0, np.full((4, 20, 20), 0.05))
    policy.update(0, causal_rows(np.random.default_rng(0), 4, 16, 16))
    with pytest.raises(ValueError, match="reset"):
        policy.update(0, causal_rows(np.random.default_rng(0), 4, 16, 40))  # 16 kept + 16 new ≠ 40


def test_a_policy_theta_is_one_vector_of_the_bam_parameters(tmp_path):
    """θ is one vector of N_PARAMS numbers: a column of them (N_PARAMS × 1) is refused as a wrong shape, not read."""
    from workbench.namm.saved import load_policy, save_policy

    with pytest.raises(ValueError, match=r"θ has shape \(4172, 1\), the BAM policy has 4172 parameters"):
        save_policy(tmp_path / "x.safetensors", np.zeros((N_PARAMS, 1)), (np.zeros(17), np.ones(17)), {})
    np.savez(tmp_path / "column.npz", theta=np.zeros((N_PARAMS, 1)), mean=np.zeros(17), var=np.ones(17))
    with pytest.raises(ValueError, match=r"θ has shape \(4172, 1\)"):
        load_policy(tmp_path / "column.npz")


def test_a_policy_file_with_a_negative_variance_is_refused_written_or_read(tmp_path):
    """The frozen statistics' variance is ≥ 0 (0 is a constant feature): a negative one is refused when a policy
    is saved and when a file holding one is read, as NaN statistics are."""
    from workbench.namm.saved import load_policy, save_policy

    var = np.ones(17)
    var[3] = -0.5
    with pytest.raises(ValueError, match="negative variance"):
        save_policy(tmp_path / "x.safetensors", np.zeros(N_PARAMS), (np.zeros(17), var), {})
    np.savez(tmp_path / "neg.npz", theta=np.zeros(N_PARAMS), mean=np.zeros(17), var=var)
    with pytest.raises(ValueError, match="negative variance"):
        load_policy(tmp_path / "neg.npz")
    var[3] = 0.0
    np.savez(tmp_path / "zero.npz", theta=np.zeros(N_PARAMS), mean=np.zeros(17), var=var)
    assert load_policy(tmp_path / "zero.npz").var[3] == 0


# ---------------------------------------------------------------- baselines (policy level)
def test_recent_window_keeps_sinks_and_the_newest():
    policy = RecentWindow(window=4, sinks=2, n_layers=1, n_kv_heads=2, gqa_group=1)
    rng = np.random.default_rng(9)
    r = policy.update(0, causal_rows(rng, 2, 16, 16))
    assert policy.last.positions[0].tolist() == [[0, 1, 12, 13, 14, 15]] * 2 and r.shape == (2, 6)
    policy.update(0, causal_rows(rng, 2, 16, 22))
    assert policy.last.positions[0].tolist() == [[0, 1, 28, 29, 30, 31]] * 2


def test_h2o_keeps_heavy_hitters_and_a_recent_window():
    policy = H2O(heavy=2, recent=3, n_layers=1, n_kv_heads=1, gqa_group=2)
    attn = np.zeros((2, 16, 16))
    for i in range(16):  # query head 0: queries 0–7 look at themselves, 8–15 at token 3; head 1: 0–9 / 10–15 at 7
        attn[0, i, i if i < 8 else 3] = 1.0
        attn[1, i, i if i < 10 else 7] = 1.0
    policy.update(0, attn)
    assert policy.last.positions[0, 0].tolist() == [3, 7, 13, 14, 15]
    # the next 16 queries look only at themselves: tokens 3 and 7 keep their accumulated attention
    attn2 = np.zeros((2, 16, 21))
    attn2[:, np.arange(16), 5 + np.arange(16)] = 1.0
    policy.update(0, attn2)
    assert policy.last.positions[0, 0].tolist() == [3, 7, 29, 30, 31]
    full = FullCache(n_layers=1, n_kv_heads=1, gqa_group=2)
    assert full.update(0, attn).tolist() == [list(range(16))]


# ---------------------------------------------------------------- the cache in a model
@pytest.fixture(scope="module")
def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    # a wide init makes attention peaky, so heads see different things and evict differently
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      initializer_range=0.3, attn_implementation="eager")
    return LlamaForCausalLM(cfg).eval()


def prompt(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 64, (1, n), generator=torch.Generator().manual_seed(seed))


@torch.inference_mode()
def full_cache_greedy(model, ids: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' own DynamicCache decoding: one prefill call, then a token at a time."""
    from transformers import DynamicCache

    from workbench.lm.models import cache_keyword

    # `cache` from transformers 5.24, `past_key_values` before: an unknown keyword is swallowed (no cache at all)
    cache = {cache_keyword(type(model)): DynamicCache(config=model.config)}
    logits = model(input_ids=ids, use_cache=True, **cache).logits[:, -1]
    tokens, all_logits = [], []
    for _ in range(steps):
        nxt = logits.argmax(-1)
        tokens.append(nxt)
        all_logits.append(logits)
        logits = model(input_ids=nxt[:, None], use_cache=True, **cache).logits[:, -1]
    return torch.stack(tokens, 1), torch.stack(all_logits, 1)


@torch.inference_mode()
def masked_reference(model, ids: torch.Tensor, cache: EvictionCache) -> torch.Tensor:
    """Logits of ONE full forward over ids (1, S) at true positions 0 … S−1, each layer/query head seeing only
    the tokens the eviction log says were alive (kept and attended at the last step before the query)."""
    n_q, s = model.config.num_attention_heads, ids.shape[1]
    group = n_q // model.config.num_key_value_heads
    masks = {}
    for layer in range(model.config.num_hidden_layers):
        visible = np.tril(np.ones((n_q // group, s, s), bool))
        steps = cache.steps(layer)
        for i in range(s):
            before = [st for st in steps if st.step <= i]
            if before:
                last = before[-1]
                alive = np.zeros((n_q // group, s), bool)
                alive[:, last.step:] = True
                for h in range(n_q // group):
                    alive[h, last.positions[0, h][last.attended[0, h]].numpy()] = True
                visible[:, i] &= alive
        masks[layer] = torch.tensor(np.where(np.repeat(visible, group, axis=0), 0.0, F32_MIN),
                                    dtype=torch.float32)[None]

    def hide(module, args, kwargs):
        kwargs["attention_mask"] = masks[module.layer_idx]
        return args, kwargs

    handles = [m.self_attn.register_forward_pre_hook(hide, with_kwargs=True) for m in model.model.layers]
    try:
        return model(input_ids=ids, position_ids=torch.arange(s)[None]).logits.float()
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize(("n_prompt", "n_up"), [(40, 16), (37, 32), (70, 64)])
def test_zero_theta_equals_full_cache(llama, n_prompt, n_up):
    ids, steps = prompt(n_prompt, n_prompt), 36
    policy = NAMMPolicy(np.zeros(N_PARAMS), 2, 2, 2)
    out = generate(llama, ids, policy, n_up=n_up, max_new_tokens=steps, return_logits=True)
    want_tokens, want_logits = full_cache_greedy(llama, ids, steps)
    assert torch.equal(out.tokens, want_tokens)
    torch.testing.assert_close(out.logits, want_logits, atol=1e-4, rtol=1e-4)
    processed = n_prompt + steps - 1  # the last token is never fed back
    assert out.cache.sizes() == [processed, processed]
    assert sorted({s.step for s in out.cache.log}) == list(range(n_up, processed + 1, n_up))  # also while decoding
    assert all(s.positions.shape[-1] == s.step for s in out.cache.log)


def test_generate_installs_its_hooks_once_and_removes_them(llama):
    """generate holds the hooks around the prompt and every token (forward's own `attached` is then a no-op): a
    forward hook on each attention module counts its calls, installs are watched, and nothing stays after."""
    from workbench.namm.cache import attached, attention_modules

    mods = attention_modules(llama)
    calls = {"forward": 0, "installs": 0}
    counters = [m.register_forward_hook(lambda *a: calls.__setitem__("forward", calls["forward"] + 1)) for m in mods]
    original = torch.nn.Module.register_forward_pre_hook

    def counting(module, *args, **kwargs):
        calls["installs"] += 1
        return original(module, *args, **kwargs)

    torch.nn.Module.register_forward_pre_hook = counting
    try:
        out = generate(llama, prompt(40, 3), FullCache(), n_up=16, max_new_tokens=6)
        cache = EvictionCache(llama.config, FullCache(), 16)
        with attached(llama, cache), attached(llama, cache):  # nested: the inner one installs nothing
            pass
        other = type(llama)(llama.config).eval()
        with attached(llama, cache):
            with attached(other, cache):  # another model in between: its own hooks, then llama's again
                pass
            with attached(llama, cache):
                pass
    finally:
        torch.nn.Module.register_forward_pre_hook = original
        for h in counters:
            h.remove()
    assert out.tokens.shape == (1, 6)
    assert calls["forward"] == len(mods) * (3 + 5)  # the prompt in chunks of 16, 16, 8; 5 tokens fed back
    assert calls["installs"] == 4 * len(mods)  # generate; the nested pair; llama around other; other
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in mods)


def test_left_padded_batch_equals_each_row_alone(llama):
    a, b = prompt(40, 1)[0], prompt(27, 2)[0]
    ids = torch.stack([a, torch.cat([torch.zeros(13, dtype=torch.long), b])])
    mask = torch.stack([torch.ones(40, dtype=torch.long), torch.cat([torch.zeros(13), torch.ones(27)]).long()])
    out = generate(llama, ids, NAMMPolicy(np.zeros(N_PARAMS), 2, 2, 2), n_up=16, max_new_tokens=20,
                   attention_mask=mask, return_logits=True)
    for row, p in enumerate([a, b]):
        want_tokens, want_logits = full_cache_greedy(llama, p[None], 20)
        assert torch.equal(out.tokens[row], want_tokens[0])
        torch.testing.assert_close(out.logits[row], want_logits[0], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="LEFT-padded"):
        generate(llama, ids, FullCache(), n_up=16, max_new_tokens=2, attention_mask=mask.flip(-1))


@pytest.mark.parametrize("strict", [False, True])
def test_eviction_keeps_true_positions(llama, strict):
    ids, steps = prompt(40, 3), 40
    policy = NAMMPolicy(structured_theta(), 2, 2, 2, strict=strict)
    out = generate(llama, ids, policy, n_up=16, max_new_tokens=steps, return_logits=True)
    processed = 40 + steps - 1
    assert max(out.cache.sizes()) < processed  # it evicted
    fills = sum(int(s.kept_to_fill.sum()) for s in out.cache.log)
    assert fills > 0  # some heads kept negative-score tokens to match N
    if strict:
        assert all(torch.equal(s.attended, s.selection.keep_above) for s in out.cache.log)
    else:
        assert all(bool(s.attended.all()) for s in out.cache.log)
    # positions: a full forward at true positions hiding exactly the evicted (or strict-masked) tokens agrees
    seq = torch.cat([ids, out.tokens[:, :-1]], dim=1)
    ref = masked_reference(llama, seq, out.cache)[:, 40 - 1:]
    torch.testing.assert_close(out.logits, ref, atol=1e-4, rtol=1e-4)


class CheckedMasks(EvictionCache):
    """Our cache, checking every mask it hands a layer against one built from scratch out of the slots' validity
    (the kept rows are extended token by token and rebuilt after evictions; this says they never drift)."""

    calls = 0

    def layer_mask(self, layer, dtype):
        got = super().layer_mask(layer, dtype)
        _, valid_new = self._chunk
        b, q = valid_new.shape
        i = torch.arange(q)
        new = (i[None, :] <= i[:, None])[None] & (valid_new[:, None, :] | (i[None, :] == i[:, None])[None])
        new = new[:, None].expand(b, self.n_kv_heads, q, q)
        if self.valid[layer] is not None:
            new = torch.cat([self.valid[layer][:, :, None, :].expand(-1, -1, q, -1), new], dim=-1)
        visible = new.repeat_interleave(self.gqa_group, dim=1)
        want = torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)
        assert got.dtype == dtype and torch.equal(got, want), (layer, self.total)
        type(self).calls += 1
        if self.total % 3 == 0 and dtype == torch.float32:  # another dtype in between: rebuilt, then back
            self.layer_mask(layer, torch.bfloat16)
        return got


def test_kept_masks_equal_masks_built_from_scratch(llama):
    from workbench.namm.driver import forward

    CheckedMasks.calls = 0
    # row 1's padding reaches into the prompt's last chunk (slots 32 … 39), whose slots decoding then sees
    a, b = prompt(40, 8)[0], prompt(5, 9)[0]
    ids = torch.stack([a, torch.cat([torch.zeros(35, dtype=torch.long), b])])
    mask = torch.stack([torch.ones(40), torch.cat([torch.zeros(35), torch.ones(5)])]).long()
    cache = CheckedMasks(llama.config, NAMMPolicy(structured_theta(), 2, 2, 2, strict=True), 16)
    logits = forward(llama, ids, cache, mask, last_only=True)[:, -1]
    for _ in range(40):  # decoding across two eviction steps, with masked fill slots and a padded row
        logits = forward(llama, logits.argmax(-1)[:, None], cache, last_only=True)[:, -1]
    assert len(cache.log) >= 2 * 4 and any(not bool(s.attended.all()) for s in cache.log)
    assert CheckedMasks.calls >= 41 * 3


def _same_cache(a: EvictionCache, b: EvictionCache) -> bool:
    same = [torch.equal(x, y) for la, lb in zip(a.layers, b.layers, strict=True) for x, y in
            ((la.keys, lb.keys), (la.values, lb.values))]
    same += [torch.equal(x, y) for x, y in zip(a.valid + a.positions, b.valid + b.positions, strict=True)]
    same += [torch.equal(x.positions, y.positions) for x, y in zip(a.log, b.log, strict=True)]
    return all(same) and len(a.log) == len(b.log)


def test_first_chunks_memo_is_bit_identical_and_runs_each_prompt_once(llama):
    """Policies scored on the same prompts through one FirstChunks memo (as NAMM training's candidates): each
    prompt's first n_up tokens run once, and every logit, kept slot and eviction equals a run without it."""
    from workbench.namm.driver import FirstChunks, forward

    memo = FirstChunks()
    thetas = np.random.default_rng(0).normal(0, 0.3, (2, N_PARAMS))
    policies = [lambda: NAMMPolicy(structured_theta(), 2, 2, 2, strict=True)]
    policies += [lambda x=x: NAMMPolicy(x, 2, 2, 2) for x in thetas]
    prompts = [prompt(70, 1), prompt(100, 2), prompt(20, 3)]  # the last, under n_up tokens, is never kept
    evicted = False
    for make in policies:
        for ids in prompts:
            for last_only in (False, True):
                caches, logits = [], []
                for m in (None, memo):
                    cache = EvictionCache(llama.config, make(), 32)
                    out = forward(llama, ids, cache, last_only=last_only, first_chunks=m)
                    for _ in range(3):  # and decoding on
                        out = torch.cat([out, forward(llama, out[:, -1:].argmax(-1), cache, first_chunks=m)], 1)
                    caches.append(cache)
                    logits.append(out)
                assert torch.equal(*logits) and _same_cache(*caches)
                evicted |= caches[0].sizes()[0] < ids.shape[1] + 3
    assert evicted  # the policies evicted, so a state they had seen differently would show
    assert (memo.misses, memo.hits) == (4, 2 * 4)  # per prompt ≥ n_up and per last_only: once, then from memo
    with pytest.raises(ValueError, match="one model"):
        forward(copy.deepcopy(llama), prompts[0], EvictionCache(llama.config, FullCache(), 32), first_chunks=memo)
    kept = FirstChunks(max_bytes=memo.bytes // 4 * 3 // 2)  # room for one of the four chunks kept above
    for ids in prompts:
        forward(llama, ids, EvictionCache(llama.config, FullCache(), 32), first_chunks=kept)
    assert len(kept) == 1 and kept.bytes <= kept.max_bytes


def test_first_chunks_memo_keys_left_padded_batches_by_their_masks(llama):
    """A batch of two left-padded prompts: the same tokens under other masks (so other positions) are other
    chunks, and each gives what running it gives."""
    from workbench.namm.driver import FirstChunks, forward

    ids = torch.randint(0, 64, (2, 80), generator=torch.Generator().manual_seed(7))
    masks = [torch.ones_like(ids) for _ in range(3)]
    masks[1][1, :25] = 0  # the first chunk holds padding and tokens
    masks[2][1, :40] = 0  # the second row's first chunk is all padding
    memo = FirstChunks()
    for _ in range(2):
        for mask in masks:
            runs = []
            for m in (None, memo):
                cache = EvictionCache(llama.config, NAMMPolicy(structured_theta(), 2, 2, 2), 32)
                out = forward(llama, ids, cache, mask, first_chunks=m)
                runs.append((out, cache))
            assert torch.equal(runs[0][0], runs[1][0]) and _same_cache(runs[0][1], runs[1][1])
    assert (memo.misses, memo.hits) == (3, 3)


def test_first_chunks_memo_keeps_what_it_can_when_a_cycle_of_prompts_passes_max_bytes(llama):
    """Candidates scoring more prompts than max_bytes holds, in the same order: the chunks kept stay (plain LRU
    forgot each just before it was asked for again, and kept none), and new prompts take the place of old ones."""
    from workbench.namm.driver import FirstChunks, forward

    def score(memo, prompts):
        for ids in prompts:
            forward(llama, ids, EvictionCache(llama.config, FullCache(), 32), last_only=True, first_chunks=memo)

    probe = FirstChunks()
    score(probe, [prompt(40, 0)])
    memo = FirstChunks(max_bytes=probe.bytes * 2)
    old, new = [prompt(40, s) for s in range(3)], [prompt(40, s) for s in range(3, 6)]
    for _ in range(5):
        score(memo, old)
    assert memo.hits == 2 * 4
    for _ in range(5):
        score(memo, new)
    assert memo.hits == 2 * 4 + 2 * 3 and len(memo) == 2


def test_baselines_in_the_model(llama):
    ids = prompt(40, 4)
    out = generate(llama, ids, RecentWindow(window=8, sinks=2), n_up=16, max_new_tokens=30, return_logits=True)
    last = out.cache.log[-1]
    assert last.step == 64 and last.positions[0].tolist() == [[0, 1] + list(range(56, 64))] * 2
    seq = torch.cat([ids, out.tokens[:, :-1]], dim=1)
    torch.testing.assert_close(out.logits, masked_reference(llama, seq, out.cache)[:, 39:], atol=1e-4, rtol=1e-4)
    out = generate(llama, ids, H2O(heavy=6, recent=4), n_up=16, max_new_tokens=30, return_logits=True)
    assert out.cache.sizes() == [10 + 5, 10 + 5]  # 10 kept at step 64, then 5 more tokens fed
    seq = torch.cat([ids, out.tokens[:, :-1]], dim=1)
    torch.testing.assert_close(out.logits, masked_reference(llama, seq, out.cache)[:, 39:], atol=1e-4, rtol=1e-4)
    # padded rows: sinks are each row's own first real tokens
    b = prompt(29, 5)[0]
    batch = torch.stack([ids[0], torch.cat([torch.zeros(11, dtype=torch.long), b])])
    mask = torch.stack([torch.ones(40), torch.cat([torch.zeros(11), torch.ones(29)])]).long()
    out = generate(llama, batch, RecentWindow(window=8, sinks=2), n_up=16, max_new_tokens=9, attention_mask=mask)
    last = out.cache.log[-1]  # step 48: row 0 has seen positions 0 … 47, row 1 positions 0 … 36
    assert last.positions[0, 0].tolist() == [0, 1] + list(range(40, 48))
    assert last.positions[1, 0].tolist() == [0, 1] + list(range(29, 37)) and bool(last.attended.all())


def test_bad_input_is_one_clear_error(llama):
    from transformers import LlamaConfig, LlamaForCausalLM

    ids = prompt(20, 6)
    with pytest.raises(ValueError, match="multiple of 16"):
        generate(llama, ids, FullCache(), n_up=24, max_new_tokens=2)
    with pytest.raises(ValueError, match="multiple of 16"):
        EvictionCache(llama.config, FullCache(), n_up=8)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(llama, prompt(200, 7), FullCache(), n_up=16, max_new_tokens=100)  # window 256
    for one in (ids[0], ids[0].tolist()):  # one prompt, not a batch: IndexError from inside before
        with pytest.raises(ValueError, match=r"input_ids must be \(batch, tokens\).*ids\[None\]"):
            generate(llama, one, FullCache(), n_up=16, max_new_tokens=2)
    sdpa = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1, attn_implementation="sdpa"))
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        generate(sdpa, ids, FullCache(), n_up=16, max_new_tokens=2)
    with pytest.raises(ValueError, match="built for"):
        generate(llama, ids, NAMMPolicy(np.zeros(N_PARAMS), 3, 2, 2), n_up=16, max_new_tokens=2)
