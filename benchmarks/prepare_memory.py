"""Peak memory and throughput of `neurorvq prepare` and `neurorvq tokenize` against corpus size.

    python benchmarks/prepare_memory.py [--scales 1 2 4] [--output DIR] [--data ../shared/data/eeg]
                                        [--tokenizer neurorvq/tokenizer-small] [--no-tokenize]

For each scale k, a corpus of k copies of the shared EEG corpus is built as a folder of symbolic links (copy c > 0
lives under `<dataset>-copy<c>/` folders, so its subject ids, which come from folder and file names, are new
subjects: the train/validation split works as on a k-times larger corpus). Reserved hold-out subjects are never
linked. `neurorvq prepare` and then `neurorvq tokenize` run on it, each in its own process; the table gives each
process's peak resident memory (`ru_maxrss` from `os.wait4`; it includes the pages of memory-mapped Arrow files
the process read), its peak anonymous memory (`RssAnon`, polled from /proc: its own allocations), its wall time and
its throughput in EEG channel-hours (prepared: vocabulary channels x real samples) per minute.

Memory should not grow with k. Throughput needs an otherwise idle machine; memory does not.
`--output DIR` keeps the corpora, datasets and `results.json` there (default: a temporary folder, removed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("NEURORVQ_SHARED", ROOT.parent / "shared")) / "data" / "eeg"
RESERVED = re.compile(r"(Subject3[0-5]_)|(S088)", re.IGNORECASE)  # hold-out subjects (shared/data/eeg/README.md)


def build_corpus(data: Path, folder: Path, copies: int) -> int:
    """`copies` copies of every dataset folder under `data`, as symbolic links; returns the number of files linked."""
    linked = 0
    for copy in range(copies):
        for dataset in sorted(p for p in data.iterdir() if p.is_dir()):
            for source in sorted(p for p in dataset.rglob("*") if p.is_file()):
                if source.name == "SOURCE.md" or RESERVED.search(source.name):
                    continue
                relative = source.relative_to(dataset)
                target = folder / (dataset.name if copy == 0 else f"{dataset.name}-copy{copy}") / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(source.resolve())
                linked += 1
    return linked


def _sample_anonymous(pid: int, peak: list[float], done: threading.Event) -> None:
    """Peak `RssAnon` (MB) of a process, polled from /proc every 20 ms: its own memory, without the file pages of
    memory-mapped Arrow files that `ru_maxrss` also counts (those the kernel drops when memory is short)."""
    status = Path(f"/proc/{pid}/status")
    while not done.is_set():
        try:
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak[0] = max(peak[0], int(line.split()[1]) / 1024)
        except (OSError, ValueError):
            pass
        done.wait(0.02)


def run(command: list[str], log: Path) -> dict:
    """Run `command` in a child process: its peak RSS (`ru_maxrss`, MB), peak anonymous RSS (MB) and wall seconds."""
    start = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT))
        peak, done = [0.0], threading.Event()
        sampler = threading.Thread(target=_sample_anonymous, args=(child.pid, peak, done), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        done.set()
        sampler.join()
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({code}); see {log}:\n{log.read_text()[-3000:]}")
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "peak_anon_mb": peak[0], "seconds": seconds}  # ru_maxrss: KiB


def channel_hours(prepared: Path) -> tuple[float, int]:
    """EEG channel-hours (channels x real samples at 200 Hz) and windows of a prepared dataset."""
    import datasets
    import pyarrow.compute as pc

    total, windows = 0.0, 0
    for split in datasets.load_from_disk(str(prepared)).values():
        table = split.with_format(None).data
        channels = pc.list_value_length(table.column("channel_names"))
        total += pc.sum(pc.multiply(channels.cast("int64"), table.column("valid_samples").cast("int64"))).as_py() or 0
        windows += len(split)
    return total / 200 / 3600, windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4], help="corpus copies (default: 1 2 4)")
    parser.add_argument("--output", default=None, help="keep corpora, datasets and results.json here")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the shared EEG folder (default: %(default)s)")
    parser.add_argument("--tokenizer", default="neurorvq/tokenizer-small", help="tokenizer of `neurorvq tokenize`")
    parser.add_argument("--no-tokenize", action="store_true", help="measure `neurorvq prepare` only")
    args = parser.parse_args()

    data = Path(args.data)
    if not data.is_dir():
        raise SystemExit(f"no EEG folder at {data}: pass --data")
    work = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="prepare-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "neurorvq.pipelines.cli"]
    results = []
    try:
        for scale in args.scales:
            folder = work / f"x{scale}"
            shutil.rmtree(folder, ignore_errors=True)
            files = build_corpus(data, folder / "corpus", scale)
            row = {"scale": scale, "files": files}
            prepared, codes = folder / "prepared", folder / "codes"
            row["prepare"] = run([*cli, "prepare", str(folder / "corpus"), "--output", str(prepared), "--on-error", "skip"],
                                 folder / "prepare.log")
            row["channel_hours"], row["windows"] = channel_hours(prepared)
            if not args.no_tokenize:
                row["tokenize"] = run([*cli, "tokenize", str(prepared), "--tokenizer", args.tokenizer, "--output",
                                       str(codes)], folder / "tokenize.log")
            results.append(row)
            print_table(results)
            (work / "results.json").write_text(json.dumps(results, indent=1))
    finally:
        if not args.output:
            shutil.rmtree(work, ignore_errors=True)


def print_table(results: list[dict]) -> None:
    """One line per scale; per command: peak RSS, peak anonymous RSS (MB), seconds, channel-hours per minute."""
    head = f"{'peak RSS':>8} {'anon':>6} {'s':>7} {'ch-h/min':>8}"
    print(f"\n{'':>5} {'':>6} {'':>7} {'':>8} | {'prepare':<32} | {'tokenize':<32}")
    print(f"{'scale':>5} {'files':>6} {'ch-h':>7} {'windows':>8} | {head} | {head}")
    for row in results:
        cells = [f"{row['scale']:>5} {row['files']:>6} {row['channel_hours']:>7.1f} {row['windows']:>8}"]
        for step in ("prepare", "tokenize"):
            if step in row:
                m = row[step]
                cells.append(f"{m['peak_rss_mb']:>8.0f} {m['peak_anon_mb']:>6.0f} {m['seconds']:>7.1f} "
                             f"{row['channel_hours'] / m['seconds'] * 60:>8.2f}")
        print(" | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
