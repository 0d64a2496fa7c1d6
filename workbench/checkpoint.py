"""Resume state as JSON + NumPy arrays: no pickle, so a run folder someone else wrote cannot run code.

A checkpoint is a tree of plain values: None, bool, int, float, str, lists, tuples, dicts with string
keys, NumPy arrays and scalars, and objects of the types registered here (the searches). `pack` splits a
tree into JSON and a dict of arrays; `unpack` puts it back together, exactly: arrays keep their bytes
and dtypes, NumPy scalars their type, floats their bits (JSON numbers are written as the shortest
repr, which reads back to the same float; inf and nan are spelled out).

    tree, arrays = pack({"iteration": 3, "search": search})      # search: a registered type
    state = unpack(json.loads(json.dumps(tree)), arrays)          # state["search"] is a new search

Searches take part by a `state_dict()` method (a tree of plain values) and a `from_state(state)`
classmethod, and by being registered with `@checkpointable`; unpacking only ever builds registered
types, by name, from plain values. Random generators are written out as their `get_state()` /
`bit_generator.state` (`rng_state`, `rng_from_state`); cmaes optimisers as every attribute they hold
(`cmaes_state`, `cmaes_from_state`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # imported where used: the run store imports this module, and `runs list` needs no NumPy
    import numpy as np

T = TypeVar("T", bound=type)

#: Types a checkpoint may contain, by the name it is written under.
REGISTRY: dict[str, type] = {}


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read back."""


def checkpointable(name: str) -> Callable[[T], T]:
    """Class decorator: objects of the class are written as `{"$object": name, "state": obj.state_dict()}`
    and read back with `cls.from_state(state)`."""

    def register(cls: T) -> T:
        if not (hasattr(cls, "state_dict") and hasattr(cls, "from_state")):
            raise TypeError(f"{cls.__name__} needs state_dict() and from_state() to be checkpointable")
        if REGISTRY.get(name, cls) is not cls:
            raise TypeError(f"checkpoint type name {name!r} is taken by {REGISTRY[name].__name__}")
        family = name.split(".", 1)[0]
        if cls.__module__.startswith("workbench.") and cls.__module__ not in REGISTERING.get(family, ()):
            # a fresh process finds a checkpoint's type by importing its family's modules: list this one there
            raise TypeError(f"{cls.__module__} registers {name!r}: add it to checkpoint.REGISTERING[{family!r}]")
        REGISTRY[name] = cls
        cls._checkpoint_name = name
        return cls

    return register


def pack(tree: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """A JSON-ready tree and the arrays it refers to (by key) for a tree of plain values."""
    import numpy as np

    arrays: dict[str, np.ndarray] = {}

    def put(array: np.ndarray) -> str:
        if array.dtype.hasobject:
            raise CheckpointError("object arrays cannot be checkpointed")
        key = f"a{len(arrays)}"
        arrays[key] = array
        return key

    checked_keys: set[tuple] = set()  # the key tuples of dicts checked already (rows repeat theirs)

    def leaf(v: Any) -> bool:  # a value written as it is: exactly these types (np.float64 is a float subclass)
        t = type(v)
        return t is str or t is int or t is bool or v is None or (t is float and math.isfinite(v))

    def enc(x: Any) -> Any:
        # the common containers of plain values first, their leaves inline: a checkpoint holds the run's
        # per-iteration rows and is written every iteration, so this is the loop's cost as runs grow
        if type(x) is list:
            return [v if leaf(v) else enc(v) for v in x]
        if type(x) is dict:
            keys = tuple(x)
            if keys not in checked_keys:
                for k in keys:
                    if not isinstance(k, str) or k.startswith("$"):
                        raise CheckpointError(f"checkpoint dict keys must be strings not starting with '$', got {k!r}")
                checked_keys.add(keys)
            return {k: v if leaf(v) else enc(v) for k, v in x.items()}
        if isinstance(x, np.generic):  # before float: np.float64 is a float subclass
            return {"$scalar": put(np.asarray(x))}
        if isinstance(x, np.ndarray):
            return {"$array": put(x)}
        if x is None or isinstance(x, bool | int | str):
            return x
        if isinstance(x, float):
            return x if math.isfinite(x) else {"$float": repr(x)}
        if isinstance(x, list):
            return [enc(v) for v in x]
        if isinstance(x, tuple):
            return {"$tuple": [enc(v) for v in x]}
        if isinstance(x, dict):
            for k in x:
                if not isinstance(k, str) or k.startswith("$"):
                    raise CheckpointError(f"checkpoint dict keys must be strings not starting with '$', got {k!r}")
            return {k: enc(v) for k, v in x.items()}
        name = getattr(type(x), "_checkpoint_name", None)
        if name is not None and REGISTRY.get(name) is type(x):
            return {"$object": name, "state": enc(x.state_dict())}
        raise CheckpointError(f"cannot checkpoint a {type(x).__name__}; register it with @checkpointable")

    return enc(tree), arrays


#: the modules whose import registers each family's checkpointable types (REGISTRY fills as they are imported):
#: a checkpoint read in a fresh process (a notebook, a page) finds its types without the caller knowing them
REGISTERING = {"asal": ("workbench.asal.search", "workbench.asal.rules"), "experts": ("workbench.experts.cem",),
               "merge": ("workbench.merge.search",), "qd": ("workbench.qd.cycle",)}


def _import_registering(name: str):
    """The registered type `name` ("asal.RuleGA") after importing the modules of its family; None if unknown."""
    import importlib

    for module in REGISTERING.get(name.split(".", 1)[0], ()):
        importlib.import_module(module)
    return REGISTRY.get(name)


def unpack(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The tree `pack` was given, from its JSON tree and arrays."""

    def get(key: Any) -> np.ndarray:
        if not isinstance(key, str) or key not in arrays:
            raise CheckpointError(f"the checkpoint refers to an array {key!r} it does not hold")
        return arrays[key]

    def dec(x: Any) -> Any:
        if isinstance(x, list):
            return [dec(v) for v in x]
        if not isinstance(x, dict):
            return x
        if len(x) == 1:
            (tag, value), = x.items()
            if tag == "$array":
                return get(value)
            if tag == "$scalar":
                return get(value)[()]
            if tag == "$float":
                if value not in ("inf", "-inf", "nan"):
                    raise CheckpointError(f"bad float {value!r} in the checkpoint")
                return float(value)
            if tag == "$tuple":
                return tuple(dec(v) for v in value)
        if set(x) == {"$object", "state"}:
            cls = REGISTRY.get(x["$object"]) or _import_registering(x["$object"])
            if cls is None:
                raise CheckpointError(f"the checkpoint holds an object of unknown type {x['$object']!r}")
            return cls.from_state(dec(x["state"]))
        return {k: dec(v) for k, v in x.items()}

    return dec(tree)


# --- random generators -------------------------------------------------------------------------------------------

def rng_state(rng: np.random.RandomState | np.random.Generator) -> dict:
    """The complete state of a legacy RandomState or a Generator, as plain values and arrays."""
    import numpy as np

    if isinstance(rng, np.random.RandomState):
        return {"type": "RandomState", "state": rng.get_state(legacy=False)}
    if isinstance(rng, np.random.Generator):
        return {"type": "Generator", "state": rng.bit_generator.state}
    raise CheckpointError(f"not a NumPy random generator: {type(rng).__name__}")


def rng_from_state(state: dict) -> np.random.RandomState | np.random.Generator:
    """A generator that continues exactly where the one `rng_state` read left off."""
    import numpy as np

    inner = state["state"]
    if state["type"] == "RandomState":
        rng = np.random.RandomState()
        rng.set_state(inner)
        return rng
    if state["type"] == "Generator":
        bit_generators = {"PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM, "MT19937": np.random.MT19937,
                          "Philox": np.random.Philox, "SFC64": np.random.SFC64}
        kind = inner.get("bit_generator")
        if kind not in bit_generators:
            raise CheckpointError(f"unknown bit generator {kind!r} in the checkpoint")
        bit_generator = bit_generators[kind]()
        bit_generator.state = inner
        return np.random.Generator(bit_generator)
    raise CheckpointError(f"unknown random generator type {state['type']!r} in the checkpoint")


# --- cmaes optimisers -------------------------------------------------------------------------------------------

def _cmaes_classes() -> dict[str, type]:
    from cmaes import CMA, CMAwM, SepCMA

    from workbench.fast_cma import FastCMA

    return {"SepCMA": SepCMA, "CMA": CMA, "CMAwM": CMAwM, "FastCMA": FastCMA}


def fresh_cmaes(opt: Any) -> Any:
    """`opt`, a new cmaes optimiser, with its function-history array zeroed. cmaes allocates it with np.empty and
    fills it a generation at a time (only its should_stop reads it, once full): a checkpoint held the leftover
    process memory of the slots not yet written (heap addresses, text), other bytes in each identical run."""
    import numpy as np

    for o in (opt, getattr(opt, "_cma", None)):  # CMAwM keeps a CMA of its own
        if o is not None and isinstance(getattr(o, "_funhist_values", None), np.ndarray):
            o._funhist_values[:] = 0.0
    return opt


def cmaes_state(opt: Any, copy: bool = True) -> dict:
    """Every attribute of a cmaes SepCMA / CMA / CMAwM (CMAwM's inner CMA included) or of a FastCMA, and its
    RandomState.

    cmaes' own pickling drops the generator and stores C as its upper triangle (not bit-exact once
    updates leave C a hair asymmetric); this keeps both exactly.

    copy: the arrays as copies (the default), so the state is a snapshot: cmaes updates some of them in place
    (the mean, the function history), and a state holding the optimiser's own arrays changed with every later
    tell (`from_state` of a `state_dict()` taken earlier went on from a later mean). False: the optimiser's own
    arrays, for a caller that writes the state out before the next tell (a run's checkpoint of a large CMA)."""
    from importlib import metadata

    import numpy as np

    name = type(opt).__name__
    if _cmaes_classes().get(name) is not type(opt):
        raise CheckpointError(f"not a cmaes optimiser this version knows: {name}")
    attrs = {}
    for key, value in vars(opt).items():
        if key == "_rng":
            continue
        if type(value).__name__ in _cmaes_classes():
            attrs[key] = {"nested_cmaes": cmaes_state(value, copy)}
        else:
            attrs[key] = value.copy() if copy and isinstance(value, np.ndarray) else value
    out = {"class": name, "cmaes": metadata.version("cmaes"), "attrs": attrs}
    if "_rng" in vars(opt):  # CMAwM's generator is its inner CMA's
        out["rng"] = rng_state(opt._rng)
    return out


def cmaes_from_state(state: dict, copy: bool = True) -> Any:
    """The optimiser `cmaes_state` wrote, continuing bit for bit. A checkpoint written by another cmaes
    version is accepted only if the optimiser still has exactly the same attributes.

    copy: the optimiser gets copies of the state's arrays (the default), so that its tells leave the state as it
    was and two optimisers made from one state go on independently; False: it takes them (a state read from disk
    that nothing else holds)."""
    from importlib import metadata

    import numpy as np

    classes = _cmaes_classes()
    cls = classes.get(state["class"])
    if cls is None:
        raise CheckpointError(f"unknown cmaes optimiser {state['class']!r} in the checkpoint")
    attrs = {k: cmaes_from_state(v["nested_cmaes"], copy) if isinstance(v, dict) and set(v) == {"nested_cmaes"}
             else v.copy() if copy and isinstance(v, np.ndarray) else v
             for k, v in state["attrs"].items()}
    installed = metadata.version("cmaes")
    if state.get("cmaes") != installed:
        expected = set(vars(_probe(cls, attrs))) - {"_rng"}
        if set(attrs) != expected:
            raise CheckpointError(f"the checkpoint was written with cmaes {state.get('cmaes')}, whose {cls.__name__} "
                                  f"differs from cmaes {installed}'s; install cmaes=={state.get('cmaes')} to resume it")
    opt = cls.__new__(cls)
    opt.__dict__.update(attrs)
    if "rng" in state:
        opt._rng = rng_from_state(state["rng"])
    return opt


def _probe(cls: type, attrs: dict) -> Any:
    """A small optimiser of the same class and structure, to list the attributes this cmaes version uses."""
    import numpy as np

    if cls.__name__ == "CMAwM":
        discrete = attrs.get("_n_zdim", 1) > 0
        return cls(mean=np.full(2, 0.5), sigma=0.1, bounds=np.array([[0.0, 1.0]] * 2),
                   steps=np.array([0.0, 1.0 if discrete else 0.0]), seed=0)
    return cls(mean=np.zeros(2), sigma=0.1, seed=0)


def dataclass_state(obj: Any) -> dict:
    """The fields of a dataclass instance (e.g. pyribs' ArchiveStats), shallow."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
