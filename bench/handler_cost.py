"""CPU per request of the request handler alone, in-process, optionally against another commit.

Run (from the repo root; no Kafka needed)::

    .venv/bin/python -m bench.handler_cost                          # ~1 minute
    .venv/bin/python -m bench.handler_cost --baseline-ref main      # ~2 minutes, both in one run
    .venv/bin/python -m bench.handler_cost --profile                # + a cProfile split by stage

What ``python -m bench`` measures through Kafka, without Kafka: ``RequestHandler.handle`` on
batches of 500 ``classification-20`` requests (the bench's model and payloads: 20 numeric
features, a 100-tree forest, ``producers.scenarios.generate("calm", ...)``), with every monitor
and the outcome join on, and with no observers. Each measurement is its own process
(``bench/_handler_worker.py``) on one source tree; with ``--baseline-ref`` the two trees take
turns, ``--rounds`` times each, so that both see the same machine. Each process warms up with one
pass over the payloads, then times ``--repeats`` passes with ``time.process_time`` and reports CPU
us per request; the table shows the median over every pass of every round, and the ratio is the
median of the per-round ratios. CPU per request moves much less than a rate with what else the
two cores run.

``--profile`` adds one more process per tree (monitoring on), sampled by py-spy for
``--profile-s`` seconds while it handles batches; each sample goes to the stage of its deepest
frame that names one (``bench._harness.PROFILE_PHASES``, as ``python -m bench`` splits the
worker), and the shares are scaled to that tree's measured CPU per request.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._harness import export_tree, profile_split

REPO = Path(__file__).resolve().parent.parent
MODEL = "classification-20"
WORKER = REPO / "bench" / "_handler_worker.py"


def _measure(tree: Path, cfg: dict[str, Any], tmp: Path, tag: str, profile_s: float = 0.0) -> dict[str, Any]:
    result = tmp / f"{tag}.json"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, str(WORKER), json.dumps({**cfg, "result": str(result), "profile_s": profile_s})]
    with (tmp / f"{tag}.log").open("w") as log:
        proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
        samples = None
        if profile_s:
            ready = Path(f"{result}.ready")
            while not ready.exists() and proc.poll() is None:
                time.sleep(0.1)
            samples = _spy(proc.pid, profile_s - 1.0, tmp / f"{tag}.spy")
        proc.wait()
    if proc.returncode != 0 or not result.exists():
        tail = (tmp / f"{tag}.log").read_text()[-3000:]
        raise RuntimeError(f"{tag} failed (rc {proc.returncode}):\n{tail}")
    out: dict[str, Any] = json.loads(result.read_text())
    if samples is not None:
        out["samples"] = samples
    return out


def _build_with(tree: Path, repository: Path) -> Path:
    """The bench's package, built by ``tree``'s own builder (in a process of its own)."""
    program = (
        "import sys\n"
        "from agent.models.repository import ModelRepository\n"
        "from agent.packaging.builder import build_package\n"
        "from agent.packaging.examples import classification_20\n"
        f"build_package(classification_20(), name={MODEL!r}, version='1', "
        "repository=ModelRepository(sys.argv[1]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-c", program, str(repository)], cwd=tree, env=env, check=True)
    return repository


def _spy(pid: int, seconds: float, out: Path) -> list[str]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = [spy, "record", "-p", str(pid), "-o", str(out), "--format", "raw", "-r", "250"]
    argv += ["-d", str(max(int(seconds), 1)), "--nonblocking"]
    subprocess.run(argv, capture_output=True, check=True)
    return out.read_text().splitlines()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.handler_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="payloads per pass")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per process")
    parser.add_argument("--rounds", type=int, default=3, help="processes per tree and mode")
    parser.add_argument("--baseline-ref", help="also measure this git commit, in turns with this tree")
    parser.add_argument("--modes", default="on,off", help="on (every monitor), off (no observers)")
    parser.add_argument("--profile", action="store_true", help="one more process per tree, sampled by py-spy")
    parser.add_argument("--profile-s", type=float, default=8.0, help="seconds each profile samples")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    from agent.models.repository import ModelRepository
    from agent.packaging.builder import build_package
    from agent.packaging.examples import classification_20
    from producers.scenarios import generate

    with tempfile.TemporaryDirectory(prefix="driftline-handler-cost-") as tmpdir:
        tmp = Path(tmpdir)
        print(f"building the {MODEL} package ...", flush=True)
        build_package(
            classification_20(), name=MODEL, version="1", repository=ModelRepository(tmp / "models")
        )
        repositories = {"current": tmp / "models"}
        messages = generate("calm", model=MODEL, seed=7, count=args.requests, outcome_share=0.0)
        (tmp / "payloads.pkl").write_bytes(pickle.dumps([(m.key, m.value) for m in messages]))
        trees = {"current": REPO}
        if args.baseline_ref:
            trees[args.baseline_ref] = export_tree(args.baseline_ref, tmp / "baseline")
            # Built by the baseline's own code: a worker refuses a manifest newer than it reads, and
            # would dead-letter every request of a package this tree built.
            repositories[args.baseline_ref] = _build_with(trees[args.baseline_ref], tmp / "baseline-models")
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        passes: dict[tuple[str, str], list[float]] = {}
        per_round: dict[tuple[str, str], list[float]] = {}
        profiles: dict[str, Any] = {}
        load = [os.getloadavg()[0]]
        for rnd in range(args.rounds):
            order = list(trees) if rnd % 2 == 0 else list(reversed(trees))
            for mode in modes:
                for name in order:
                    cfg = {
                        "model_repository": str(repositories[name]),
                        "model": MODEL,
                        "payloads": str(tmp / "payloads.pkl"),
                        "batch": args.batch,
                        "repeats": args.repeats,
                        "monitoring": mode == "on",
                    }
                    res = _measure(trees[name], cfg, tmp, f"{name}-{mode}-{rnd}")
                    passes.setdefault((name, mode), []).extend(res["us_per_request"])
                    per_round.setdefault((name, mode), []).append(statistics.median(res["us_per_request"]))
                    print(
                        f"  round {rnd} {name:<12} monitoring {mode:<3} "
                        f"{' '.join(f'{x:.2f}' for x in res['us_per_request'])} us/request",
                        flush=True,
                    )
        if args.profile:
            for name, tree in trees.items():
                cfg = {
                    "model_repository": str(repositories[name]),
                    "model": MODEL,
                    "payloads": str(tmp / "payloads.pkl"),
                    "batch": args.batch,
                    "repeats": 1,
                    "monitoring": True,
                }
                lines = _measure(tree, cfg, tmp, f"{name}-profile", args.profile_s)["samples"]
                measured = statistics.median(passes[name, "on"]) if (name, "on") in passes else 0.0
                profiles[name] = {
                    "samples": sum(int(n) for x in lines if (n := x.rpartition(" ")[2]).isdigit()),
                    "us_per_request": {k: v * measured for k, v in profile_split(lines).items()},
                }
        load.append(os.getloadavg()[0])

    print(
        f"\nRequestHandler.handle, batches of {args.batch}, {args.requests:,} requests per pass; "
        f"CPU us per request, medians of {args.rounds} x {args.repeats} passes "
        f"(load average {load[0]:.2f} -> {load[1]:.2f})"
    )
    summary: dict[str, Any] = {}
    for mode in modes:
        for name in trees:
            values = passes[name, mode]
            med = statistics.median(values)
            line = f"  {name:<12} monitoring {mode:<3} {med:6.2f} us ({min(values):.2f}-{max(values):.2f})"
            summary[f"{name}/{mode}"] = {"median_us": med, "passes": values}
            if name != "current":
                pairs = zip(per_round[name, mode], per_round["current", mode], strict=True)
                ratios = [base / now for base, now in pairs]
                line += f"   current is {statistics.median(ratios):.2f}x faster"
                summary[f"{name}/{mode}"]["current_speedup"] = statistics.median(ratios)
            print(line)
    for name, prof in profiles.items():
        print(f"\npy-spy profile of {name} (monitoring on, {prof['samples']:,} samples), CPU us per request:")
        for stage, us in prof["us_per_request"].items():
            print(f"  {stage:<64} {us:6.2f}")
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "summary": summary,
                    "profiles": profiles,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
