"""How fast images go into the project dataset, side by side with copying the same files.

    python benchmarks/dataset.py [--source FOLDER]

Prints, for the 3,068 photos of clothing-small/train (default):
  * baseline: copy every file and fsync it (the least any safe store must do);
  * `ProjectDataset.add_many` (decode check, hash, atomic write, fsynced rows), and again (all duplicates);
  * `import_dataset` (the same plus `datasets.load_dataset` reading the folder);
  * single adds from 8 processes at once (50 each), as the app and CLI would write concurrently.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "datasets" / "clothing-small" / "train"

from classifr.data.dataset import Example, ProjectDataset  # noqa: E402
from classifr.data.importing import import_dataset  # noqa: E402

WORKER = """
import sys
from pathlib import Path
from classifr.data.dataset import Example, ProjectDataset
dataset = ProjectDataset(Path(sys.argv[1]))
for path in sys.argv[2:]:
    dataset.add(Example(Path(path), "worker"), source="upload")
"""


def copy_baseline(files: list[Path], out: Path) -> float:
    started = time.perf_counter()
    for i, path in enumerate(files):
        target = out / f"{i}{path.suffix}"
        shutil.copyfile(path, target)
        with open(target, "rb+") as handle:
            os.fsync(handle.fileno())
    return time.perf_counter() - started


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def parallel_adds(files: list[Path], root: Path) -> float:
    started = time.perf_counter()
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(root), *map(str, files[n * 50 : (n + 1) * 50])], cwd=REPO_ROOT)
        for n in range(8)
    ]
    if any(w.wait() for w in workers):
        raise SystemExit("a worker failed")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = parser.parse_args()
    files = sorted(p for p in args.source.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    n = len(files)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "copy").mkdir()
        rows = [("copy + fsync every file (baseline)", copy_baseline(files, tmp / "copy"))]
        dataset = ProjectDataset(tmp / "added")
        examples = [Example(p, p.parent.name) for p in files]
        rows.append(("ProjectDataset.add_many", timed(lambda: dataset.add_many(examples, source="import"))))
        rows.append(("add_many again (all duplicates)", timed(lambda: dataset.add_many(examples, source="import"))))
        imported = ProjectDataset(tmp / "imported")
        rows.append((
            "import_dataset (imagefolder via datasets)",
            timed(lambda: import_dataset(imported, args.source, cache_dir=tmp / "cache", progress=False)),
        ))
        parallel = parallel_adds(files[:400], tmp / "parallel")
    baseline = rows[0][1]
    print(f"{n} images from {args.source}")
    print(f"{'':44} {'seconds':>8} {'images/s':>9} {'x baseline':>10}")
    for name, seconds in rows:
        print(f"{name:44} {seconds:8.2f} {n / seconds:9.0f} {seconds / baseline:10.1f}")
    print(f"{'8 processes x 50 single adds (400 images)':44} {parallel:8.2f} {400 / parallel:9.0f}")


if __name__ == "__main__":
    main()
