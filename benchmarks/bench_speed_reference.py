"""sharpscope against the published TensorFlow m-rBCR (DeBCR 0.1.0), side by side (issue 12).

The reference runs in its own environment, never a dependency of sharpscope::

    python3.10 -m venv /tmp/tfref && /tmp/tfref/bin/pip install "debcr[tf-cpu]==0.1.0"

Then, from the project environment::

    python benchmarks/bench_speed_reference.py --rounds 2 --threads 1 --size 1024

Each round runs, one after the other and each in a fresh process, the TensorFlow side
(the ``/tmp/tfref`` interpreter running this same file with ``--side tf``) and the
sharpscope side (``--side torch``), once with glibc's allocator and once with tcmalloc
preloaded (``LD_PRELOAD``) when ``libtcmalloc`` is found.  Both sides use the same
number of threads and time the same work:

* ``patches``: the network on a batch of 16 patches of 128 x 128 - TensorFlow: the
  Keras model of ``debcr.model.init()`` called through ``tf.function`` on the inputs
  ``x, x[:, ::2, ::2], x[:, ::4, ::4]``; sharpscope: ``Model.predict_patches`` (the
  fast path) and the plain float32 module;
* ``image``: a whole ``size x size`` image - TensorFlow: the package's own
  patch-predict-stitch (``PatchPred_3D_denoiser.pred_stack_patch``: 128 x 128 tiles,
  no overlap); sharpscope: ``Model.predict`` with the model's default tiling (512 with
  an overlap of 96: seamless, which the reference is not);
* ``train``: one training step at batch 8 of 128 x 128 - TensorFlow: forward, the
  package's multi-scale loss, gradient and Adam update inside ``tf.function``;
  sharpscope: forward, ``restoration_loss``, backward and Adam, in float32 NCHW (the
  plain module), in channels-last through the fused view the trainer uses
  (:func:`sharpscope.models.fused.fuse_for_training`), and that with the bfloat16
  autocast the trainer uses on CPUs with native bfloat16.

Weights are random on both sides (speed does not depend on them).  Medians over the
repeats of each process, then over the rounds; the load average is recorded with
each process.  ``--write-docs`` replaces the section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TF_PYTHON = Path("/tmp/tfref/bin/python")
TCMALLOC = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4",
)
SECTION = "## Speed against the published TensorFlow implementation"


CPU_TIMES: dict[str, float] = {}
"""Median CPU time (``time.process_time``) of the last measurement, by :func:`_median_time`."""


def _median_time(fn, repeats: int) -> float:
    """Median wall time; the median CPU time goes to ``CPU_TIMES['last']``.

    With one thread the CPU time is the compute itself, much less sensitive than
    the wall time to other jobs on a shared machine.
    """
    fn()  # warm-up (tracing, allocation)
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    CPU_TIMES["last"] = statistics.median(cpu)
    return statistics.median(times)


def _timed(out: dict, key: str, fn, repeats: int) -> None:
    out[key] = _median_time(fn, repeats)
    out[key.replace("_s", "_cpu_s")] = CPU_TIMES["last"]


def _image(size: int):
    import numpy as np

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    clean = 60 + 40 * np.sin(9 * x + 3 * np.cos(7 * y)) * np.cos(5 * y)
    return rng.poisson(clean).astype(np.float32)


# ---------------------------------------------------------------------------- TF side
def tf_side(threads: int, size: int, repeats: int, parts: list[str]) -> dict:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import numpy as np
    from debcr import model as debcr_model
    from debcr._core.model.loss import loss_function_mimo
    from debcr._core.whole_img_tester import PatchPred_3D_denoiser

    net = debcr_model.init(None, input_size=128)
    out: dict = {}
    rng = np.random.default_rng(0)
    if "patches" in parts:
        x = tf.constant(rng.random((16, 128, 128, 1), dtype=np.float32))
        call = tf.function(lambda a, b, c: net([a, b, c], training=False))
        inputs = (x, x[:, ::2, ::2], x[:, ::4, ::4])
        _timed(out, "patches_s", lambda: call(*inputs)[0].numpy(), repeats)
    if "image" in parts:
        img = _image(size)
        img = (img - img.min()) / (img.max() - img.min())
        stitcher = PatchPred_3D_denoiser(net)
        _timed(
            out,
            "image_s",
            lambda: stitcher.pred_stack_patch(img[None], img[None]),
            max(1, repeats // 2),
        )
    if "train" in parts:
        opt = tf.keras.optimizers.Adam(1e-4)
        w = tf.constant(rng.random((8, 128, 128, 1), dtype=np.float32))
        o = tf.constant(rng.random((8, 128, 128, 1), dtype=np.float32))

        @tf.function
        def step(w, o):
            ws, os_ = [w, w[:, ::2, ::2], w[:, ::4, ::4]], [o, o[:, ::2, ::2], o[:, ::4, ::4]]
            with tf.GradientTape() as tape:
                loss = loss_function_mimo(os_, net(ws, training=True))
            grads = tape.gradient(loss, net.trainable_variables)
            opt.apply_gradients(zip(grads, net.trainable_variables))  # noqa: B905 (autograph: no strict)
            return loss

        _timed(out, "train_s", lambda: float(step(w, o)), repeats)
    out["parameters"] = int(net.count_params())
    return out


# ------------------------------------------------------------------------- torch side
def torch_side(threads: int, size: int, repeats: int, parts: list[str]) -> dict:
    import numpy as np
    import torch

    from sharpscope.models.fused import fuse_for_training
    from sharpscope.models.registry import build_network
    from sharpscope.restore import Model
    from sharpscope.runtime import native_bf16, set_threads
    from sharpscope.training.losses import restoration_loss

    set_threads(threads)
    torch.manual_seed(0)
    net = build_network("mrbcr").eval()
    header = {"name": "random", "architecture": "mrbcr", "tile": {"size": 512, "overlap": 96}}
    model = Model(header, net)
    out: dict = {}
    rng = np.random.default_rng(0)
    if "patches" in parts:
        x = rng.random((16, 128, 128), dtype=np.float32)
        _timed(out, "patches_s", lambda: model.predict_patches(x, device="cpu"), repeats)
        _timed(
            out,
            "patches_plain_s",
            lambda: model.predict_patches(x, device="cpu", backend="plain"),
            repeats,
        )
        ref = model.predict_patches(x, device="cpu", backend="plain")
        fast = model.predict_patches(x, device="cpu")
        out["patches_max_error"] = float(np.abs(fast - ref).max())
        out["patches_range"] = float(ref.max() - ref.min())
        if native_bf16():
            _timed(
                out,
                "patches_bf16_s",
                lambda: model.predict_patches(x, device="cpu", precision="bfloat16"),
                repeats,
            )
            bf = model.predict_patches(x, device="cpu", precision="bfloat16")
            out["patches_bf16_max_error"] = float(np.abs(bf - ref).max())
    if "image" in parts:
        img = _image(size)
        _timed(
            out,
            "image_s",
            lambda: model.predict(img, device="cpu", warn_range=False),
            max(1, repeats // 2),
        )
    if "train" in parts:
        for name, cl, bf16 in (
            ("train_plain_s", False, False),
            ("train_s", True, False),
            ("train_bf16_s", True, True),
        ):
            if bf16 and not native_bf16():
                continue
            net = build_network("mrbcr").train()
            if cl:  # what the trainer does on the CPU: channels-last, through the fused view
                net = net.to(memory_format=torch.channels_last)
            work = fuse_for_training(net).train() if cl else net
            opt = torch.optim.Adam(net.parameters(), lr=1e-4)
            xb = torch.rand(8, 1, 128, 128)
            yb = torch.rand(8, 1, 128, 128)
            if cl:
                xb = xb.contiguous(memory_format=torch.channels_last)

            def step(work=work, opt=opt, xb=xb, yb=yb, bf16=bf16) -> None:
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    outs = work(xb)
                loss, _ = restoration_loss(tuple(o.float() for o in outs), yb)
                loss.backward()
                opt.step()

            _timed(out, name, step, repeats)
    return out


# ------------------------------------------------------------------------------ driver
def _run_side(side: str, args, allocator: str | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("LD_PRELOAD", None)
    if allocator:
        env["LD_PRELOAD"] = allocator
    python = str(TF_PYTHON) if side == "tf" else sys.executable
    cmd = [
        python,
        __file__,
        "--side",
        side,
        "--threads",
        str(args.threads),
        "--size",
        str(args.size),
    ]
    cmd += ["--repeats", str(args.repeats), "--parts", args.parts]
    load = os.getloadavg()[0]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{side} side failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = load
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", choices=("tf", "torch"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=1024, help="whole-image side")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--parts", default="patches,image,train")
    ap.add_argument("--allocators", default="glibc,tcmalloc")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", default=None, help="also write every raw result here")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)
    parts = args.parts.split(",")
    if args.side == "tf":
        print(json.dumps(tf_side(args.threads, args.size, args.repeats, parts)))
        return 0
    if args.side == "torch":
        print(json.dumps(torch_side(args.threads, args.size, args.repeats, parts)))
        return 0

    sides = ["torch"] + (["tf"] if TF_PYTHON.exists() else [])
    if "tf" not in sides:
        print(
            f"no reference environment at {TF_PYTHON}: measuring sharpscope only", file=sys.stderr
        )
    tcmalloc = next((p for p in TCMALLOC if Path(p).exists()), None)
    allocs = {"glibc": None, "tcmalloc": tcmalloc}
    wanted = [a for a in args.allocators.split(",") if a == "glibc" or allocs.get(a)]
    raw: dict = {a: {s: [] for s in sides} for a in wanted}
    for r in range(args.rounds):
        for a in wanted:
            for s in sides if r % 2 == 0 else sides[::-1]:  # alternate who goes first
                res = _run_side(s, args, allocs[a])
                raw[a][s].append(res)
                print(f"round {r} {a} {s}: {res}", file=sys.stderr, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2))
    text = _report(raw, args, argv)
    print(text)
    if args.write_docs:
        sys.path.insert(0, str(Path(__file__).parent))
        from _docs import replace_section

        replace_section(SECTION, text)
    return 0


def _med(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    return statistics.median(vals) if vals else float("nan")


def _report(raw: dict, args, argv) -> str:
    from sharpscope.runtime import cpu_flags, cpu_model

    flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in cpu_flags())
    cmd = "python benchmarks/bench_speed_reference.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    lines = [
        SECTION,
        "",
        f"{cpu_model()} ({flags}), {args.threads} thread(s) per process, each measurement in a "
        f"fresh process, the two implementations interleaved, {args.rounds} round(s) x "
        f"{args.repeats} repeats (medians). Reference: DeBCR 0.1.0 (TensorFlow 2.11 CPU) in its "
        "own environment. Random weights on both sides.",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        "| allocator | measurement | TensorFlow (s) | sharpscope (s) | speed-up (wall) "
        "| speed-up (CPU time) | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for a, sides in raw.items():
        tfr, tor = sides.get("tf", []), sides["torch"]
        rows = [
            (
                "network, batch 16 of 128x128 (tf.function / predict_patches)",
                "patches_s",
                "patches_s",
                "2x",
            ),
            ("network, plain float32 NCHW module", "patches_s", "patches_plain_s", ""),
            ("network, bfloat16 (opt-in)", "patches_s", "patches_bf16_s", ""),
            (
                f"whole image {args.size}x{args.size} (published stitch / Model.predict)",
                "image_s",
                "image_s",
                "2x",
            ),
            (
                "training step, batch 8 (tf.function / fused channels-last float32)",
                "train_s",
                "train_s",
                "3x",
            ),
            ("training step, plain float32 NCHW", "train_s", "train_plain_s", ""),
            ("training step, fused channels-last bfloat16 autocast (the trainer here)", "train_s", "train_bf16_s", ""),
        ]
        for label, kt, ks, target in rows:
            t_tf, t_to = _med(tfr, kt), _med(tor, ks)
            if t_to != t_to:  # nan: not measured
                continue
            ratio = t_tf / t_to if t_tf == t_tf else float("nan")
            c_tf, c_to = (
                _med(tfr, kt.replace("_s", "_cpu_s")),
                _med(tor, ks.replace("_s", "_cpu_s")),
            )
            lines.append(
                f"| {a} | {label} | {t_tf:.2f} | {t_to:.2f} | {ratio:.2f}x "
                f"| {c_tf / c_to:.2f}x | {target} |"
            )
    loads = [r["load"] for sides in raw.values() for rs in sides.values() for r in rs]
    errs = [
        r["patches_max_error"] / r["patches_range"]
        for sides in raw.values()
        for r in sides["torch"]
        if "patches_max_error" in r
    ]
    lines += [
        "",
        f"Load average (1 min) at the start of the processes: {min(loads):.1f}-{max(loads):.1f} "
        "on this shared 2-core machine.",
    ]
    if errs:
        lines.append(
            f"The fast path differs from the plain float32 module by at most {max(errs):.1e} of the output range."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
