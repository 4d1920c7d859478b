"""Every GPU figure in one command: reward scoring, CHES, sampler overhead (transformers), DPO training steps/s and
an end-to-end build_pairs run, on one H100/H200 in under 8 minutes, with no registry access and no weights to
carry (every model is built from the SmolLM2 config with random weights).

    python benchmarks/gpu_suite.py prepare            # here (registry access): benchmarks/gpu_bundle/, ~6 MB
    python benchmarks/gpu_suite.py run --results DIR  # on the GPU machine, the bundle carried along
    python benchmarks/gpu_suite.py run --smoke        # the same steps on a CPU with tiny sizes (a test runs this)

The bundle (git-ignored) holds the SmolLM2-135M config and tokenizer without weights, and wheels of what the GPU
image lacks (pydantic, TRL, datasets, math-verify and their small dependencies); `run` installs them into a
temporary directory on PYTHONPATH when it finds them. With the device tool:

    run(command="python benchmarks/gpu_suite.py run --results $OUT", carry=["benchmarks/gpu_bundle"], timeout_s=600)

then copy the files back into benchmarks/results/gpu/. Each figure is one benchmark script in a subprocess with
its own deadline inside the suite's (--budget, 480 s): <figure>.json per figure (command, machine, load average,
figures), suite.json (what ran, seconds, status: ok / failed / timeout / skipped and why) and suite.log (their
output), 7 files, within what the device tool brings back. A figure that fails does not stop the others.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "benchmarks" / "gpu_bundle"
# (distribution, import name): what the GPU image (torch, transformers, accelerate, peft, pandas, pyarrow, pyyaml,
# sympy, ...) lacks for pairsmith's code; versions are the ones installed where `prepare` runs
WHEELS = [("pydantic", "pydantic"), ("pydantic-core", "pydantic_core"), ("annotated-types", "annotated_types"),
          ("typing-inspection", "typing_inspection"), ("typing-extensions", "typing_extensions"),
          ("trl", "trl"), ("datasets", "datasets"), ("dill", "dill"), ("multiprocess", "multiprocess"),
          ("math-verify", "math_verify"), ("latex2sympy2_extended", "latex2sympy2_extended"),
          ("antlr4-python3-runtime", "antlr4")]
GPU_PYTHON = "3.12"  # the GPU image's python3
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
# SmolLM2-135M at its own size, or tiny for --smoke (the embedding stays: the tokenizer's 49k ids must fit)
TINY = ["num_hidden_layers=2", "hidden_size=64", "intermediate_size=128", "num_attention_heads=4",
        "num_key_value_heads=2", "head_dim=16"]


def prepare(args) -> int:
    """The SmolLM2 config + tokenizer (no weights) and the wheels, into benchmarks/gpu_bundle/."""
    sys.path.insert(0, str(ROOT))
    from importlib.metadata import version

    from pipelines.core.config import EMBEDDED_MODEL
    from pipelines.core.models import resolve_model
    model_dir = Path(resolve_model(EMBEDDED_MODEL))
    skeleton = BUNDLE / "smollm2-135m-config"
    shutil.rmtree(BUNDLE, ignore_errors=True)
    skeleton.mkdir(parents=True)
    for f in model_dir.iterdir():
        if f.is_file() and not f.name.endswith((".safetensors", ".bin", ".gguf")):
            shutil.copy2(f, skeleton / f.name)
    wheels = BUNDLE / "wheels"
    pins = [f"{dist}=={version(dist)}" for dist, _ in WHEELS]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           GPU_PYTHON, "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)],
           "-d", str(wheels), *pins]
    print(" ".join(cmd))
    subprocess.run(cmd, check=True)
    size = sum(f.stat().st_size for f in BUNDLE.rglob("*") if f.is_file())
    print(f"bundle: {BUNDLE} ({size / 2**20:.1f} MiB): {sorted(f.name for f in wheels.iterdir())}, "
          f"{sorted(f.name for f in skeleton.iterdir())}")
    return 0


def environment(log) -> dict:
    """os.environ for the figures: the bundle's wheels installed into a temporary directory on PYTHONPATH when
    some of their packages are missing here (the GPU image), else unchanged."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    missing = [name for _, name in WHEELS if importlib.util.find_spec(name) is None]
    wheels = sorted((BUNDLE / "wheels").glob("*.whl"))
    if missing and wheels:
        site = Path(tempfile.mkdtemp(prefix="pairsmith-site-"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--target", str(site), *map(str, wheels)], check=True)
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        log(f"missing here: {missing}; installed {len(wheels)} bundled wheels into {site}")
    elif missing:
        log(f"missing here: {missing} and no bundle ({BUNDLE}): run `python benchmarks/gpu_suite.py prepare` "
            "where a registry is reachable; the figures that need them will fail")
    return env


def skeleton_dir() -> str:
    """config.json + tokenizer of SmolLM2-135M: the bundle's copy, else the embedded model's directory."""
    bundled = BUNDLE / "smollm2-135m-config"
    if (bundled / "config.json").exists():
        return str(bundled)
    sys.path.insert(0, str(ROOT))
    from pipelines.core.config import EMBEDDED_MODEL
    from pipelines.core.models import resolve_model
    return resolve_model(EMBEDDED_MODEL)


def figures(smoke: bool, skeleton: str, results: Path, work: Path) -> list[tuple[str, list[str], int]]:
    """(name, command, timeout s) per figure, in the order they run (the most wanted first)."""
    py, b = sys.executable, str(ROOT / "benchmarks")
    size = [a for o in TINY for a in ("--override", o)] if smoke else []
    device = "cpu" if smoke else "cuda"
    out = {name: ["--out", str(results / f"{name}.json")] for name in ("build", "training", "sampling", "scoring",
                                                                       "ches")}
    return [
        ("build", [py, f"{b}/gpu_suite.py", "build", "--skeleton", skeleton, "--work", str(work),
                   *(["--smoke"] if smoke else []), *out["build"]], 150),
        ("training", [py, f"{b}/training.py", "--config-from", skeleton, *size,
                      *(["--steps", "4", "--warmup", "1", "--batch-size", "2", "--max-length", "64", "--n-pairs", "8",
                         "--response-words", "12"] if smoke else
                        ["--steps", "40", "--warmup", "5", "--batch-size", "8", "--max-length", "512", "--n-pairs",
                         "320", "--response-words", "160"]), *out["training"]], 120),
        ("sampling", [py, f"{b}/sampling.py", "--backend", "transformers", "--config-from", skeleton, *size,
                      *(["--prompts", "2", "--k", "2", "--max-tokens", "4", "--batch-prompts", "2", "--repeats", "1"]
                        if smoke else ["--prompts", "32", "--k", "8", "--max-tokens", "128", "--batch-prompts", "32",
                                       "--repeats", "3"]), *out["sampling"]], 120),
        ("scoring", [py, f"{b}/scoring.py", "--device", device,
                     *(["--hidden-size", "64", "--kv-heads", "1", "--layers", "2", "--samples", "8", "--batch-size",
                        "4", "--max-tokens", "48"] if smoke else
                       ["--samples", "256", "--batch-size", "32", "--max-tokens", "1024"]), *out["scoring"]], 90),
        ("ches", [py, f"{b}/ches.py", "--device", device, "--config-from", skeleton, *size,
                  *(["--pairs", "4", "--batch-size", "4", "--max-words", "12"] if smoke else
                    ["--pairs", "256", "--batch-size", "32", "--max-words", "128"]), *out["ches"]], 90),
    ]


def run(args) -> int:
    started = time.perf_counter()
    results = Path(args.results or tempfile.mkdtemp(prefix="pairsmith-gpu-suite-"))
    results.mkdir(parents=True, exist_ok=True)
    log_path = results / "suite.log"
    logf = log_path.open("w")

    def log(text: str) -> None:
        print(text, flush=True)
        logf.write(text + "\n")
        logf.flush()

    if not args.smoke:
        import torch  # the image's; only to say which device the figures get
        if not torch.cuda.is_available():
            log("no CUDA device here: use --smoke for the CPU version")
            return 2
        log(f"GPU: {torch.cuda.get_device_name(0)}")
    env = environment(log)
    work = Path(tempfile.mkdtemp(prefix="pairsmith-gpu-work-"))
    done = []
    for name, cmd, timeout in figures(args.smoke, skeleton_dir(), results, work):
        left = args.budget - (time.perf_counter() - started)
        if args.only and name not in args.only.split(","):
            continue
        if left < 20:
            done.append({"figure": name, "status": "skipped", "why": f"suite budget ({args.budget} s) spent"})
            log(f"== {name}: skipped, the suite's budget is spent")
            continue
        log(f"== {name}: {' '.join(cmd)}")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=min(timeout, left))
            status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
            output = proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            status, output = f"timeout ({min(timeout, left):.0f} s)", (e.stdout or "") + (e.stderr or "")
            output = output.decode() if isinstance(output, bytes) else output
        seconds = round(time.perf_counter() - t0, 1)
        logf.write(output[-20000:] + "\n")
        result_file = results / f"{name}.json"
        entry = {"figure": name, "status": status, "seconds": seconds, "command": " ".join(cmd)}
        if result_file.exists():
            figures_ = json.loads(result_file.read_text()).get("figures", {})
            if figures_.get("status") == "skipped":
                entry.update(status="skipped", why=figures_.get("why"))
            entry["result"] = result_file.name
        done.append(entry)
        last = [line for line in output.strip().splitlines() if line.strip()][-1:] or [""]
        log(f"   {status} in {seconds} s: {last[0][:300]}")
    total = round(time.perf_counter() - started, 1)
    summary = {"smoke": args.smoke, "budget_s": args.budget, "total_s": total, "within_budget": total <= args.budget,
               "figures": done, "results_dir": str(results)}
    (results / "suite.json").write_text(json.dumps(summary, indent=1) + "\n")
    log(f"suite: {total} s (budget {args.budget} s); " +
        ", ".join(f"{d['figure']} {d['status']}" for d in done) + f"; results in {results}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(d["status"] in ("ok", "skipped") for d in done) else 1


def build(args) -> int:
    """The end-to-end figure: a random-weight SmolLM2-shaped policy, then `python -m flows.build_pairs
    --no-prefect` (transformers sampler, math_verify + confidence, mu_2sigma) on the shipped prompts, with
    Prefect unimportable."""
    sys.path.insert(0, str(ROOT))
    import yaml

    from benchmarks import record
    from benchmarks.sampling import random_model
    run_ = record.Run("build", args.out)
    overrides = TINY if args.smoke else []
    model = random_model(args.skeleton, overrides, "auto", 0)
    prompts, k, tokens = (4, 2, 8) if args.smoke else (128, 8, 128)
    out_dir = Path(args.work) / "runs"
    config = {"output_dir": str(out_dir), "run_id": "gpu-suite",
              "prompts": {"limit": prompts}, "batch_size": prompts,
              "sampler": {"name": "transformers", "model": model, "k": k, "max_new_tokens": tokens,
                          "batch_prompts": prompts if not args.smoke else 2}}
    config_file = Path(args.work) / "build.yaml"
    config_file.write_text(yaml.safe_dump(config))
    # Prefect made unimportable: the GPU image has none, and --no-prefect must not need it
    cmd = [sys.executable, "-c", "import sys; sys.modules['prefect'] = None; from flows.build_pairs import main; "
           f"sys.exit(main(['--no-prefect', '--config', {str(config_file)!r}]))"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    if proc.returncode:
        return proc.returncode
    manifest = json.loads((out_dir / "gpu-suite" / "manifest.json").read_text())
    import torch
    figures_ = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                "command": " ".join(cmd), "config": config, "wall_s": round(wall, 1),
                "prompts": prompts, "k": k, "max_new_tokens": tokens,
                "samples_per_s": round(prompts * k / wall, 2), "counts": manifest.get("counts"),
                "timings": manifest.get("timings"), "engine_calls": manifest.get("engine_calls")}
    print(json.dumps(figures_, indent=1))
    run_.write(figures_, name="build-cuda" if torch.cuda.is_available() else "build")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)
    sub.add_parser("prepare", help="write benchmarks/gpu_bundle/ (needs a package registry)")
    r = sub.add_parser("run", help="run every figure")
    r.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks that every step works")
    r.add_argument("--results", default=None, help="where the JSON files and suite.log go (default: a temp dir)")
    r.add_argument("--budget", type=float, default=480.0, help="seconds for the whole suite")
    r.add_argument("--only", default=None, help="comma-separated figures (build,training,sampling,scoring,ches)")
    bld = sub.add_parser("build", help=argparse.SUPPRESS)
    bld.add_argument("--skeleton", required=True)
    bld.add_argument("--work", required=True)
    bld.add_argument("--smoke", action="store_true")
    bld.add_argument("--out", default=None)
    args = p.parse_args(argv)
    return {"prepare": prepare, "run": run, "build": build}[args.verb](args)


if __name__ == "__main__":
    sys.exit(main())
