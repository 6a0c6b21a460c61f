"""`scripts/sim --runs N [--seed S] [--jobs J] [--trace]`: seeded runs of the election world."""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from tests.sim.world import Outcome, run_seed


def summary(outcome: Outcome) -> tuple[int, list[str], int, int]:
    return outcome.seed, outcome.violations, outcome.elections, outcome.failovers


def one(seed: int) -> tuple[int, list[str], int, int]:
    return summary(run_seed(seed))


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/sim", description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1, help="the first seed (runs use seed, seed+1, ...)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--trace", action="store_true", help="replay one seed and print its trace")
    arguments = parser.parse_args()
    if arguments.trace:
        outcome = run_seed(arguments.seed)
        print(outcome.scenario)
        print("\n".join(outcome.trace))
        return 1 if outcome.violations else 0
    started = time.monotonic()
    failed = 0
    elections = failovers = 0
    seeds = range(arguments.seed, arguments.seed + arguments.runs)
    with ProcessPoolExecutor(arguments.jobs) as pool:
        for seed, violations, elected, failed_over in pool.map(one, seeds, chunksize=16):
            elections += elected
            failovers += failed_over
            if violations:
                failed += 1
                print(f"seed {seed}: {violations[0]} (replay: scripts/sim --trace --seed {seed})")
    took = time.monotonic() - started
    print(
        f"{arguments.runs} runs, {failed} with a violation, {elections} masters elected, "
        f"{failovers} failovers, in {took:.1f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
