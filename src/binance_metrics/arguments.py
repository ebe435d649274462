"""Command-line argument parsing: one-line usage errors, defaults in ``--help``, value types.

A usage error is one line, ``PROG: error: WHAT (see PROG --help)``, and exit status 2, like
every other configuration error of ``binance-metrics``; the full usage is one ``--help`` away.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, NoReturn

from binance_metrics.intervals import parse_offset

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_EPOCH_MS: Final = 10**11  # 1973-03-03: a smaller number is epoch seconds, or a typo
_MAX_EPOCH_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999, datetime's last instant


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless it has none (None, a flag's False) or says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An argument parser (and its sub-command parsers) with one-line errors and defaults shown."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def time_value(text: str) -> datetime:
    """An ISO date or time (naive: UTC), or epoch milliseconds as ``bars`` prints ``open_time``.

    Eight digits are an ISO basic date (``20240809``), not milliseconds.
    """
    text = text.strip()
    if text.isdigit() and len(text) != 8:
        ms = int(text)
        if ms < _MIN_EPOCH_MS:
            raise argparse.ArgumentTypeError(
                f"{text} is too small for epoch milliseconds (before 1973); "
                f"in seconds? then {text}000"
            )
        if ms > _MAX_EPOCH_MS:
            raise argparse.ArgumentTypeError(f"{text} is too large for epoch milliseconds")
        return EPOCH + timedelta(milliseconds=ms)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO date/time (2024-08-09T00:01) nor epoch milliseconds "
            "(1723161660000)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    """A number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value


def port(text: str) -> int:
    """A TCP port, 1 to 65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, not {value}")
    return value


def attach_negative_values(argv: Sequence[str], options: Sequence[str]) -> list[str]:
    """``--timezone -03:30`` as ``--timezone=-03:30``: argparse takes a value that starts with
    ``-`` (and is not a plain negative number) for an option, and refuses the flag."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in options:
            value = next(it, None)
            if value is not None and value[:1] == "-" and value[1:2].isdigit():
                out.append(f"{arg}={value}")
                continue
            out.append(arg)
            if value is not None:
                out.append(value)
            continue
        out.append(arg)
    return out


def utc_offset(text: str) -> int:
    """A UTC offset as Binance's ``timeZone`` takes it (``+08:00``, ``-03:30``, ``8``), in ms."""
    try:
        return parse_offset(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def day_value(text: str) -> date:
    """A calendar day, ``YYYY-MM-DD``."""
    try:
        return date.fromisoformat(text.strip()) if len(text.strip()) == 10 else _not_a_day(text)
    except ValueError:
        return _not_a_day(text)


def _not_a_day(text: str) -> NoReturn:
    raise argparse.ArgumentTypeError(f"{text!r} is not a day as YYYY-MM-DD (2024-08-09)")
