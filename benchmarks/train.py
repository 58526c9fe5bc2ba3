"""The Classifr scenario on full data: an 8-class clothing model, then hat and shoes added.

    python benchmarks/train.py [--home DIR]

Runs the real commands on a fresh project (a temp folder unless --home is given):
  1. import clothing-small/train minus hat and shoes; `classifr train --new-head --promote always`
  2. add the hat and shoes photos; `classifr train` (head strategy, warm embedding cache)
  3. for comparison, a joint 10-class `--new-head` run on the same data (never promoted)
and prints wall time, test accuracy, macro F1 and churn of each step side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CLOTHING = REPO_ROOT.parent / "shared" / "datasets" / "clothing-small" / "train"
NEW = ("hat", "shoes")


def classifr(home: Path, *args: str) -> tuple[float, str]:
    env = {**os.environ, "CLASSIFR_HOME": str(home)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "classifr", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"classifr {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="project folder (default: a new temp folder)")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="classifr-train-bench-"))
    old = sorted(p.name for p in CLOTHING.iterdir() if p.is_dir() and p.name not in NEW)
    rows = []
    for label in old:
        classifr(home, "dataset", "add", *map(str, sorted((CLOTHING / label).glob("*.jpg"))), "--label", label)
    seconds, out = classifr(home, "train", "--new-head", "--promote", "always", "--json", "--quiet")
    rows.append(("8 classes, new head (cold cache)", seconds, json.loads(out)))
    for label in NEW:
        classifr(home, "dataset", "add", *map(str, sorted((CLOTHING / label).glob("*.jpg"))), "--label", label)
    seconds, out = classifr(home, "train", "--json", "--quiet")
    rows.append(("+ hat, shoes, extended head (warm cache)", seconds, json.loads(out)))
    seconds, out = classifr(home, "train", "--parent", rows[0][2]["version"], "--new-head", "--promote", "never", "--json", "--quiet")
    rows.append(("10 classes jointly, new head (warm cache)", seconds, json.loads(out)))
    print(f"project: {home}")
    print(f"{'step':44} {'wall s':>7} {'accuracy':>9} {'macro F1':>9} {'churn':>6}  version")
    for name, wall, outcome in rows:
        m, c = outcome["metrics"], outcome["comparison"]
        print(f"{name:44} {wall:7.1f} {m['accuracy']:9.1%} {m['macro_f1']:9.1%} {c['churn']:6.1%}  "
              f"{outcome['version']} (from {outcome['parent']}, +{len(outcome['labels_added'])} labels)")


if __name__ == "__main__":
    main()
