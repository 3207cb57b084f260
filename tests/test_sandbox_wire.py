"""The wire between the judge and the sandboxed candidate (harness/sandbox/runner/wire.py): plain data only."""

import importlib.util
import math
from collections import Counter, namedtuple

import pytest

from harness.engine.programs import Program
from harness.sandbox.walls import RUNNER_DIR

# ---------------------------------------------------------------------------------------------------------------
# The wire: plain data only


def load_wire():
    spec = importlib.util.spec_from_file_location("sandbox_wire", RUNNER_DIR / "wire.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wire = load_wire()


def same(a, b) -> bool:
    """Equal with the exact same built-in types all the way down, NaN equal to NaN, -0.0 apart from 0.0."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def test_plain_data_crosses_unchanged():
    value = {"nested": (1, 2.5, [None, True, False], {3, 4}, frozenset({(5, "six")})), (7, 8): b"\x00\xff",
             "complex": 1 - 2j, "nan": float("nan"), "negative zero": -0.0, "inf": float("-inf"), "empty": ((), set()),
             10 ** 30: "a big int", "text": "é\n\"\\\u2028"}
    back = wire.decode(wire.encode(value))
    assert same(back, value)
    assert same(wire.decode(wire.encode(("value", value)).encode()), ("value", value))  # bytes lines too


def test_subclasses_cross_as_their_plain_built_in_value():
    class Yes(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    back = wire.decode(wire.encode(Yes(3)))
    assert type(back) is int and back == 3 and back != 4
    point = namedtuple("Point", "x y")(1, 2)
    assert same(wire.decode(wire.encode([point, Counter("aab")])), [(1, 2), {"a": 2, "b": 1}])


def test_iterators_cross_as_iterators_over_their_items_and_ranges_as_ranges():
    back = wire.decode(wire.encode((x * x for x in range(4))))
    assert iter(back) is back and list(back) == [0, 1, 4, 9]
    assert wire.decode(wire.encode(range(1, 10, 3))) == range(1, 10, 3)


@pytest.mark.parametrize("value", [object(), len, Program, {"key": object()}, [1, [2, [object()]]]],
                         ids=["object", "function", "class", "in a dict", "deep in lists"])
def test_other_objects_do_not_cross(value):
    with pytest.raises(wire.NotPlainData):
        wire.encode(value)


def test_a_value_that_contains_itself_does_not_cross():
    loop = []
    loop.append(loop)
    with pytest.raises(wire.NotPlainData):
        wire.encode(loop)


HOSTILE_LINES = {
    "deep lists": "[" * 100_000 + "]" * 100_000,
    "deep tags": '{"tuple":[' * 200 + "]}" * 200,
    "huge int": "9" * 5000,
    "unknown tag": '{"evil": 1}',
    "two keys": '{"tuple": [], "set": []}',
    "list in a set": '{"set": [[1]]}',
    "list in a frozenset": '{"frozenset": [[1]]}',
    "dict in a set": '{"set": [{"dict": []}]}',
    "list as a key": '{"dict": [[[1], 2]]}',
    "pair of three": '{"dict": [[1, 2, 3]]}',
    "tag on a non-list": '{"tuple": {"a": 1}}',
    "bad hex": '{"bytes": "zz"}',
    "bytes not text": '{"bytes": 12}',
    "complex of one": '{"complex": [1]}',
    "complex of booleans": '{"complex": [true, 1]}',
    "iterator of a number": '{"iterator": 5}',
    "range of floats": '{"range": [0, 1.5, 1]}',
    "range of step 0": '{"range": [0, 10, 0]}',
    "not json": "{",
    "empty": "",
    "not utf-8": b"\xff\xfe[1]",
    "over the limit": "[" + "1," * (wire.MAX_LINE // 2) + "1]",
}


@pytest.mark.parametrize("line", HOSTILE_LINES.values(), ids=HOSTILE_LINES.keys())
def test_a_hostile_line_is_not_plain_data_and_nothing_else(line):
    with pytest.raises(wire.NotPlainData):
        wire.decode(line)
