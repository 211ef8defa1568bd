"""The snapshot format: a model's state as plain data, read back without running code.

A state object is written as a tree of MessagePack values. Scalars (``None``, bools,
64-bit integers, floats, text, bytes) are themselves; every container is an array whose
first element is a tag saying what it is:

=============  ==========================================================
tag            array
=============  ==========================================================
``LIST``       ``[0, item, ...]``
``TUPLE``      ``[1, item, ...]``
``DICT``       ``[2, key, value, key, value, ...]`` (keys of any plain kind)
``OBJECT``     ``[3, "module.Class", state]``
``NDARRAY``    ``[4, dtype, [dim, ...], raw bytes]`` (numbers and bools only)
``NPSCALAR``   ``[5, dtype, raw bytes]``
``DEQUE``      ``[6, maxlen, item, ...]``
``COUNTER``    ``[7, key, count, ...]``
``ORDERED``    ``[8, key, value, ...]`` (an ``OrderedDict``)
``ARRAY``      ``[9, typecode, raw bytes]`` (an ``array.array`` of numbers)
=============  ==========================================================

An object's class is named by its module and qualified name, and only the classes of
:func:`allowlist` may appear: anything else is refused when written and when read. An
object is written as its ``__getstate__()`` and read back as ``cls.__new__(cls)`` plus
``__setstate__`` (or an update of its ``__dict__`` / slots), except for a few classes
with an adapter below: pydantic settings travel as their JSON-mode dump and are
validated again; river's Page-Hinkley drops the bound method it keeps; river's Rust
ADWIN window travels as the constructor arguments and state bytes it gives pickle,
which only its own ``__setstate__`` interprets. Nothing is looked up by a name read
from the data except in the allowlist, and no function named by the data is called.

>>> from collections import deque
>>> import numpy as np
>>> tree = {"window": deque([0.5, 1.0], maxlen=3), ("kind", 1): np.arange(3.0)}
>>> back = loads(dumps(tree))
>>> back["window"], back["kind", 1]
(deque([0.5, 1.0], maxlen=3), array([0., 1., 2.]))
>>> dumps(print)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
stream_monitor.core.codec.CodecError: cannot store a builtin_function_or_method: ...
"""

from __future__ import annotations

import functools
import math
from array import array
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
from pydantic import BaseModel

LIST, TUPLE, DICT, OBJECT, NDARRAY, NPSCALAR, DEQUE, COUNTER, ORDERED, ARRAY = range(10)
MAX_DEPTH = 64
"""Deeper trees are refused: no state nests half as deep."""

# Array element kinds that are plain numbers: bools, signed and unsigned ints, floats.
_NUMERIC_KINDS = frozenset("biuf")
_ARRAY_TYPECODES = frozenset("bBhHiIlLqQfd")
_INT64 = (-(2**63), 2**64 - 1)  # what MessagePack carries: int64 and uint64


class CodecError(ValueError):
    """Data that is not a snapshot of this format, or state that cannot be stored."""


@functools.cache
def allowlist() -> dict[str, type[Any]]:
    """The classes a snapshot may hold, by ``module.QualifiedName``.

    A class added to a model's state must be added here (its attributes plain data or
    other classes of this list); the codec's round-trip test fails otherwise.
    """
    # Imported here: these modules import the monitor, which imports this one.
    from river.drift import ADWIN, PageHinkley
    from river.stats import Mean

    from stream_monitor.config import (
        EstimationSettings,
        FeatureDriftSettings,
        ModelSettings,
        PerformanceSettings,
        PolicySettings,
    )
    from stream_monitor.core import estimation, features, join, monitor, performance, policy

    classes: list[type[Any]] = [
        monitor.ModelState,
        monitor.VersionState,
        join.LabelJoin,
        performance.PerformanceTracker,
        policy.EpisodeState,
        features.FeatureDriftTracker,
        features._Events,
        features._Column,
        features._NumericGroup,
        features._CategoricalGroup,
        features._Breakage,
        estimation.PerformanceEstimator,
        estimation.Calibrator,
        estimation.Comparison,
        ModelSettings,
        PerformanceSettings,
        FeatureDriftSettings,
        PolicySettings,
        EstimationSettings,
        ADWIN,
        PageHinkley,
        Mean,
        _adaptive_windowing(),
    ]
    return {_name(cls): cls for cls in classes}


def _adaptive_windowing() -> type[Any]:
    """river's ADWIN window, written in Rust (no importable Python module of its own)."""
    from river.drift import ADWIN

    return type(ADWIN()._helper)


def _name(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# ---- writing ---------------------------------------------------------------------------


def dumps(state: object) -> bytes:
    """``state`` as MessagePack bytes; :class:`CodecError` for anything not storable."""
    return msgspec.msgpack.encode(_plain(state, 0))


def _plain(value: object, depth: int) -> object:
    kind = type(value)
    if kind is float or kind is str or kind is bool or value is None or kind is bytes:
        return value
    if kind is int:
        if not _INT64[0] <= value <= _INT64[1]:  # type: ignore[operator]  # an int
            raise CodecError(f"cannot store the integer {value!r}: beyond 64 bits")
        return value
    if depth > MAX_DEPTH:
        raise CodecError(f"cannot store state nested deeper than {MAX_DEPTH}")
    write = _WRITERS.get(kind)
    if write is not None:
        return write(value, depth + 1)
    if isinstance(value, np.generic) and value.dtype.kind in _NUMERIC_KINDS:
        return [NPSCALAR, value.dtype.str, value.tobytes()]
    name = _name(kind)
    if allowlist().get(name) is not kind:
        raise CodecError(
            f"cannot store a {kind.__qualname__}: not plain data, not on the snapshot allowlist"
        )
    adapter = _adapters().get(name)
    state = adapter[0](value) if adapter else value.__getstate__()
    return [OBJECT, name, _plain(state, depth + 1)]


# Written as they are: no check, no call (most items are floats of detector windows).
_SCALARS = frozenset((float, str, bool, type(None), bytes))


def _items(values: Any, depth: int) -> list[object]:
    return [v if type(v) in _SCALARS else _plain(v, depth) for v in values]


def _pairs(mapping: Any, depth: int) -> list[object]:
    out: list[object] = []
    for key, item in mapping.items():
        out += (_plain(key, depth), _plain(item, depth))
    return out


def _ndarray(value: np.ndarray[Any, Any], depth: int) -> list[object]:
    if value.dtype.kind not in _NUMERIC_KINDS:
        raise CodecError(f"cannot store an array of {value.dtype}: numbers and bools only")
    return [NDARRAY, value.dtype.str, list(value.shape), np.ascontiguousarray(value).tobytes()]


def _array(value: array[Any], depth: int) -> list[object]:
    if value.typecode not in _ARRAY_TYPECODES:
        raise CodecError(f"cannot store an array of typecode {value.typecode!r}")
    return [ARRAY, value.typecode, value.tobytes()]


_WRITERS: dict[type, Callable[[Any, int], object]] = {
    list: lambda v, d: [LIST, *_items(v, d)],
    tuple: lambda v, d: [TUPLE, *_items(v, d)],
    dict: lambda v, d: [DICT, *_pairs(v, d)],
    deque: lambda v, d: [DEQUE, v.maxlen, *_items(v, d)],
    Counter: lambda v, d: [COUNTER, *_pairs(v, d)],
    OrderedDict: lambda v, d: [ORDERED, *_pairs(v, d)],
    np.ndarray: _ndarray,
    array: _array,
}


# ---- reading ---------------------------------------------------------------------------


def loads(data: bytes) -> object:
    """The state :func:`dumps` wrote; :class:`CodecError` for anything else, before any
    object of a class off the allowlist could be made."""
    try:
        tree = msgspec.msgpack.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise CodecError(f"not a MessagePack document: {exc}") from None
    try:
        return _restored(tree, 0)
    except CodecError:
        raise
    except Exception as exc:  # whatever the data made a constructor raise
        raise CodecError(f"state that does not restore: {type(exc).__name__}: {exc}") from None


_READ_AS_IS = _SCALARS | {int}


def _restored(node: object, depth: int) -> Any:
    if type(node) is not list:
        if isinstance(node, dict):  # MessagePack maps are never written
            raise CodecError("unexpected MessagePack map")
        return node
    if depth > MAX_DEPTH:
        raise CodecError(f"state nested deeper than {MAX_DEPTH}")
    if not node or type(node[0]) is not int or not 0 <= node[0] < len(_READERS):
        raise CodecError(f"an array without a known tag: {str(node)[:80]}")
    return _READERS[node[0]](node, depth + 1)


def _read_items(node: list[Any], depth: int, start: int = 1) -> list[Any]:
    return [v if type(v) in _READ_AS_IS else _restored(v, depth) for v in node[start:]]


def _read_pairs(node: list[Any], depth: int, start: int = 1) -> list[tuple[Any, Any]]:
    items = _read_items(node, depth, start)
    if len(items) % 2:
        raise CodecError("a mapping with a key and no value")
    return list(zip(items[::2], items[1::2], strict=True))


def _read_object(node: list[Any], depth: int) -> object:
    if len(node) != 3 or type(node[1]) is not str:
        raise CodecError("a malformed object")
    cls = allowlist().get(node[1])
    if cls is None:
        raise CodecError(f"class {node[1][:200]!r} is not on the snapshot allowlist")
    state = _restored(node[2], depth)
    adapter = _adapters().get(node[1])
    if adapter is not None:
        return adapter[1](cls, state)
    obj = _new(cls)
    if getattr(cls, "__setstate__", None) is not None:
        obj.__setstate__(state)
    elif type(state) is dict:
        obj.__dict__.update(_attributes(state))
    elif type(state) is tuple and len(state) == 2 and type(state[1]) is dict:
        for attribute, value in _attributes(state[1]).items():  # (None, slots), as pickle
            object.__setattr__(obj, attribute, value)
    else:
        raise CodecError(f"a {cls.__qualname__} with state of the wrong shape")
    return obj


def _new(cls: type[Any], *args: object) -> Any:
    """An instance made as pickle makes one, before its state is set."""
    new: Callable[..., Any] = cls.__new__
    return new(cls, *args)


def _attributes(state: dict[Any, Any]) -> dict[str, Any]:
    if not all(type(k) is str and k.isidentifier() and not k.startswith("__") for k in state):
        raise CodecError("attribute names must be identifiers, none of them special (__x__)")
    return state


def _dtype(name: object) -> np.dtype[Any]:
    if type(name) is not str:
        raise CodecError("a dtype must be named by text")
    dtype = np.dtype(name)  # a plain name such as '<f8': it cannot name a Python type
    if dtype.kind not in _NUMERIC_KINDS:
        raise CodecError(f"dtype {name[:40]!r} is not a number or bool")
    return dtype


def _read_ndarray(node: list[Any], depth: int) -> np.ndarray[Any, Any]:
    if len(node) != 4 or type(node[2]) is not list or type(node[3]) is not bytes:
        raise CodecError("a malformed array")
    dtype, shape = _dtype(node[1]), node[2]
    if not all(type(n) is int and n >= 0 for n in shape):
        raise CodecError("an array shape must be non-negative integers")
    if math.prod(shape) * dtype.itemsize != len(node[3]):
        raise CodecError("an array whose bytes do not match its shape")
    return np.frombuffer(node[3], dtype=dtype).reshape(shape).copy()


def _read_scalar(node: list[Any], depth: int) -> np.generic:
    if len(node) != 3 or type(node[2]) is not bytes:
        raise CodecError("a malformed numpy scalar")
    dtype = _dtype(node[1])
    if len(node[2]) != dtype.itemsize:
        raise CodecError("a numpy scalar of the wrong size")
    scalar: np.generic = np.frombuffer(node[2], dtype=dtype)[0]
    return scalar


def _read_deque(node: list[Any], depth: int) -> deque[Any]:
    if len(node) < 2 or not (node[1] is None or type(node[1]) is int):
        raise CodecError("a malformed deque")
    return deque(_read_items(node, depth, 2), maxlen=node[1])


def _read_array(node: list[Any], depth: int) -> array[Any]:
    if len(node) != 3 or node[1] not in _ARRAY_TYPECODES or type(node[2]) is not bytes:
        raise CodecError("a malformed array.array")
    values = array(node[1])
    if len(node[2]) % values.itemsize:
        raise CodecError("an array.array whose bytes do not match its typecode")
    values.frombytes(node[2])
    return values


_READERS: list[Callable[[list[Any], int], Any]] = [
    _read_items,
    lambda n, d: tuple(_read_items(n, d)),
    lambda n, d: dict(_read_pairs(n, d)),
    _read_object,
    _read_ndarray,
    _read_scalar,
    _read_deque,
    lambda n, d: Counter(dict(_read_pairs(n, d))),
    lambda n, d: OrderedDict(_read_pairs(n, d)),
    _read_array,
]


# ---- adapters: (state of an object, object from a state) by class name ------------------


def _settings_state(settings: BaseModel) -> object:
    return settings.model_dump(mode="json")


def _settings_from(cls: type[Any], state: object) -> object:
    model: type[BaseModel] = cls
    return model.model_validate(state)


# river's Page-Hinkley keeps the test of its mode as a bound method; it is chosen again.
_PAGE_HINKLEY_TESTS = {"up": "_test_increase", "down": "_test_decrease", "both": "_test_both"}


def _page_hinkley_state(detector: Any) -> object:
    return {k: v for k, v in detector.__dict__.items() if k != "_test_drift"}


def _page_hinkley_from(cls: type[Any], state: object) -> object:
    if type(state) is not dict or state.get("mode") not in _PAGE_HINKLEY_TESTS:
        raise CodecError("a Page-Hinkley detector without a valid mode")
    detector = _new(cls)
    detector.__dict__.update(_attributes(state))
    detector._test_drift = getattr(detector, _PAGE_HINKLEY_TESTS[state["mode"]])
    return detector


def _window_state(window: Any) -> object:
    # What pickle gets from its __reduce_ex__: constructor arguments (numbers) and the
    # window's buckets serialised by river's Rust code.
    return (window.__getnewargs__(), window.__getstate__())


def _window_from(cls: type[Any], state: object) -> object:
    if not (
        type(state) is tuple
        and len(state) == 2
        and type(state[0]) is tuple
        and all(type(a) in (int, float) for a in state[0])
        and type(state[1]) is bytes
    ):
        raise CodecError("an ADWIN window of the wrong shape")
    window = _new(cls, *state[0])
    window.__setstate__(state[1])
    return window


@functools.cache
def _adapters() -> dict[str, tuple[Callable[[Any], object], Callable[[type[Any], object], object]]]:
    adapters: dict[str, tuple[Callable[[Any], object], Callable[[type[Any], object], object]]] = {}
    for name, cls in allowlist().items():
        if issubclass(cls, BaseModel):
            adapters[name] = (_settings_state, _settings_from)
        elif cls.__qualname__ == "PageHinkley":
            adapters[name] = (_page_hinkley_state, _page_hinkley_from)
        elif cls is _adaptive_windowing():
            adapters[name] = (_window_state, _window_from)
    return adapters
