"""Speed and peak memory of the Titans long-term memory: chunk-parallel vs token loop vs titans-pytorch.

Every configuration (implementation, chunk size, sequence length, checkpointing) runs in a **fresh
subprocess** of this script, so its peak memory is its own. Inside it:

* forward: ``torch.no_grad()``; forward+backward: ``loss = y.pow(2).mean()`` then ``loss.backward()``;
* each mode gets 1 untimed warm-up call (first calls pay for allocation), then ``--iters`` timed calls;
  throughput is ``batch * seq / median seconds``. The token loop (``reference``) warms up on a 64-token
  prefix: every step allocates the same tensors, so the prefix warms the allocator as a full call would;
* memory: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (peak resident set size) after each mode, raw and
  minus the baseline taken right after the model and input were built ("delta"). The forward runs first, so
  the forward+backward peak is the maximum of both (backward needs more);
* the address space of the subprocess is capped (``--mem-cap-gb``) so a configuration that needs more fails
  with an allocation error instead of starving the machine; it also has a wall-clock ``--timeout``.

Implementations: ``fast`` (``impl="chunked"``), ``fast-ckpt`` (the same with ``checkpoint_chunks``, when
``NeuralMemory`` accepts it; forward+backward only), ``reference`` (``impl="reference"``, the token loop,
forward only by default: back-propagating through it keeps two weight copies per token) and
``titans-pytorch`` (lucidrains' ``titans_pytorch.NeuralMemory`` 0.5.5, same width, depth, expansion and chunk
size; skipped with a message when it is not installed). ``fast-compiled``, ``yaad-compiled``,
``moneta-compiled``, ``memora-compiled`` and ``hope-compiled`` are ``fast``, the MIRAS presets and Hope's
self-modifying Titans with ``compile_chunks=True`` (``torch.compile`` of the per-chunk step, Hope's per-span
step, forward+backward; the warm-up call compiles, with an empty
inductor cache per configuration, and every row collects and freezes its heap after the warm-up, as
training does after a call that compiled; their FLOPs are the eager row's, the same arithmetic, and are not
counted again: ``FlopCounterMode`` does not see inside compiled code). ``--memory-budget B`` runs the
compiled MIRAS rows under activation memory budget ``B`` instead of ``neural_memory.miras.chunked``'s
``MEMORY_BUDGET`` (the partitioner's trade of recomputation for memory; 1.0 is torch's default).

The run ends with the derived comparisons and a PASS/FAIL line per target. Results go to ``--out`` (JSON),
written after every configuration so an interrupted run keeps what it measured.

    python benchmarks/titans_memory.py --quick          # smoke run, seconds
    python benchmarks/titans_memory.py                  # full run (long on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = ("fast", "fast-ckpt", "reference", "titans-pytorch", "yaad", "moneta", "memora", "hope")
# The other papers' memories on the same chunked path, forward+backward at the middle length beside "fast"
PRESETS = ("yaad", "moneta", "memora", "hope")
# The same with the per-chunk step compiled (compile_chunks=True), forward+backward beside their eager rows
COMPILED = "-compiled"
COMPILABLE = ("fast", "yaad", "moneta", "memora", "hope")
CONFIGS += tuple(name + COMPILED for name in COMPILABLE)
FULL = {
    "dim": 256,
    "depth": 2,
    "batch": 2,
    "heads": 1,
    "expansion": 4,
    "seqs": (1024, 4096, 16384),
    "chunks": (16, 64),
    "ref_seqs": (1024,),  # forward (and --ref-modes) of the token loop
    "ref_fwd_seqs": (4096,),  # forward only, if the projected time fits the timeout
    "iters": 2,
    "configs": CONFIGS,
}
QUICK = {
    **FULL,
    "dim": 32,
    "seqs": (64, 128),
    "chunks": (16,),
    "ref_seqs": (64,),
    "ref_fwd_seqs": (128,),
    "iters": 1,
    "configs": ("fast", "fast-ckpt", "reference"),
}
REFERENCE_WARMUP_TOKENS = 64
TARGETS = {  # issue 14
    "speedup_fast_vs_reference": 25.0,  # chunk 16, at seq 4096 (forward), >=
    "fast_vs_titans_pytorch_fwd_bwd": 8.0,  # chunk 64, seq 4096, >=
    "share_of_matmul_peak": 0.65,  # fast fwd+bwd, chunk 64, seq 4096, >=
    "cost_ratio_long_vs_mid": 4.3,  # time(16384) / time(4096), <=
    "peak_memory_vs_titans_pytorch": 1 / 3,  # at seq 16384, without checkpointing, <=
    "miras_preset_slowdown": 1.5,  # tokens/s of fast / of each MIRAS preset, fwd+bwd, seq 4096, <=
    "hope_slowdown": 2.0,  # tokens/s of fast / of Hope's self-modifying Titans, fwd+bwd, seq 4096, <=
}


# -- measurement (runs inside the subprocess) ---------------------------------------------------------------


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _cap_address_space(gigabytes: float) -> None:
    """Fail allocations beyond the cap (MemoryError / RuntimeError) instead of swapping or OOM-killing."""
    if gigabytes <= 0 or not hasattr(resource, "RLIMIT_AS"):
        return
    limit = int(gigabytes * 2**30)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _checkpoint_supported() -> bool:
    import inspect

    from neural_memory.titans.memory import NeuralMemory

    return "checkpoint_chunks" in inspect.signature(NeuralMemory.__init__).parameters


def auto_checkpoint_chunks(seq: int, chunk: int) -> int:
    """Chunks per checkpoint group: about sqrt(number of chunks), the classic memory-optimal choice."""
    return max(1, round(math.sqrt(max(1, seq // chunk))))


def build_model(spec: dict):
    import torch

    torch.manual_seed(0)
    dim, chunk = spec["dim"], spec["chunk"]
    if spec["config"].endswith(COMPILED):
        return build_model({**spec, "config": spec["config"].removesuffix(COMPILED), "compile_chunks": True})
    if spec["config"] == "titans-pytorch":
        from titans_pytorch import NeuralMemory as LucidrainsMemory

        return LucidrainsMemory(
            dim,
            chunk_size=chunk,
            heads=spec["heads"],
            default_model_kwargs={"depth": spec["depth"], "expansion_factor": float(spec["expansion"])},
        )
    if spec["config"] in PRESETS:
        return build_preset(spec)
    from neural_memory.titans.memory import NeuralMemory

    kwargs = {
        "depth": spec["depth"],
        "chunk_size": chunk,
        "heads": spec["heads"],
        "expansion": spec["expansion"],
        "impl": "reference" if spec["config"] == "reference" else "chunked",
    }
    if _checkpoint_supported():  # stated, not left to the default: a plain row never checkpoints
        kwargs["checkpoint_chunks"] = spec.get("checkpoint_chunks") or 0
    if spec.get("compile_chunks"):
        kwargs["compile_chunks"] = True
    return NeuralMemory(dim, **kwargs)


def build_preset(spec: dict):
    """A MIRAS preset (MIRAS §5.3) or Hope's self-modifying Titans (NL §8, as ``HopeBlock`` builds it: q, k, v
    l2-normalised) at the same width, expansion, heads and chunk as ``fast``; chunked, no checkpointing."""
    import torch

    torch.manual_seed(0)
    if spec["config"] == "hope":
        from neural_memory.nl.self_modifying import SelfModifyingTitans

        hidden = spec["dim"] * spec["expansion"]
        extra = {"compile_chunks": True} if spec.get("compile_chunks") else {}
        return SelfModifyingTitans(
            spec["dim"], hidden=hidden, chunk_size=spec["chunk"], qk_norm=True, v_norm=True, **extra
        )
    from neural_memory.miras import memory as miras

    if spec.get("memory_budget") is not None:
        from neural_memory.miras import chunked

        chunked.MEMORY_BUDGET = spec["memory_budget"]  # read when the chunk loop builds its compiled step
    factory = {"yaad": miras.yaad, "moneta": miras.moneta, "memora": miras.memora}[spec["config"]]
    kwargs = {"depth": spec["depth"], "heads": spec["heads"], "expansion": spec["expansion"]}
    if spec.get("compile_chunks"):
        kwargs["compile_chunks"] = True
    return factory(spec["dim"], chunk_size=spec["chunk"], impl="chunked", checkpoint_chunks=0, **kwargs)


def _time_calls(call, warmup_call, iters: int) -> dict:
    start = time.perf_counter()
    warmup_call()  # a compiled row compiles here
    warmup_s = time.perf_counter() - start
    gc.collect()  # then, for every row alike, what training does after a call that compiled
    gc.freeze()
    wall, cpu = [], []
    for _ in range(iters):
        w0, c0 = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"seconds": wall, "cpu_seconds": cpu, "median_s": statistics.median(wall), "warmup_s": warmup_s}


def child(spec: dict) -> dict:
    """One configuration: the forward and/or forward+backward measurements, memory after each."""
    import torch

    from neural_memory.common.runtime import configure_allocator

    # Every configuration, titans-pytorch included, runs with the same fixed glibc mmap threshold: without
    # it the allocator's dynamic threshold fragments the heap and peak RSS measures fragmentation.
    configure_allocator()
    torch.set_num_threads(spec["threads"])
    model = build_model(spec)
    x = torch.randn(spec["batch"], spec["seq"], spec["dim"])
    warm_x = x[:, :REFERENCE_WARMUP_TOKENS] if spec["config"] == "reference" else x

    def forward(inp):
        with torch.no_grad():
            model(inp)

    def forward_backward(inp):
        for p in model.parameters():
            p.grad = None
        y, _ = model(inp)
        y.pow(2).mean().backward()

    baseline = peak_rss_mb()
    out = {"baseline_rss_mb": baseline, "warmup_tokens": warm_x.shape[1], "modes": {}, "mode_failures": {}}
    for mode in spec["modes"]:
        fn = forward if mode == "fwd" else forward_backward
        try:
            row = _time_calls(lambda fn=fn: fn(x), lambda fn=fn: fn(warm_x), spec["iters"])
        except (MemoryError, RuntimeError) as err:  # torch reports a failed allocation as RuntimeError
            out["mode_failures"][mode] = _failure(err, spec)
            continue
        row["tokens_per_s"] = spec["batch"] * spec["seq"] / row["median_s"]
        row["maxrss_mb"] = peak_rss_mb()
        row["peak_delta_mb"] = row["maxrss_mb"] - baseline
        out["modes"][mode] = row
        print("PARTIAL " + json.dumps(out), flush=True)  # kept by the parent if a later mode times out
    fwd_bwd = out["modes"].get("fwd_bwd")
    counted = spec["config"] != "reference" and not spec["config"].endswith(COMPILED)
    if fwd_bwd is not None and spec.get("flops", True) and counted:
        # after the timed calls, so neither the counter nor the profiler touches the measurements above
        fwd_bwd.update(compute_profile(lambda: forward_backward(x), spec["batch"] * spec["seq"]))
        fwd_bwd["matmul_peak_gflops"] = matmul_peak_gflops()
        if "flops_per_token" in fwd_bwd:
            fwd_bwd["achieved_gflops"] = fwd_bwd["flops_per_token"] * fwd_bwd["tokens_per_s"] / 1e9
            fwd_bwd["share_of_matmul_peak"] = fwd_bwd["achieved_gflops"] / fwd_bwd["matmul_peak_gflops"]
        print("PARTIAL " + json.dumps(out), flush=True)
    return out


MATMUL_PEAK_SIZE = 1024  # the fp32 matmul whose speed stands for the machine's peak (issue 14)


def matmul_peak_gflops(reps: int = 10) -> float:
    """GFLOP/s of a ``1024 x 1024`` fp32 matmul in this process (its threads), best of ``reps`` calls."""
    import torch

    a, b = torch.randn(MATMUL_PEAK_SIZE, MATMUL_PEAK_SIZE), torch.randn(MATMUL_PEAK_SIZE, MATMUL_PEAK_SIZE)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_PEAK_SIZE**3 / best / 1e9


def compute_profile(step, tokens: int, top: int = 8) -> dict:
    """FLOPs of one call of ``step`` counted by ``FlopCounterMode`` (per token), and its top operators
    by self CPU time under ``torch.profiler`` (a second call)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    out: dict = {}
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        out["flops_per_token"] = counter.get_total_flops() / tokens
    except Exception as err:  # a third-party model may use operators the counter cannot see through
        out["flops_error"] = f"{type(err).__name__}: {str(err)[:160]}"
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    out["profile_top"] = [
        {"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total,
         "calls": e.count}
        for e in events[:top]
    ]  # fmt: skip
    return out


def _failure(err: BaseException, spec: dict) -> str:
    kind = "out of memory" if "alloc" in str(err).lower() or isinstance(err, MemoryError) else "error"
    return f"{kind} (address-space cap {spec['mem_cap_gb']} GB): {str(err)[:160]}"


def _child_main(raw: str) -> int:
    spec = json.loads(raw)
    _cap_address_space(spec["mem_cap_gb"])
    try:
        result = child(spec)
        result["status"] = "ok" if result["modes"] else "failed"
        if not result["modes"]:
            result["reason"] = "; ".join(f"{m}: {why}" for m, why in result["mode_failures"].items())
    except (MemoryError, RuntimeError) as err:
        result = {"status": "failed", "reason": _failure(err, spec)}
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- the plan and the driver --------------------------------------------------------------------------------


def titans_pytorch_available() -> bool:
    return importlib.util.find_spec("titans_pytorch") is not None


def plan(cfg: dict) -> list[dict]:
    """Every configuration, in priority order: the rows the targets need run first (see ``_priority``)."""
    base = {
        k: cfg[k]
        for k in (
            "dim", "depth", "batch", "heads", "expansion", "iters", "threads", "mem_cap_gb", "flops",
            "memory_budget",
        )
    }  # fmt: skip
    rows = []
    for chunk in cfg["chunks"]:
        for seq in cfg["seqs"]:
            for config in ("fast", "titans-pytorch"):
                rows.append({"config": config, "chunk": chunk, "seq": seq, "modes": ["fwd", "fwd_bwd"]})
            ckpt = auto_checkpoint_chunks(seq, chunk)
            rows.append(
                {"config": "fast-ckpt", "chunk": chunk, "seq": seq, "modes": ["fwd_bwd"], "ckpt": ckpt}
            )
        for seq in cfg["ref_seqs"]:
            rows.append(
                {"config": "reference", "chunk": chunk, "seq": seq, "modes": ["fwd", *cfg["ref_modes"]]}
            )
        for seq in cfg["ref_fwd_seqs"]:
            rows.append({"config": "reference", "chunk": chunk, "seq": seq, "modes": ["fwd"]})
        for config in PRESETS:
            rows.append({"config": config, "chunk": chunk, "seq": _mid_seq(cfg), "modes": ["fwd_bwd"]})
        for config in COMPILABLE:
            seqs = cfg["seqs"] if config == "fast" else [_mid_seq(cfg)]
            for seq in seqs:
                rows.append({"config": config + COMPILED, "chunk": chunk, "seq": seq, "modes": ["fwd_bwd"]})
    rows = [r for r in rows if r["config"] in cfg["configs"]]
    rows.sort(key=lambda r: _priority(r, cfg))
    return [
        {**base, **{k: v for k, v in r.items() if k != "ckpt"}, "checkpoint_chunks": r.get("ckpt", 0)}
        for r in rows
    ]


def _priority(row: dict, cfg: dict) -> tuple:
    """Targets first: the largest chunk at the two longest seqs (fast, titans-pytorch), then the token loop
    and its fast twin at the smallest chunk, checkpointing at the longest seq, then everything else."""
    seqs, chunks = sorted(cfg["seqs"]), sorted(cfg["chunks"])
    config, chunk, seq = row["config"], row["chunk"], row["seq"]
    ref_seqs = set(cfg["ref_seqs"]) | set(cfg["ref_fwd_seqs"])
    if config in ("fast", "titans-pytorch") and chunk == chunks[-1] and seq in seqs[-2:]:
        rank = 0
    elif config in ("fast", "reference") and chunk == chunks[0] and seq in ref_seqs:
        rank = 1 if seq in cfg["ref_seqs"] else 2
    elif config == "fast-ckpt" and chunk == chunks[-1] and seq == seqs[-1]:
        rank = 3
    elif config in PRESETS and chunk == chunks[-1]:
        rank = 4
    else:
        rank = 5 + CONFIGS.index(config)
    return (rank, seq, -chunk, config == "titans-pytorch")


def _mid_seq(cfg: dict) -> int:
    """The length the speed targets are stated at: 4096, else the second longest (or only) one."""
    seqs = sorted(cfg["seqs"])
    return 4096 if 4096 in seqs else seqs[-2] if len(seqs) > 1 else seqs[-1]


def _find(rows, config, chunk, seq, mode):
    for r in rows:
        same = (r["config"], r["chunk"], r["seq"]) == (config, chunk, seq)
        if same and r.get("status") == "ok" and mode in r["modes"]:
            return r["modes"][mode]
    return None


def _skip_reason(spec: dict, done: list[dict], cfg: dict, started: float) -> str | None:
    if cfg["budget_min"] and time.monotonic() - started > 60 * cfg["budget_min"]:
        return f"total time budget of {cfg['budget_min']} min exhausted"
    if spec["config"] == "reference" and spec["seq"] in cfg["ref_fwd_seqs"]:
        shorter = [r for r in done if r["config"] == "reference" and r["chunk"] == spec["chunk"]]
        shorter = [r for r in shorter if r.get("status") == "ok" and r["seq"] < spec["seq"]]
        if not shorter:
            return "no successful shorter reference run to project its time from"
        ref = max(shorter, key=lambda r: r["seq"])
        per_token = ref["modes"]["fwd"]["median_s"] / ref["seq"]  # the token loop is linear in seq
        projected = per_token * (spec["seq"] * spec["iters"] + REFERENCE_WARMUP_TOKENS)
        if projected > 0.8 * cfg["timeout"]:
            calls = f"warm-up + {spec['iters']} calls"
            return f"projected {projected:.0f} s for {calls} > 80% of the {cfg['timeout']:.0f} s timeout"
    return None


def run_one(spec: dict, timeout: float) -> dict:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else src
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t0 = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as cache:  # a compiled row compiles cold, as on a fresh machine
            env["TORCHINDUCTOR_CACHE_DIR"] = cache
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        return _timed_out(spec, exc, timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {"status": "failed", "reason": f"exit code {proc.returncode}: {tail[0][:200]}"}
    result = json.loads(lines[-1][len("RESULT ") :])
    result["wall_s"] = time.monotonic() - t0
    result["loadavg_1min"] = [load, os.getloadavg()[0] if hasattr(os, "getloadavg") else None]
    return result


def _timed_out(spec: dict, exc: subprocess.TimeoutExpired, timeout: float) -> dict:
    """Keep the modes that finished before the timeout; the others are reported as timed out."""
    why = f"over the per-configuration timeout of {timeout:.0f} s"
    stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
    partial = [ln for ln in stdout.splitlines() if ln.startswith("PARTIAL ")]
    if not partial:
        return {"status": "timeout", "reason": why}
    result = json.loads(partial[-1][len("PARTIAL ") :])
    for mode in spec["modes"]:
        if mode not in result["modes"]:
            result["mode_failures"].setdefault(mode, f"timeout: {why}")
    return {**result, "status": "ok"}


def _label(r: dict) -> str:
    label = r["config"]
    if r.get("checkpoint_chunks"):
        label += f" (g={r['checkpoint_chunks']})"
    return label


def _fmt_row(r: dict, mode: str) -> str:
    m = r.get("modes", {}).get(mode) if r.get("status") == "ok" else None
    head = f"{_label(r):<22}{r['chunk']:>6}{r['seq']:>7}  {mode:<8}"
    if m is None:
        failed = r.get("mode_failures", {}).get(mode)
        status = "failed" if failed else r.get("status", "skipped")
        reason = failed or (r.get("reason", "not measured") if r.get("status") != "ok" else "not measured")
        return f"{head}  {status.upper()}: {reason}"
    numbers = (
        f"{m['tokens_per_s']:>12.0f}{m['median_s']:>10.2f}{m['maxrss_mb']:>11.0f}{m['peak_delta_mb']:>11.0f}"
    )
    return head + numbers


def print_table(rows: list[dict]) -> None:
    print(
        f"{'config':<22}{'chunk':>6}{'seq':>7}  {'mode':<8}{'tokens/s':>12}{'median s':>10}{'maxrss MB':>11}"
        f"{'delta MB':>11}"
    )
    for r in sorted(rows, key=lambda r: (r["config"], r["chunk"], r["seq"])):
        modes = r["modes"] if r.get("status") == "ok" else r.get("planned_modes", ["fwd"])
        for mode in modes:
            print(_fmt_row(r, mode))


def print_flops(rows: list[dict]) -> None:
    """FLOPs per token, achieved GFLOP/s and share of the matmul peak, top operators: per fwd+bwd row."""
    lines = []
    for r in sorted(rows, key=lambda r: (r["config"], r["chunk"], r["seq"])):
        m = r.get("modes", {}).get("fwd_bwd") if r.get("status") == "ok" else None
        if not m or "matmul_peak_gflops" not in m:
            continue
        head = f"{_label(r):<22}{r['chunk']:>6}{r['seq']:>7}"
        if "flops_per_token" in m:
            head += (
                f"{m['flops_per_token'] / 1e6:>11.1f}{m['achieved_gflops']:>10.1f}"
                f"{m['matmul_peak_gflops']:>9.1f}{100 * m['share_of_matmul_peak']:>7.1f} %"
            )
        else:
            head += f"  FLOPs not counted: {m.get('flops_error', '?')}"
        top = ", ".join(f"{op['op']} {100 * op['share']:.0f}%" for op in m.get("profile_top", [])[:4])
        lines.append(f"{head}   {top}")
    if lines:
        head = f"{'fwd+bwd':<22}{'chunk':>6}{'seq':>7}{'MFLOP/tok':>11}{'GFLOP/s':>10}{'peak':>9}{'share':>9}"
        print(f"\n{head}   top ops")
        print("\n".join(lines))


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def derived(rows: list[dict], cfg: dict) -> list[dict]:
    """The comparisons the targets are stated on; a missing input gives an N/A line, never a PASS."""
    seqs, chunks = sorted(cfg["seqs"]), sorted(cfg["chunks"])
    mid = _mid_seq(cfg)
    long = 16384 if 16384 in seqs else seqs[-1]
    big = 64 if 64 in chunks else chunks[-1]
    out = []

    def line(name, value, target, op, detail, missing=None):
        if value is None:
            out.append(
                {
                    "name": name,
                    "value": None,
                    "target": f"{op} {target:.3g}",
                    "verdict": "N/A",
                    "detail": missing,
                }
            )
            return
        ok = value >= target if op == ">=" else value <= target
        out.append(
            {
                "name": name,
                "value": value,
                "target": f"{op} {target:.3g}",
                "verdict": _verdict(ok),
                "detail": detail,
            }
        )

    for chunk in chunks:  # speed-up of the chunked form over the token loop, at every seq the loop ran
        for seq in sorted({r["seq"] for r in rows if r["config"] == "reference"}):
            for mode in ("fwd", "fwd_bwd"):
                fast, ref = _find(rows, "fast", chunk, seq, mode), _find(rows, "reference", chunk, seq, mode)
                if fast and ref:
                    ratio = fast["tokens_per_s"] / ref["tokens_per_s"]
                    out.append(
                        {
                            "name": f"speed-up fast/reference, chunk {chunk}, seq {seq}, {mode}",
                            "value": ratio,
                            "target": None,
                            "verdict": "INFO",
                            "detail": "",
                        }
                    )
    ref_seqs = [
        s for s in cfg["ref_fwd_seqs"] + cfg["ref_seqs"] if _find(rows, "reference", chunks[0], s, "fwd")
    ]
    target_seq = max(ref_seqs) if ref_seqs else None
    value = None
    if target_seq is not None:
        value = (_find(rows, "fast", chunks[0], target_seq, "fwd") or {}).get("tokens_per_s")
        value = (
            value / _find(rows, "reference", chunks[0], target_seq, "fwd")["tokens_per_s"] if value else None
        )
    note = (
        "" if target_seq == max(cfg["ref_fwd_seqs"], default=None) else " (target seq skipped; measured here)"
    )
    line(
        f"speed-up fast/reference fwd, chunk {chunks[0]}, seq {target_seq}{note}",
        value,
        TARGETS["speedup_fast_vs_reference"],
        ">=",
        "tokens/s ratio",
        "reference or fast row missing",
    )

    fast, lucid = _find(rows, "fast", big, mid, "fwd_bwd"), _find(rows, "titans-pytorch", big, mid, "fwd_bwd")
    line(
        f"fast vs titans-pytorch fwd+bwd, chunk {big}, seq {mid}",
        fast["tokens_per_s"] / lucid["tokens_per_s"] if fast and lucid else None,
        TARGETS["fast_vs_titans_pytorch_fwd_bwd"],
        ">=",
        "tokens/s ratio",
        "fast or titans-pytorch row missing",
    )
    share = (fast or {}).get("share_of_matmul_peak")
    line(
        f"fast fwd+bwd share of the fp32 matmul peak, chunk {big}, seq {mid}",
        share,
        TARGETS["share_of_matmul_peak"],
        ">=",
        "FlopCounterMode FLOPs x tokens/s / GFLOP/s of a 1024^2 matmul in the same subprocess",
        "fast row or its FLOP count missing",
    )
    for chunk in reversed(chunks):
        titans = _find(rows, "fast", chunk, mid, "fwd_bwd")
        for config in PRESETS:
            other = _find(rows, config, chunk, mid, "fwd_bwd")
            if other is None and not any(r["config"] == config and r["chunk"] == chunk for r in rows):
                continue  # not planned (--configs)
            key = "hope_slowdown" if config == "hope" else "miras_preset_slowdown"
            line(
                f"slow-down of {config} vs the Titans memory fwd+bwd, chunk {chunk}, seq {mid}",
                titans["tokens_per_s"] / other["tokens_per_s"] if titans and other else None,
                TARGETS[key],
                "<=",
                "tokens/s of fast / tokens/s of the preset",
                "fast or preset row missing",
            )

    for chunk in reversed(chunks):
        for mode in ("fwd_bwd", "fwd"):
            a, b = _find(rows, "fast", chunk, long, mode), _find(rows, "fast", chunk, mid, mode)
            line(
                f"cost ratio fast seq {long}/seq {mid}, chunk {chunk}, {mode}",
                a["median_s"] / b["median_s"] if a and b else None,
                TARGETS["cost_ratio_long_vs_mid"],
                "<=",
                f"median-time ratio (linear = {long / mid:g})",
                "a fast row is missing",
            )

    for chunk in reversed(chunks):
        lucid_row = next(
            (r for r in rows if (r["config"], r["chunk"], r["seq"]) == ("titans-pytorch", chunk, long)), None
        )
        lucid = _find(rows, "titans-pytorch", chunk, long, "fwd_bwd")
        for config in ("fast", "fast-ckpt"):
            ours = _find(rows, config, chunk, long, "fwd_bwd")
            name = f"peak memory {config}/titans-pytorch fwd+bwd (delta RSS), chunk {chunk}, seq {long}"
            if ours and lucid:
                line(
                    name,
                    ours["peak_delta_mb"] / lucid["peak_delta_mb"],
                    TARGETS["peak_memory_vs_titans_pytorch"],
                    "<=",
                    "peak RSS minus post-build baseline",
                )
            elif ours and lucid_row and "out of memory" in _failure_text(lucid_row, "fwd_bwd"):
                # AS cap minus ~2 GB of libraries, thread arenas and baseline: a floor on what it needed
                floor_mb = 1024 * (lucid_row["mem_cap_gb"] - 2)
                line(
                    name + " [bound: titans-pytorch ran out of the address-space cap]",
                    ours["peak_delta_mb"] / floor_mb,
                    TARGETS["peak_memory_vs_titans_pytorch"],
                    "<=",
                    f"ours / (cap {lucid_row['mem_cap_gb']} GB - 2 GB), indicative",
                )
            elif config == "fast" or ours:
                line(name, None, TARGETS["peak_memory_vs_titans_pytorch"], "<=", "", "a row is missing")
    return out


def _failure_text(row: dict, mode: str) -> str:
    if row.get("status") == "ok":
        return row.get("mode_failures", {}).get(mode, "")
    return row.get("reason") or ""


def print_derived(lines: list[dict]) -> None:
    print("\nDerived")
    for d in lines:
        value = "n/a" if d["value"] is None else f"{d['value']:.3g}"
        target = f"  target {d['target']}" if d["target"] else ""
        extra = f"  ({d['detail']})" if d["detail"] else ""
        print(f"  [{d['verdict']}] {d['name']}: {value}{target}{extra}")


def _environment() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "titans_pytorch": _version("titans-pytorch"),
        "checkpoint_chunks_supported": _checkpoint_supported(),
    }


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="tiny smoke run: dim 32, seq 64/128, chunk 16, 1 iter"
    )
    p.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "titans_memory.json"
    )
    p.add_argument("--seqs", type=int, nargs="+")
    p.add_argument("--chunks", type=int, nargs="+")
    p.add_argument("--configs", nargs="+", choices=CONFIGS)
    p.add_argument("--iters", type=int, help="timed calls per mode (median), after 1 warm-up")
    p.add_argument("--ref-seqs", type=int, nargs="*", help="token-loop runs (forward + --ref-modes)")
    p.add_argument("--ref-fwd-seqs", type=int, nargs="*", help="token-loop forward-only runs, if they fit")
    p.add_argument(
        "--ref-modes",
        nargs="*",
        default=[],
        choices=["fwd_bwd"],
        help="extra token-loop modes (fwd_bwd keeps two weight copies per token: GBs at seq 1024)",
    )
    p.add_argument(
        "--no-flops",
        dest="flops",
        action="store_false",
        help="skip the FLOP count, matmul peak and profile of each fwd+bwd row (two extra calls each)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
    p.add_argument("--budget-min", type=float, default=0.0, help="skip remaining configurations after this")
    p.add_argument("--mem-cap-gb", type=float, default=8.0, help="address-space cap per subprocess (0: none)")
    p.add_argument(
        "--memory-budget",
        type=float,
        help="activation memory budget of the compiled MIRAS rows, in (0, 1] (default: MEMORY_BUDGET)",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_budget is not None and not 0 < args.memory_budget <= 1:
        p.error(f"--memory-budget must be in (0, 1], got {args.memory_budget}")
    return args


def config_from(args: argparse.Namespace) -> dict:
    cfg = dict(QUICK if args.quick else FULL)
    for key in ("seqs", "chunks", "configs", "iters", "ref_seqs", "ref_fwd_seqs"):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = tuple(value) if isinstance(value, list) else value
    if cfg["iters"] < 1:
        raise ValueError(f"--iters must be >= 1, got {cfg['iters']}")
    cfg["ref_seqs"], cfg["ref_fwd_seqs"] = list(cfg["ref_seqs"]), list(cfg["ref_fwd_seqs"])
    cfg.update(
        ref_modes=list(args.ref_modes),
        threads=args.threads,
        timeout=args.timeout,
        budget_min=args.budget_min,
        mem_cap_gb=args.mem_cap_gb,
        flops=args.flops,
        memory_budget=args.memory_budget,
    )
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return _child_main(args.child)
    cfg = config_from(args)
    configs = list(cfg["configs"])
    notes = []
    if "titans-pytorch" in configs and not titans_pytorch_available():
        notes.append(
            "titans-pytorch is not importable (pip install titans-pytorch==0.5.5): its rows are skipped"
        )
        configs.remove("titans-pytorch")
    if "fast-ckpt" in configs and not _checkpoint_supported():
        notes.append("NeuralMemory has no checkpoint_chunks option: fast-ckpt rows are skipped")
        configs.remove("fast-ckpt")
    cfg["configs"] = tuple(configs)
    if "reference" in configs and "fwd_bwd" not in cfg["ref_modes"]:
        notes.append(
            "reference fwd_bwd not run (add --ref-modes fwd_bwd): autograd through the token loop keeps the "
            "weights and momentum of every token, about 25 MB per token at dim 256 (3.2 GB measured at "
            "seq 128), so seq 1024 would need ~25 GB"
        )
    for note in notes:
        print(note)
    report = {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "environment": _environment(),
        "memory_metric": "maxrss_mb = ru_maxrss of the configuration's subprocess (raw peak RSS); "
        "peak_delta_mb = maxrss_mb minus the peak RSS right after the model and input were built",
        "throughput_metric": "tokens_per_s = batch * seq / median wall seconds of the timed calls "
        "(1 untimed warm-up first); cpu_seconds = process CPU time per call",
        "allocator": "glibc mmap threshold fixed at 1 MiB in every configuration "
        "(neural_memory.common.runtime)",
        "notes": notes,
        "rows": [],
        "derived": [],
    }
    started = time.monotonic()
    for spec in plan(cfg):
        reason = _skip_reason(spec, report["rows"], cfg, started)
        print(
            f"-- {_label(spec)} chunk {spec['chunk']} seq {spec['seq']} {'+'.join(spec['modes'])}", flush=True
        )
        result = {"status": "skipped", "reason": reason} if reason else run_one(spec, cfg["timeout"])
        row = {**spec, "planned_modes": spec["modes"], **result}
        if result.get("status") != "ok":
            row["modes"] = {}
        report["rows"].append(row)
        for mode in spec["modes"]:
            print("   " + _fmt_row(row, mode), flush=True)
        _write(args.out, report)
    report["derived"] = derived(report["rows"], cfg)
    report["total_wall_s"] = time.monotonic() - started
    _write(args.out, report)
    print()
    print_table(report["rows"])
    print_flops(report["rows"])
    print_derived(report["derived"])
    print(f"\nJSON: {args.out}")
    return 0


def _write(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
