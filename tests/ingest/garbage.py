"""Hypothesis strategies for frames that must go to the dead-letter topic.

Each strategy yields frames that are *certainly* invalid (a mutated real frame, random bytes,
random text, oversized frames), never a valid trade or a control message.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

REAL_FRAME: dict[str, Any] = {
    "stream": "btcusdt@trade",
    "data": {
        "e": "trade",
        "E": 1723161255343,
        "s": "BTCUSDT",
        "t": 3735683259,
        "p": "61837.63000000",
        "q": "0.02000000",
        "T": 1723161255342,
        "m": True,
        "M": True,
    },
}
REQUIRED = ("e", "E", "s", "t", "p", "q", "T", "m")
WRONG_TYPES: dict[str, list[Any]] = {
    "E": ["1723161255343", 1.5, None, [], True],
    "t": ["3735683259", 3.5, None, {}],
    "p": [61837.63, None, 1, []],
    "q": [0.02, None, 2],
    "T": ["x", None, 2.5],
    "m": ["true", 1, None],
    "s": [1, None, ["BTCUSDT"]],
}
BAD_DECIMALS = [
    "0",
    "0.00000000",
    "-1.00000000",
    "",
    "abc",
    "1e5",
    "1.000000001",
    "NaN",
    "1,5",
    " 1",
    "٣",
]
CONTROL_MARKERS = (b"serverShutdown", b'"result"', b'"code"')


def _mutations(frame: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    def without(key: str) -> dict[str, Any]:
        data = dict(frame["data"])
        del data[key]
        return {**frame, "data": data}

    def with_value(key: str, value: Any) -> dict[str, Any]:
        return {**frame, "data": {**frame["data"], key: value}}

    return st.one_of(
        st.sampled_from(REQUIRED).map(without),
        st.sampled_from(sorted(WRONG_TYPES)).flatmap(
            lambda key: st.sampled_from(WRONG_TYPES[key]).map(lambda v: with_value(key, v))
        ),
        st.tuples(st.sampled_from(["p", "q"]), st.sampled_from(BAD_DECIMALS)).map(
            lambda kv: with_value(*kv)
        ),
        st.just(
            {**frame, "stream": "xrpusdt@trade", "data": {**frame["data"], "s": "XRPUSDT"}}
        ),  # not subscribed
        st.just({**frame, "data": {**frame["data"], "s": "ETHUSDT"}}),  # stream/symbol mismatch
        st.just({**frame, "data": {**frame["data"], "s": "btcusdt"}}),  # lower-case symbol
        st.just({**frame, "data": {**frame["data"], "e": "aggTrade"}}),  # wrong event type
        st.just({"stream": frame["stream"]}),
        st.just(frame["data"]),  # unwrapped trade
    )


def mutated_frames(frame: dict[str, Any] = REAL_FRAME) -> st.SearchStrategy[bytes]:
    return _mutations(frame).map(lambda f: json.dumps(f).encode())


def random_payloads() -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)).filter(
        lambda raw: not any(marker in raw for marker in CONTROL_MARKERS)
    )


def oversized_frames(limit: int) -> st.SearchStrategy[bytes]:
    def pad(size: int) -> bytes:
        return json.dumps({**REAL_FRAME, "padding": "x" * size}).encode()

    return st.integers(min_value=limit, max_value=limit + 10_000).map(pad)


def garbage(limit: int) -> st.SearchStrategy[bytes]:
    """Frames of every kind above; ``limit`` is the parser's ``max_frame_bytes``."""
    return st.one_of(mutated_frames(), random_payloads(), oversized_frames(limit))
