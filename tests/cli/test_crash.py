"""``kill -9`` of ``binance-metrics up`` at random moments, restarted each time, against a local
exchange (in this process) whose market keeps trading while the pipeline is down: in the end the
stored bars equal the reference klines of every trade the exchange made, each trade once."""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import time
from pathlib import Path

from binance_metrics.testing.exchange import LocalExchange
from binance_metrics.testing.market import load_trades
from tests.cli.local_up import UpRuns, alive, as_message, children_of
from tests.cli.support import run_cli
from tests.pipeline.support import assert_bars_equal_reference, wait_for
from tests.support.data import BTCUSDT_CAPTURE, ETHUSDT_CAPTURE

SYMBOLS = ("BTCUSDT", "ETHUSDT")
SPEED = 10.0  # the 11 minutes of the captures in about 65 s
KILLS = 5
SEED = int(os.environ.get("CRASH_SEED", "20240809"))


def all_dead(pids: list[int]) -> bool:
    return not any(alive(pid) for pid in pids)


def test_kill_9_of_up_at_random_moments_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    plan = [
        (round(rng.uniform(1.0, 9.0), 2), round(rng.uniform(0.5, 3.0), 2)) for _ in range(KILLS)
    ]
    # Printed with every failure: the moments (seconds after each start) and the downtimes.
    context = f"seed {SEED}, kill plan (s after the broker started, s down): {plan}"
    trades = load_trades([BTCUSDT_CAPTURE, ETHUSDT_CAPTURE])
    with LocalExchange.replaying(trades, SPEED) as exchange:
        exchange.ping_interval_s = exchange.ping_timeout_s = 2.0
        runs = UpRuns(tmp_path, exchange, SYMBOLS)
        brokers: list[int] = []
        try:
            for after_s, down_s in plan:
                up = runs.start()
                # The moments count from the broker's start: up is then opening the store,
                # resuming, backfilling or running, and there is a broker to orphan.
                wait_for(
                    functools.partial(children_of, up.pid), 120,
                    f"up to start its broker ({context})",
                )  # fmt: skip
                time.sleep(after_s)
                assert runs.process is not None and runs.process.poll() is None, (
                    f"{context}\n{runs.logs()}"
                )
                orphans = runs.kill()
                brokers += orphans
                wait_for(
                    functools.partial(all_dead, orphans), 30,
                    f"the broker {orphans} to die with its parent ({context})",
                )  # fmt: skip
                time.sleep(down_s)  # the market trades on
            runs.start()
            exchange.wait_done(300)
            total = len(exchange.trades)
            wait_for(
                lambda: runs.stored_trades() >= total, 180,
                f"all {total} trades in the stored bars ({context})",
            )  # fmt: skip
            assert runs.stop() == 0, f"{context}\n{runs.logs()}"
        finally:
            if runs.process is not None and runs.process.poll() is None:
                runs.process.kill()
    happened = [as_message(trade) for trade in exchange.trades]
    for symbol in SYMBOLS:
        stored = runs.stored_bars(symbol)
        expected = [t for t in happened if t.symbol == symbol]
        released = len(expected)
        counted = sum(int(str(bar["trade_count"])) for bar in stored)
        print(f"{symbol}: {released} trades released, {counted} counted in the stored bars")
        try:
            assert_bars_equal_reference(stored, expected)
        except AssertionError as exc:
            raise AssertionError(f"{symbol}: {exc} ({context})\n{runs.logs()}") from exc
    assert brokers, "no kill found a broker to orphan: the kills came too early to test that"
    audit = run_cli(tmp_path, "audit", "--format", "json")
    assert (audit.returncode, json.loads(audit.stdout)) == (0, []), audit.stderr[-2000:]


def test_the_embedded_broker_killed_is_restarted_and_nothing_is_lost(tmp_path: Path) -> None:
    trades = load_trades([BTCUSDT_CAPTURE, ETHUSDT_CAPTURE])
    with LocalExchange.replaying(trades, SPEED) as exchange:
        exchange.ping_interval_s = exchange.ping_timeout_s = 2.0
        runs = UpRuns(
            tmp_path, exchange, SYMBOLS, INGEST__HEAL_EVERY_S="2", INGEST__HEAL_SETTLE_S="2"
        )
        up = runs.start()
        try:
            wait_for(lambda: runs.health()["produced"] > 5000, 120, "trades flowing")
            (broker,) = children_of(up.pid)
            os.kill(broker, signal.SIGKILL)  # every record of every topic is gone with it
            restarted = wait_for(
                lambda: [pid for pid in children_of(up.pid) if pid != broker and alive(pid)],
                60, "up to start its broker again",
            )  # fmt: skip
            exchange.wait_done(300)
            total = len(exchange.trades)
            wait_for(lambda: runs.stored_trades() >= total, 240, f"all {total} trades stored")
            healed = runs.health()["ledger"]["healedTrades"]
            assert runs.stop() == 0, runs.logs()
        finally:
            if up.poll() is None:
                up.kill()
    print(f"broker {broker} killed, restarted as {restarted}; {healed} trades healed")
    happened = [as_message(trade) for trade in exchange.trades]
    for symbol in SYMBOLS:
        assert_bars_equal_reference(
            runs.stored_bars(symbol), [t for t in happened if t.symbol == symbol]
        )
    audit = run_cli(tmp_path, "audit", "--format", "json")
    assert (audit.returncode, json.loads(audit.stdout)) == (0, []), audit.stderr[-2000:]
