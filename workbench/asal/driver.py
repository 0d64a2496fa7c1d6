"""The loop around an ASAL search: evaluate, tell, checkpoint, and finish a run in the run store.

    cfg = SearchConfig(kind="target", eval=EvalConfig("lenia", "clip"), prompts=["a caterpillar"], iters=5)
    run = run_search(cfg, RunStore("runs"))              # or run_search(None, store, resume="<run-id>")

After every iteration the search object, the metrics and the loop's position are checkpointed
atomically (JSON + npz, see workbench.runs), so a killed run resumed with `resume=` ends exactly where an
uninterrupted one would. A target image is copied into the run (inputs/, hashed) and read from there on
resume; resuming with settings that contradict the run's config is refused (`check_resume`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.asal.atlas import compose, population_grid, project, snap_to_grid
from workbench.asal.evaluate import (
    EvalConfig,
    Objective,
    check_chunk_memory,
    components,
    embed_rollouts,
    rollout_bytes,
)
from workbench.asal.legacy import SEARCH_KINDS, predated, upgrade_config
from workbench.asal.rules import RuleGA, RuleIlluminationGA, rule_search  # also registers the rule GAs in SEARCHES
from workbench.asal.search import DESCRIPTOR_FITS, SEARCHES, IlluminationGA, MapElitesSearch, SepCMAESSearch
from workbench.asal.weights import record_weights, resumed_weights
from workbench.checks import (
    available_memory,
    check_counts,
    check_fits,
    check_positive,
    check_seed,
    check_weight,
    checked_again,
    nothing_fits,
    paths_as_text,
    texts,
    too_big,
)
from workbench.runs import (
    Run,
    RunError,
    RunStore,
    check_longer,
    check_memory_to_resume,
    check_resume,
    checkpointed_loop,
    flat_config,
    record_resume,
    releases_claims,
    setting_up,
)
from workbench.simulations import SUBSTRATES, Substrate, random_init_of

if TYPE_CHECKING:
    import distributed

KINDS = SEARCH_KINDS
ALGORITHMS = {"target": ("cma",), "openended": ("cma",), "illuminate": ("ga", "map-elites")}
#: --init: "zero" starts every search at θ = 0, as the reference does; "random" at a draw of the substrate's own
#: random initialisation (asal-more.md §0: the networks' flax initialisation for NCA, discrete NCA and Particle
#: Life+, θ ~ N(0, I) for Particle Lenia), seeded by --seed
INITS = ("zero", "random")
CHILD_SEEDS = ("own", "shared")


def starts_random(substrate: str) -> bool:
    """Whether a search over `substrate` can start at its random initialisation (--init random): a substrate of
    real-numbered θ with one (NCA, discrete NCA, Particle Life+, Particle Lenia); Game of Life's rule GAs cannot."""
    return substrate != "gol" and random_init_of(substrate) is not None


#: members an iteration asks when SearchConfig.pop is left unset, per kind (the CLI's --pop defaults)
DEFAULT_POP = {"target": 16, "openended": 16, "illuminate": 32}


@dataclass
class SearchConfig:
    """One ASAL search: its kind ("target", "openended", "illuminate"), how θ is scored (`eval`, an EvalConfig
    or its dict; the config keeps its own copy, which it may adjust: an illumination embeds the final state
    only, and prompts share the frames equally), the prompts or target image, the algorithm and its settings,
    the loss's weights, the seed and where the search starts. Settings it adjusted are said in `notes` (the
    CLI prints them).

    Attributes:
        kind: "target" (match prompts or a target image), "openended" (novelty along the rollout) or
            "illuminate" (a diverse population).
        eval: how θ is scored (EvalConfig).
        prompts, target_image: what a target search matches (an illumination has no loss: it takes no
            prompts, c_softmax or c_oe).
        algorithm: None for the kind's default: "cma" (target, openended) or "ga" (illuminate); "map-elites"
            illuminates into a grid archive; Game of Life takes the GAs over rules (workbench.asal.rules).
        iters: iterations (generations) of the search.
        pop: members asked per iteration: CMA-ES's population, the GA's children, MAP-Elites' batch (None: the
            kind's, 16 a target or open-ended search, 32 an illumination, the reference's and the CLI's).
        population: the GA's population, or about the number of MAP-Elites' cells (a √P × √P grid).
        sigma: CMA-ES's initial step size, or the GAs' mutation scale.
        seed: every random choice of the search (the same seed, the same run).
        c_prompt, c_softmax, c_oe: the loss's weights of the prompt, softmax and open-endedness terms (c_oe
            unset: 1 for an open-ended search, 0 otherwise; an open-ended search refuses 0).
        init: where the search starts: "zero" (θ = 0, the reference's) or "random" (see INITS).
        child_seeds: an illumination's initial states: "own" (a seed per child, the reference's) or "shared".
        descriptor_fit: MAP-Elites' descriptor: "held-out" (the default) or "all" (runs made before 2026-12-03).
        notes: what __post_init__ adjusted, in words.

    Raises:
        ValueError: one message naming the CLI flag for a setting out of range or a combination that cannot run.
    """

    kind: str
    eval: EvalConfig
    prompts: list[str] = field(default_factory=list)
    target_image: str | None = None
    algorithm: str | None = None      # default: cma (target, openended) or ga (illuminate)
    iters: int = 100
    pop: int | None = None            # None: 16 (CMA population), or 32 an illumination (GA children, MAP-Elites batch)
    population: int = 256             # GA population; MAP-Elites archive of about this many cells (√P × √P)
    sigma: float = 0.1
    seed: int = 0
    c_prompt: float = 1.0
    c_softmax: float = 0.0
    c_oe: float | None = None         # None: 1 for an open-ended search (its objective), else 0
    init: str = "zero"                # where the search starts: θ = 0 (the reference), or "random" (see INITS)
    # illumination: "own", each child's initial state from a seed of its own (the reference splits one key per
    # child), or "shared", one seed an iteration for all children (what illuminations made before 2026-12-01 did);
    # target and open-endedness searches always share an iteration's bs seeds, as the reference's
    child_seeds: str = "own"
    # MAP-Elites: its descriptor's PCA on half the seed population, its grid sized by the other half, the seed
    # elites scored among themselves ("held-out"); or as runs made before 2026-12-03 ("all": see MapElitesSearch)
    descriptor_fit: str = "held-out"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        paths_as_text(self, "target_image")
        check_seed(self.seed)
        self.eval = EvalConfig.own_copy(self.eval)  # the frames set below are not the caller's
        if self.kind not in KINDS:
            raise ValueError(f"unknown search kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.child_seeds not in CHILD_SEEDS:
            raise ValueError(f"child_seeds must be one of {', '.join(CHILD_SEEDS)}, got {self.child_seeds!r}")
        if self.descriptor_fit not in DESCRIPTOR_FITS:
            raise ValueError(f"descriptor_fit must be one of {', '.join(DESCRIPTOR_FITS)}, got {self.descriptor_fit!r}")
        if self.init not in INITS:
            raise ValueError(f"--init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.init == "random" and self.eval.substrate == "gol":
            raise ValueError("--init random is for θ of real numbers: Game of Life's GAs over rules start from "
                             "uniformly drawn rules (target, openended) or rule 0 (illuminate), as the reference's")
        if self.init == "random" and self.eval.substrate in SUBSTRATES and not starts_random(self.eval.substrate):
            having = ", ".join(name for name in SUBSTRATES if starts_random(name))
            raise ValueError(f"--init random: {self.eval.substrate} has no random initialisation (the reference "
                             f"starts it at θ = 0); substrates with one: {having}")
        if self.eval.substrate == "gol":  # θ is one integer rule: GAs with bit flips (workbench.asal.rules)
            if self.algorithm not in (None, "ga", "rule-ga"):
                raise ValueError(f"--substrate gol searches its integer rule with a GA over rules, not --algorithm "
                                 f"{self.algorithm}; or rank every rule with workbench asal sweep --substrate gol")
            self.algorithm = "rule-ga"
        elif self.algorithm == "rule-ga":
            raise ValueError("the GA over rules is for --substrate gol, whose θ is an integer rule")
        self.algorithm = self.algorithm or ALGORITHMS[self.kind][0]
        if self.algorithm not in ALGORITHMS[self.kind] and self.algorithm != "rule-ga":  # rule-ga: gol only
            raise ValueError(f"{self.kind} search supports --algorithm {' | '.join(ALGORITHMS[self.kind])}, "
                             f"got {self.algorithm!r}")
        if self.pop is None:  # the kind's: an illumination draws 32 children an iteration (asal.md §4)
            self.pop = DEFAULT_POP[self.kind]
        check_counts(self, ("iters", "pop", "population"))
        if self.kind != "illuminate" and self.pop < 2:  # Sep-CMA-ES, and the GA over rules of a population of pop
            raise ValueError(f"--pop must be at least 2 (the population of each generation), got {self.pop}")
        if self.kind == "illuminate" and self.algorithm in ("ga", "rule-ga") and self.population < 3:
            raise ValueError(f"--population must be at least 3 for the illumination GA, got {self.population}")
        self.sigma = check_positive(self.sigma, "--sigma", " (the search's step size)")
        if self.c_oe is None:  # unset: an open-ended search's objective is novelty; the others leave it out
            self.c_oe = 1.0 if self.kind == "openended" else 0.0
        for name in ("c_prompt", "c_softmax", "c_oe"):  # the loss's terms' weights (spec: ASAL's losses, each ≥ 0)
            flag = "c_prompt" if name == "c_prompt" else f"--{name.replace('_', '-')}"  # c_prompt has no flag
            setattr(self, name, check_weight(getattr(self, name), flag))
        self.prompts = texts(self.prompts, "--prompt")  # one string is one prompt, not one per letter
        empty = next((p for p in self.prompts if not p.strip()), None)
        if empty is not None:  # the flag named, not the config field ("prompts must be …")
            raise ValueError(f"--prompt {empty!r}: a prompt must be non-empty text; give the words to match, or leave "
                             "that --prompt out")
        if self.kind == "target" and not self.prompts and not self.target_image:
            raise ValueError("a target search needs --prompt TEXT (one or more) or --target-image FILE")
        if self.prompts and self.target_image:
            raise ValueError("give either --prompt or --target-image, not both")
        n = len(self.prompts) or (1 if self.target_image else 0)
        if n and self.kind != "illuminate":
            k = math.ceil(max(self.eval.frames, n) / n) * n  # each prompt scores an equal share of the frames
            if k != self.eval.frames:
                self.notes.append(f"--frames {self.eval.frames} is not a multiple of the {n} prompts; "
                                  f"using {k} frames")
            if k > self.eval.steps:  # said of the prompts: the user may never have set --frames
                raise ValueError(f"{n} prompts need {k} frames (each prompt scores its share of the rollout's "
                                 f"frames), more than --steps {self.eval.steps}: give fewer prompts or more --steps")
            self.eval.frames = k
        if self.kind == "openended" and self.c_oe == 0.0:
            raise ValueError("--c-oe 0 would leave an open-ended search without its objective: give a weight > 0 "
                             "(default: 1), or search for a prompt with workbench asal target")
        if self.kind == "openended" and not n:
            self.c_prompt = 0.0
        if self.kind == "illuminate":  # the final state, as the reference's illumination embeds it
            self.eval.frames, self.eval.sampling = 1, "final"
        if self.eval.bs > 1 and self.eval.substrate in SUBSTRATES and not SUBSTRATES[self.eval.substrate].seeded_init:
            self.notes.append(f"--bs {self.eval.bs}: {self.eval.substrate}'s initial state does not depend on the "
                              f"seed (the reference's fixed pattern), so its {self.eval.bs} rollouts are the same; "
                              f"--bs 1 scores the same θ once")
        if self.algorithm == "map-elites":
            side = map_elites_side(self.population)
            if side * side != self.population:
                self.notes.append(f"MAP-Elites keeps a square grid: --population {self.population} gives "
                                  f"{side}×{side} = {side * side} cells")

    def to_dict(self) -> dict:
        """The config as a plain dict, as run.json stores it (asdict, without `notes`)."""
        d = asdict(self)
        d.pop("notes")
        return d


def read_config(stored: dict) -> SearchConfig:
    """A run's SearchConfig read back from run.json; settings newer than the run take the values that describe
    what it did (workbench.asal.legacy), so it resumes as it started."""
    return SearchConfig(**upgrade_config({k: v for k, v in stored.items() if k != "notes"}))


def check_new_search(cfg: SearchConfig) -> None:
    """What a new run is refused for before anything loads (resumed runs keep what they were started with)."""
    from workbench.fm import check_fm

    if cfg.kind != "illuminate" and (cfg.c_oe > 0 or cfg.kind == "openended") and cfg.eval.frames < 2:
        raise ValueError(f"open-endedness compares each frame with the earlier ones, so --frames "
                         f"{cfg.eval.frames} scores 0 for every θ: give --frames K ≥ 2 (the reference uses 32)")
    if cfg.kind == "illuminate" and (cfg.c_softmax > 0 or cfg.c_oe > 0):  # no loss reads them: the run would
        # record weights it never used, and comparisons would split its seeds from an identical run's
        raise ValueError("an illumination has no target or open-endedness loss (its objective is the population's "
                         "diversity): leave --c-softmax and --c-oe out")
    if cfg.kind != "illuminate" and cfg.c_softmax > 0 and not (cfg.prompts or cfg.target_image):
        raise ValueError("--c-softmax weighs a softmax loss over the targets: give --prompt TEXT or --target-image "
                         "FILE, or leave --c-softmax out")
    if cfg.kind != "illuminate" and cfg.c_softmax > 0 and cfg.eval.frames < 2:  # a softmax over one frame is 1
        raise ValueError("--c-softmax weighs a softmax over the frames each target is matched to, and one frame "
                         f"(--frames {cfg.eval.frames}) makes it 0 for every θ: give --frames K ≥ 2, or several "
                         "--prompt (one frame each), or leave --c-softmax out")
    if cfg.eval.substrate == "gol" and cfg.sigma != SearchConfig.sigma:  # the run would record a σ it never used
        raise ValueError(f"--sigma {cfg.sigma:g} does not apply to Game of Life: its GAs over rules flip each of a "
                         "rule's 18 bits with probability 1/18 (the reference's); leave --sigma out")
    check_memory(cfg)
    check_fm(cfg.eval.fm, cfg.eval.weights, cfg.prompts, cfg.target_image)  # prompts without a text tower, …


def check_memory(cfg: SearchConfig, free: int | None = None) -> None:
    """Refuse sizes whose arrays cannot fit in the memory available (free, default: measured now), naming the
    flag and the largest value that fits: the GA's similarity matrices over population + children, the
    open-endedness loss's K × K similarities per simulation, and what an iteration holds (check_batch_memory).
    Nothing is checked where the OS does not say what is available."""
    free = available_memory() if free is None else free
    if free is None:
        return
    from workbench.fm import embedding_dim
    from workbench.simulations import make_substrate

    n_params, dim = make_substrate(cfg.eval.substrate, **cfg.eval.overrides).n_params, embedding_dim(cfg.eval.fm)
    if cfg.kind == "illuminate" and cfg.algorithm in ("ga", "rule-ga"):
        # prune_redundant: the (P + children)² similarities in float64, their negation and argpartition's indices;
        # beside them, per member, tell's copies of θ and of its embedding and its thumbnails (a reviewer's
        # measurement: ~72 KB a member for Lenia with pixels besides the 24 N²)
        b = 3.0 * (8 * n_params + 4 * dim) + 2.0 * 3 * 64 * 64
        n = cfg.population + cfg.pop
        most = int((-b + math.sqrt(b * b + 96.0 * 0.8 * free)) / 48)  # 24 N² + b N ≤ 80 % of free
        what = f"the GA's similarities of {n} members ({cfg.population} + {cfg.pop} children) and their copies"
        if most - cfg.pop >= 3:  # the GA's smallest population
            check_fits(24.0 * n * n + b * n, "--population", cfg.population, what, most - cfg.pop, free)
        else:  # the children alone do not fit beside the smallest population
            check_fits(24.0 * n * n + b * n, "--pop", cfg.pop, what, most - cfg.population, free)
    if cfg.kind != "illuminate" and (cfg.c_oe > 0 or cfg.kind == "openended"):
        # open_endedness: (pop, bs, K, K) float64 and its masked copy; where not even two frames fit, fewer
        # rollouts is the fix, which check_batch_memory names
        per_k2 = 16.0 * cfg.pop * cfg.eval.bs
        step, least = frame_steps(cfg)
        largest = int(math.sqrt(0.8 * free / per_k2)) // step * step
        # the --frames to name fits the iteration's batch too (--pop 10⁸ was told --frames 3, then --pop): the
        # largest multiple of step that does, found by bisection (the batch grows with the frames); none: the
        # batch check below names --pop or --bs
        lo, hi = least // step, largest // step
        if lo <= hi and _batch_fits(cfg, lo * step, free, n_params, dim):
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if _batch_fits(cfg, mid * step, free, n_params, dim) else (lo, mid - 1)
            check_fits(per_k2 * cfg.eval.frames ** 2, "--frames", cfg.eval.frames,
                       f"the open-endedness loss over {cfg.pop} × {cfg.eval.bs} rollouts", lo * step, free)
    check_batch_memory(cfg, free, n_params, dim)  # last: the checks above name the flag that matters more


def _batch_fits(cfg: SearchConfig, frames: int, free: int, n: int, dim: int) -> bool:
    """Whether the iteration's batch fits at `frames` frames (check_batch_memory): a --frames the open-endedness
    check would name is no fix where it does not (--pop 10⁸ was told --frames 3, then --pop)."""
    import copy

    trial = copy.copy(cfg)
    trial.eval = copy.copy(cfg.eval)
    trial.eval.frames = frames
    try:
        check_batch_memory(trial, free, n, dim)
    except ValueError:
        return False
    return True


def check_batch_memory(cfg: SearchConfig, free: int, n: int, dim: int) -> None:
    """What each iteration holds for the θ it evaluates (--pop of them: CMA's population, the GA's children,
    MAP-Elites' batch) and the members it keeps (--population, illuminations), and what a chunk of simulations
    renders at once (--chunk frames of --size² pixels): --pop 10⁸ ran out of memory inside cmaes' sampling,
    after the run's folder was made. Where even the smallest --pop does not fit, --bs or --frames is named.
    n, dim: θ's numbers and the FM's embedding length."""
    ev = cfg.eval
    oe = cfg.kind != "illuminate" and (cfg.c_oe > 0 or cfg.kind == "openended")
    # a rollout: its K embeddings of D as float32 and the float64 copies the losses work on, and the K × K arrays
    # of open-endedness' similarities (16 bytes each) and of the softmax loss (32); a θ: the search's samples,
    # their stacked copy and the tell's (float64), and bs rollouts
    a = (16.0 if oe else 0.0) + (32.0 if cfg.kind != "illuminate" and cfg.c_softmax > 0 else 0.0)
    per_rollout = rollout_bytes(ev.frames, dim, a)
    per_theta = 32.0 * n + ev.bs * per_rollout
    kept = 8.0 * (n + dim) * cfg.population if cfg.kind == "illuminate" else 0.0  # the archive's θ and embeddings
    if cfg.algorithm == "map-elites":
        # each tell scores the elites' illumination: their E × E similarities (17 bytes each), E at most the grid's
        # cells and what was evaluated (the 32 seed θ, then pop an iteration)
        cells = map_elites_side(cfg.population) ** 2
        elites = min(cells, 32 + cfg.iters * cfg.pop)
        check_fits(17.0 * elites * elites, "--population", cfg.population,
                   f"the similarities of up to {elites} elites", int(math.sqrt(0.8 * free / 17.0)), free)
    need, room = cfg.pop * per_theta + kept, 0.8 * free - kept
    what = (f"evaluating {cfg.pop} θ of {n} numbers each ({ev.bs} × {ev.frames} embeddings of {dim} a θ)"
            + (f" beside an archive of {cfg.population}" if kept else ""))
    fewest = 1 if cfg.kind == "illuminate" else 2  # a CMA generation, the GA over rules: two at least
    if kept and room < fewest * per_theta:  # the archive alone: fewer members (half the memory left for the rest)
        check_fits(need, "--population", cfg.population, f"an archive of {cfg.population} members (θ of {n} "
                   f"numbers and an embedding of {dim} each) beside {cfg.pop} θ evaluated",
                   int(0.4 * free / (8.0 * (n + dim))), free)
    if need > 0.8 * free:
        if room / per_theta >= fewest:
            check_fits(need, "--pop", cfg.pop, what, int(room / per_theta), free)
        # even `fewest` θ do not fit: fewer rollouts or frames a θ, at --pop as given, else also at the fewest;
        # frames at --bs as given, else also at one rollout a θ
        step, least = frame_steps(cfg)
        b = 20.0 * dim  # bytes per frame of a rollout
        for pop in dict.fromkeys([cfg.pop, fewest]):
            per_seed = (room - pop * 32.0 * n) / (pop * per_rollout)  # rollouts a θ can have
            if ev.bs > 1 and per_seed >= 1:
                raise too_big(need, free, "--bs", ev.bs, what,
                              _fix(cfg.pop, pop, ev.bs, ev.bs, f"--bs {int(per_seed)}"))
            for bs in dict.fromkeys([ev.bs, 1]):
                # K with pop · bs · (20 K D + a K²) within the room (without K² where no loss holds one)
                share = max(room / pop / bs - 32.0 * n / bs, 0.0)
                k = int(share / b if not a else (-b + math.sqrt(b * b + 4 * a * share)) / (2 * a)) // step * step
                if ev.frames > least and k >= least:
                    raise too_big(need, free, "--frames", ev.frames, what,
                                  _fix(cfg.pop, pop, ev.bs, bs, f"--frames {k}"))
        raise nothing_fits(need, free, what, f"--pop {fewest} --bs 1 --frames {least}")
    check_chunk_memory(ev, cfg.pop, free)


def frame_steps(cfg: SearchConfig) -> tuple[int, int]:
    """(step, least): the --frames values a search takes are multiples of `step`, its prompts (each scores an
    equal share of the frames; SearchConfig rounds other values up again), and `least` at least: the prompts, and
    2 where open-endedness compares each frame with the earlier ones. What memory checks may suggest."""
    targets = (len(cfg.prompts) or (1 if cfg.target_image else 0)) if cfg.kind != "illuminate" else 0
    oe = cfg.kind != "illuminate" and (cfg.c_oe > 0 or cfg.kind == "openended")
    return max(targets, 1), max(targets, 2 if oe else 1)


def _fix(pop_given: int, pop: int, bs_given: int, bs: int, last: str) -> str:
    """The flags of a memory fix: --pop and --bs where they differ from what was given, then `last`."""
    parts = ([f"--pop {pop}"] if pop != pop_given else []) + ([f"--bs {bs}"] if bs != bs_given else [])
    return " and ".join([*parts, last])


def make_search(cfg: SearchConfig, n_params: int,
                x0: np.ndarray | None = None,
                ) -> SepCMAESSearch | IlluminationGA | MapElitesSearch | RuleGA | RuleIlluminationGA:
    """The search cfg asks for, over θ of n_params numbers, started at x0 (None: θ = 0; see start_theta)."""
    if cfg.algorithm == "rule-ga":
        return rule_search(cfg.kind, cfg.pop, cfg.population, cfg.seed)
    if cfg.algorithm == "cma":
        return SepCMAESSearch(n_params, population=cfg.pop, sigma=cfg.sigma, seed=cfg.seed, x0=x0)
    if cfg.algorithm == "ga":
        return IlluminationGA(n_params, population=cfg.population, children=cfg.pop, sigma=cfg.sigma, seed=cfg.seed,
                              x0=x0)
    return MapElitesSearch(n_params, batch=cfg.pop, sigma=cfg.sigma, cells=map_elites_side(cfg.population),
                           seed=cfg.seed, x0=x0, fit=cfg.descriptor_fit)


def start_theta(cfg: SearchConfig, sub: Substrate) -> np.ndarray | None:
    """The θ a new search starts from: None for θ = 0; with init "random", one draw of the substrate's random
    initialisation from its own stream of --seed (the search's generators are seeded by --seed itself)."""
    if cfg.init == "zero" or cfg.algorithm == "rule-ga":
        return None
    return np.asarray(random_init_of(sub)(np.random.default_rng([cfg.seed, 0x1A17])), np.float64)


def map_elites_side(population: int) -> int:
    """The side of MAP-Elites' square grid for --population P: the atlas holds at most side² ≈ P elites,
    as the GA's holds P (256 → 16 × 16, the default grid)."""
    return max(2, round(math.sqrt(population)))


def target_embeddings(cfg: SearchConfig, fm) -> np.ndarray | None:
    if cfg.prompts:
        return fm.embed_texts(cfg.prompts)
    if cfg.target_image:
        from PIL import Image, UnidentifiedImageError

        try:
            img = np.asarray(Image.open(cfg.target_image).convert("RGB"))
        except (OSError, UnidentifiedImageError) as exc:
            raise ValueError(f"cannot read the target image {cfg.target_image!r}: {exc}") from exc
        return fm.embed_images(img)
    return None


def iteration_seeds(seed: int, iteration: int, bs: int) -> list[int]:
    """Initial-state seeds of one iteration: fresh each iteration, fixed by (seed, iteration)."""
    return [int(s) for s in np.random.SeedSequence([seed, iteration]).generate_state(bs)]


def member_seeds(seed: int, iteration: int, bs: int, members: int) -> np.ndarray:
    """Each evaluated θ's own bs initial-state seeds, (members, bs), fixed by (seed, iteration, member)."""
    return np.stack([np.random.SeedSequence([seed, iteration, m]).generate_state(bs) for m in range(members)])


def search_seeds(cfg: SearchConfig, iteration: int, members: int) -> list[int] | np.ndarray:
    """The initial-state seeds of one iteration's `members` θ: shared (a list of bs), or each θ's own for an
    illumination (cfg.child_seeds, as the reference's)."""
    if cfg.kind == "illuminate" and cfg.child_seeds == "own":
        return member_seeds(cfg.seed, iteration, cfg.eval.bs, members)
    return iteration_seeds(cfg.seed, iteration, cfg.eval.bs)


def evaluate(cfg: EvalConfig, thetas: np.ndarray, seeds, client=None) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (B, bs, K, D) and thumbnails of a batch of θ, in chunks, locally or on Dask. seeds: shared
    by every θ (a list of bs), or each θ's own (an array (B, bs)); see embed_rollouts."""
    starts = range(0, len(thetas), cfg.chunk)
    chunks = [thetas[i:i + cfg.chunk] for i in starts]
    per_chunk = [seeds[i:i + cfg.chunk] for i in starts] if np.ndim(seeds) == 2 else [seeds] * len(chunks)
    if client is None:
        results = [embed_rollouts(cfg, c, s) for c, s in zip(chunks, per_chunk, strict=True)]
    else:
        futures = client.map(embed_rollouts, [cfg] * len(chunks), chunks, per_chunk, pure=False)
        results = client.gather(futures)
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


#: Settings newer than some runs: name → (default, what runs made before it did), for resume checks.
PREDATES = predated(EvalConfig, SearchConfig)

#: SearchConfig fields (dotted for the eval config) and the CLI flags that set them, for resume errors.
FLAGS = {"eval.substrate": "--substrate", "eval.fm": "--fm", "eval.weights": "--weights", "eval.steps": "--steps",
         "eval.frames": "--frames", "eval.bs": "--bs", "eval.size": "--size", "eval.chunk": "--chunk",
         "prompts": "--prompt", "target_image": "--target-image", "algorithm": "--algorithm", "iters": "--iters",
         "pop": "--pop", "population": "--population", "sigma": "--sigma", "seed": "--seed",
         "c_softmax": "--c-softmax", "c_oe": "--c-oe", "init": "--init"}


@releases_claims
def run_search(cfg: SearchConfig | None, store: RunStore | str | Path, resume: str | None = None,
               client: distributed.Client | None = None,
               on_iteration: Callable[[int, int, dict], None] | None = None,
               should_stop: Callable[[], bool] | None = None, on_start: Callable[[Run], None] | None = None,
               on_population: Callable[[np.ndarray, np.ndarray], None] | None = None,
               device: str | None = None, *, kind: str | None = None, trust_pickle: bool = False,
               command: str | None = None, iters: int | None = None, weights: str | Path | None = None) -> Run:
    """Run (or resume) a search to cfg.iters iterations; returns the finished run.

    resume: a run id (or a unique prefix of one) to continue from its last checkpoint; cfg may then be
    None, or a config that must equal the run's (else one error naming the differences) but for iters.
    iters (or cfg.iters, with resume): another total, down to what the run has done: a finished run goes on from its
    last checkpoint, a stopped one ends there, each exactly as a run started with that total (runs.new_total).
    kind: the kind of search the caller means to resume ("target", "openended", "illuminate"); a run of another
    kind is refused. trust_pickle: also load a pickle checkpoint of an older version (it can run code: only for
    run folders you trust). command: the command line, recorded in run.json (the CLI passes its own). weights (with
    resume): where the run's FM weights are now, if they moved (the CLI's --weights), checked by their content and
    recorded (workbench.asal.weights).
    Callbacks (for progress bars and dashboards): on_start(run); on_iteration(done, total, metrics row);
    on_population(θ, final-frame thumbnails) of each evaluated batch; should_stop() → stop, resumable.
    device: where simulations and the FM run (overrides the config's, also on resume; None: as configured,
    the GPU when present). client: a Dask client to evaluate the population's rollouts on, cfg.eval.chunk θ a
    task (the same results as without).
    """
    store = RunStore.of(store)
    iters = check_longer(resume, iters, "iters")
    moved = None
    if resume is not None:
        kind = kind or (cfg.kind if cfg is not None else None)
        run = store.open(resume)
        given = {} if cfg is None else flat_config(cfg.to_dict())
        if iters is not None:
            given["iters"] = iters
        check_resume(run, kind, {k: v for k, v in given.items() if k not in ("kind", "eval.device")},
                     predates=PREDATES, extends="iters")
        run, cfg, state, total = store.reopen_to(run, read_config, KINDS, "iters", given.get("iters"),
                                                 trust_pickle=trust_pickle)
        # the FM's weights moved: where they are now (checked), or refused
        moved = resumed_weights(run, weights, going_on=total is not None or run.info.get("status") != "done")
        if total is not None:
            cfg.iters = total  # what grows with the iterations (MAP-Elites' archive) is checked below
        elif run.info.get("status") == "done":
            if moved is not None:  # where its pages and figures now find them
                record_weights(run, moved)
            return run
        check_memory_to_resume(run, cfg, check_memory)
        if moved is not None:
            cfg.eval.weights = moved
        if state is not None and not isinstance(state.get("search"), tuple(SEARCHES.values())):
            raise RunError(f"the checkpoint of run {run.id!r} holds no ASAL search; start a new run instead")
        run.check_copied("target_image", cfg.target_image)
        kept = run.input_path("target_image")
        if kept is not None:
            cfg.target_image = str(kept)
        state = _upgrade(state)
        record_resume(run, command, state, extends="iters", total=total)
    elif cfg is None:
        raise ValueError("give a SearchConfig or resume=RUN_ID")
    else:
        # the run's own, checked again (a notebook may have set a field since): the caller's stays as given
        cfg = checked_again(cfg)
        check_new_search(cfg)
        state = None
    if device is not None:
        cfg.eval.device = device
    sub, fm = components(cfg.eval)  # fails fast on unknown substrate / FM / missing weights
    z_target = target_embeddings(cfg, fm)
    objective = Objective(z_target, cfg.c_prompt, cfg.c_softmax, cfg.c_oe)
    if resume is None:
        config = cfg.to_dict()
        if cfg.target_image:  # the run keeps its own copy (hashed), not a path into the user's files
            config["target_image"] = f"inputs/{Path(cfg.target_image).name}"
        run = store.create(cfg.kind, cfg.eval.substrate, cfg.eval.fm, config, cfg.seed, command=command,
                           inputs={"target_image": cfg.target_image} if cfg.target_image else None)
    with setting_up(run, new=resume is None):
        if on_start is not None:  # first: a page shows the run (its id) even when the rest of the set-up fails
            on_start(run)
        record_weights(run, moved)  # by content, which a resume with the weights moved checks them by
        if state is None:
            state = {"iteration": 0, "search": make_search(cfg, sub.n_params, start_theta(cfg, sub)), "metrics": []}
    search = state["search"]

    def step(it: int) -> dict:
        thetas = search.ask()
        seeds = search_seeds(cfg, it, len(thetas))
        z, thumbs = evaluate(cfg.eval, thetas, seeds, client)
        losses = objective(z) if cfg.kind != "illuminate" else None
        final = z[:, :, -1].mean(axis=1)
        final /= np.maximum(np.linalg.norm(final, axis=1, keepdims=True), 1e-12)
        # a member whose simulation diverged from any of its initial states has NaN embeddings (embed_rollouts):
        # it is told as failed (ranked last, never kept) and counted in the metrics' `diverged`
        diverged = ~np.isfinite(z).reshape(len(z), -1).all(axis=1)
        before = getattr(search, "best_loss", None)
        info = search.tell(thetas, losses, final, **({"failed": diverged} if diverged.any() else {}))
        info["diverged"] = int(diverged.sum())
        if cfg.kind != "illuminate" and search.best_loss != before:
            # the initial state the best θ scored from (the first of its bs): best.mp4 plays it from there, not
            # from seed 0, where a seeded substrate (Boids, Game of Life, NCA, …) scores otherwise
            state["best_seed"] = int(seeds[0])
        if cfg.kind == "illuminate":  # thumbnails of the current population, for the atlas
            # keyed by θ and embedding: the same θ from another initial state (own child seeds) is another member;
            # with the initial-state seed of the thumbnail (the first of its bs), so the Lab can play it again
            first = np.asarray(seeds)[:, 0] if np.ndim(seeds) == 2 else [seeds[0]] * len(thetas)
            new = {_key(t, e): (th, int(s)) for t, e, th, s in zip(thetas, final, thumbs, first, strict=True)}
            state["thumbs"] = _thumb_table({**_thumb_dict(state.get("thumbs")), **new}, *search.population())
        latest.offer(thumbs)
        if it == cfg.iters - 1:
            latest.flush()  # the last batch, while the run is still held (the loop's end lets go of it)
        if on_population is not None:
            on_population(thetas, thumbs)
        return info

    latest = LatestPopulation(run)
    try:
        ended = checkpointed_loop(run, state, cfg.iters, step, lambda: finish(run, cfg, search, state),
                                  should_stop=should_stop, on_iteration=on_iteration)
    finally:
        with contextlib.suppress(Exception):  # a picture for pages: the run's own outcome is what counts
            latest.flush()
    return ended


class LatestPopulation:
    """A run's population.png: the final frames of the batch it evaluated last, which a page that opens the run
    shows. Written at most every `every` seconds while the loop runs (PNG-encoding 256 thumbnails costs 25-160 ms,
    and a GPU iteration of 16 aims at 40 ms) and once more when the loop ends, short of a kill."""

    def __init__(self, run: Run, every: float = 2.0) -> None:
        self.run, self.every = run, every
        self.pending: np.ndarray | None = None
        self.written_at = -math.inf

    def offer(self, thumbs: np.ndarray) -> None:
        self.pending = thumbs
        if time.monotonic() - self.written_at >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.pending is not None:
            self.run.write_png("population.png", population_grid(self.pending))
            self.pending, self.written_at = None, time.monotonic()


def _upgrade(state: dict | None) -> dict | None:
    """A checkpoint of an older version (a trusted pickle) in today's layout."""
    if state is None:
        return None
    state.pop("best_thumb", None)  # best.png is rendered from the best θ at the end now
    # rows of a version that did not count diverged candidates: null there (not counted), not absent. metrics.parquet
    # takes its columns from its first row (pyarrow's from_pylist), so a resumed run's `diverged` was dropped
    # from the table whole: `workbench asal` warned of none, `runs show` and a reopened Search page said none
    for row in state.get("metrics") or []:
        if isinstance(row, dict):
            row.setdefault("diverged", None)
    if "thumbs" in state and not (isinstance(state["thumbs"], dict) and "thetas" in state["thumbs"]):
        known = {k: (image, -1) for k, image in (state.pop("thumbs") or {}).items()}  # θ bytes → thumbnail
        state["thumbs"] = _thumb_table(known, np.stack([np.frombuffer(k, np.float64) for k in known])) \
            if known else None
    return state


def finish(run: Run, cfg: SearchConfig, search, state: dict) -> None:
    """Final tables and pictures: population.parquet, best.npy (an illumination's: its first member, for the
    readers that open any run's best.npy; no member of a diverse population ranks above another), best.png +
    best.mp4 (the best θ rendered from the initial state it scored its best loss from, run.json's best_seed, at
    the config's render size; best.png is the last frame), or thumbs.npy + atlas.png.

    best_loss is the lowest loss of one evaluation (bs initial states) seen in the run, as the reference's
    best member: on a seeded substrate another initial state scores the same θ otherwise."""
    from workbench.export import export

    sub, _ = components(cfg.eval)
    thetas, z = search.population()
    table = {"theta": [np.asarray(t, np.float64).tolist() for t in thetas]}  # exact: members play again from it
    if z is not None:
        table["embedding"] = [e.astype(np.float32).tolist() for e in z]
    if cfg.kind == "illuminate":
        known = _thumb_dict(state.get("thumbs"))
        cell = next(iter(known.values()))[0].shape if known else (8, 8, 3)
        # final-frame thumbnails in population order, for the atlas page (zeros where none was kept), and the
        # initial-state seed each came from (−1: not kept, in runs made before seeds were)
        kept = [_thumb(known, t, e, (np.zeros(cell, np.uint8), -1)) for t, e in zip(thetas, z, strict=True)]
        table["seed"] = [seed for _, seed in kept]
    run.write_table("population", table)
    if cfg.kind == "illuminate":
        best = thetas[0]
        thumbs = np.stack([image for image, _ in kept])
        run.write_array("thumbs.npy", thumbs)
        run.write_png("atlas.png", atlas_image(thumbs, z))
        if kept and kept[0][1] >= 0:  # best.npy is member 0: the figures, the video and the Lab play it from the
            run.update(best_seed=int(kept[0][1]))  # initial state its thumbnail and embedding came from (seed 0 before)
    else:
        best = search.best_theta
        seed = int(state.get("best_seed", 0))  # runs checkpointed before it was kept: seed 0, as they rendered
        export(sub, sub.decode(best), cfg.eval.steps, run.path / "best.mp4", size=cfg.eval.size,
               every=max(1, cfg.eval.steps // 120), final_png=run.path / "best.png", seed=seed)
        run.update(best_seed=seed)
    run.write_array("best.npy", np.asarray(best, np.float64))
    run.update(status="done")


def _thumb_dict(table: dict | None) -> dict[bytes, tuple[np.ndarray, int]]:
    """(thumbnail, initial-state seed) by θ and embedding (as bytes) from their checkpointed table {"thetas",
    "embeddings", "images", "seeds"}; tables made before embeddings were kept are by θ, before seeds, seed −1."""
    if not table:
        return {}
    n = len(table["thetas"])
    zs = table.get("embeddings")
    zs = [None] * n if zs is None else zs
    seeds = table.get("seeds")
    seeds = [-1] * n if seeds is None else seeds
    return {_key(t, z): (image, int(s))
            for t, z, image, s in zip(table["thetas"], zs, table["images"], seeds, strict=True)}


def _thumb(known: dict, theta: np.ndarray, z: np.ndarray | None, default=None):
    """The entry of the member (θ, z), or of θ in a table from before embeddings were kept."""
    hit = known.get(_key(theta, z))
    return known.get(_key(theta), default) if hit is None else hit


def _thumb_table(known: dict, thetas: np.ndarray, zs: np.ndarray | None = None) -> dict | None:
    """The thumbnails (and seeds) of the distinct members (θ, embedding) of a population that have one, as arrays
    (for the checkpoint)."""
    rows = {}
    for t, z in zip(thetas, [None] * len(thetas) if zs is None else zs, strict=True):
        k, entry = _key(t, z), _thumb(known, t, z)
        if entry is not None and k not in rows:
            rows[k] = (np.asarray(t, np.float64), z, *entry)
    if not rows:
        return None
    table = {"thetas": np.stack([r[0] for r in rows.values()]), "images": np.stack([r[2] for r in rows.values()]),
             "seeds": np.array([r[3] for r in rows.values()], np.int64)}
    if zs is not None:
        table["embeddings"] = np.stack([np.asarray(r[1], np.float32) for r in rows.values()])
    return table


def _key(theta: np.ndarray, z: np.ndarray | None = None) -> bytes:
    key = np.asarray(theta, np.float64).tobytes()
    return key if z is None else key + np.asarray(z, np.float32).tobytes()


def atlas_image(thumbs: np.ndarray, z: np.ndarray | None) -> np.ndarray:
    """The population's thumbnails on a square grid, laid out by a PCA of the embeddings and snapped to
    the grid (the layout of the /atlas page with its default projection)."""
    side = math.ceil(math.sqrt(len(thumbs)))
    cells = np.arange(len(thumbs))
    if z is not None and len(z) > 1:
        cells = snap_to_grid(project(z, "pca"), side)
    return compose(thumbs, cells, side)


def best_seed(run: Run, info: dict | None = None) -> int:
    """The initial-state seed a run's best θ (best.npy) plays from: run.json's best_seed; for an illumination
    made before it recorded one, member 0's thumbnail seed (best.npy is member 0); else 0, as older runs
    rendered."""
    info = run.info if info is None else info
    if "best_seed" in info:
        return int(info["best_seed"])
    if info.get("kind") == "illuminate" and (run.path / "population.parquet").exists():
        return population_member(run, 0)[1] or 0
    return 0


def read_population(run: Run) -> tuple[dict, np.ndarray]:
    """A finished illumination's population.parquet (as columns) and thumbs.npy, from one write: `finish` writes
    them one after the other, again when a resume extends the run, and a reader between the two paired one write's
    members with another's thumbnails (Run.read_together)."""
    return run.read_together(("population.parquet", "thumbs.npy"), lambda: (
        run.read_table("population").to_pydict(), run.read_array("thumbs.npy")))


def population_member(run: Run, member: int | str) -> tuple[np.ndarray, int | None]:
    """θ of population member `member` (an index, or its text from a URL) of a finished illumination run
    (population.parquet), and the initial-state seed of its thumbnail (None where the run did not keep it)."""
    if not (run.path / "population.parquet").exists():
        raise ValueError(f"run {run.id!r} has no population (only finished illumination runs have one)")
    table = run.read_table("population")
    thetas = table.column("theta").to_pylist()
    try:
        k = int(member)
    except (TypeError, ValueError):
        raise ValueError(f"member must be a population index, got {member!r}") from None
    if not 0 <= k < len(thetas):
        raise ValueError(f"run {run.id!r} has population members 0 to {len(thetas) - 1}, not {k}")
    seed = table.column("seed")[k].as_py() if "seed" in table.column_names else None
    return np.asarray(thetas[k], np.float64), (None if seed is None or seed < 0 else int(seed))
