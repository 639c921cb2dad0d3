"""The LLM instance model's iteration time against published latency measurements.

    python scripts/llm_calibration.py

Prints one row per published single-request (or fixed-batch) measurement on
known hardware: the setting, the measured and the modelled latency and the
relative error, then the sources. ``tests/envs/test_llm_core.py`` runs the
same comparison and fails beyond 20% on any point or 10% on average;
``docs/llm_router.md`` (section 1) discusses it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cloudgym.envs.core.llm import H200_141GB, LLAMA3_8B, LLAMA3_70B, PRESETS, InstanceSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class PublishedLatency:
    """One published single-request latency measurement to compare the model with."""

    source: str
    """Where it was published."""
    instance: InstanceSpec
    """Model, GPU and tensor-parallel degree measured."""
    what: str
    """``"ttft"`` (prefill of ``prompt`` tokens, first token), ``"tbt"`` (one decode iteration of ``batch``
    requests at ``context`` tokens each) or ``"e2e"`` (prompt then ``output`` tokens at batch ``batch``)."""
    prompt: int = 0
    output: int = 0
    batch: int = 1
    context: int = 0
    measured_s: float


_TRT05 = "TensorRT-LLM v0.5 docs/source/performance.md, low-latency table (A100 FP16, batch 1)"
_LMD = "lmdeploy v0.1.0a1 docs/en/benchmark/a100_fp16.md, static inference (A100-80G)"
_NEMO = "NVIDIA NeMo Framework docs, performance/llama.html, Llama-2 inference (TRT-LLM, A100 80GB SXM4)"
_VLLM = "vLLM nightly performance benchmark (buildkite vllm/performance-benchmark), latency tests on H200"

PUBLISHED_LATENCIES: tuple[PublishedLatency, ...] = (
    PublishedLatency(source=_TRT05, instance=PRESETS["llama2-7b-a100"], what="ttft", prompt=128, measured_s=0.016),
    PublishedLatency(source=_TRT05, instance=PRESETS["llama2-7b-a100"], what="ttft", prompt=2048, measured_s=0.133),
    PublishedLatency(source=_TRT05, instance=PRESETS["llama2-70b-4xa100"], what="ttft", prompt=128, measured_s=0.047),
    PublishedLatency(source=_TRT05, instance=PRESETS["llama2-70b-4xa100"], what="ttft", prompt=2048, measured_s=0.377),
    PublishedLatency(source=_LMD, instance=PRESETS["llama2-7b-a100"], what="ttft", prompt=2048, measured_s=0.139),
    PublishedLatency(source=_LMD, instance=PRESETS["llama2-70b-4xa100"], what="ttft", prompt=2048, measured_s=0.402),
    PublishedLatency(
        source=_LMD, instance=PRESETS["llama2-7b-a100"], what="tbt", batch=1, context=192, measured_s=0.010
    ),
    PublishedLatency(
        source=_LMD, instance=PRESETS["llama2-7b-a100"], what="tbt", batch=64, context=64, measured_s=0.012
    ),
    PublishedLatency(
        source=_LMD, instance=PRESETS["llama2-70b-4xa100"], what="tbt", batch=1, context=192, measured_s=0.029
    ),
    PublishedLatency(
        source=_LMD, instance=PRESETS["llama2-70b-4xa100"], what="tbt", batch=64, context=64, measured_s=0.037
    ),
    PublishedLatency(
        source=_NEMO, instance=PRESETS["llama2-7b-a100"], what="e2e", prompt=128, output=20, batch=1, measured_s=0.234
    ),
    PublishedLatency(
        source=_NEMO, instance=PRESETS["llama2-7b-a100"], what="e2e", prompt=128, output=20, batch=8, measured_s=0.3295
    ),
    PublishedLatency(
        source=_VLLM,
        instance=InstanceSpec(gpu=H200_141GB, model=LLAMA3_8B, num_gpus=1),
        what="e2e",
        prompt=32,
        output=128,
        batch=8,
        measured_s=0.8334,
    ),
    PublishedLatency(
        source=_VLLM,
        instance=InstanceSpec(gpu=H200_141GB, model=LLAMA3_70B, num_gpus=4),
        what="e2e",
        prompt=32,
        output=128,
        batch=8,
        measured_s=2.0775,
    ),
)
"""Published measurements of single requests (or a fixed batch) on known hardware; see docs/llm_router.md."""


def modelled_latency(m: PublishedLatency) -> float:
    """What the iteration-time model predicts for a published measurement's setting, s."""
    spec = m.instance
    if m.what == "ttft":
        return float(spec.prefill_time(m.prompt))
    if m.what == "tbt":
        return float(spec.decode_time(m.batch, m.batch * m.context))
    if m.what == "e2e":
        # The batch's prompts are prefilled together, then output - 1 decode iterations at growing context.
        first = float(spec.prefill_time(m.batch * m.prompt))
        ctx = m.prompt + np.arange(1, m.output)
        rest = float(np.sum(spec.decode_time(m.batch, m.batch * ctx)))
        return first + rest
    raise ValueError(f"unknown measurement kind {m.what!r}")


def compare_with_published() -> list[dict[str, Any]]:
    """One row per published measurement: setting, measured and modelled seconds, relative error."""
    rows = []
    for m in PUBLISHED_LATENCIES:
        model = modelled_latency(m)
        rows.append(
            {
                "source": m.source,
                "instance": m.instance.name,
                "what": m.what,
                "prompt": m.prompt,
                "output": m.output,
                "batch": m.batch,
                "context": m.context,
                "measured_s": m.measured_s,
                "modelled_s": model,
                "error": model / m.measured_s - 1.0,
            }
        )
    return rows


def main() -> None:
    rows = compare_with_published()
    print(f"{'instance':<32} {'what':<5} {'prompt':>6} {'out':>4} {'batch':>5} {'measured':>9} {'model':>9} {'err':>6}")
    for r in rows:
        print(
            f"{r['instance']:<32} {r['what']:<5} {r['prompt']:>6} {r['output']:>4} {r['batch']:>5} "
            f"{r['measured_s'] * 1e3:>7.1f}ms {r['modelled_s'] * 1e3:>7.1f}ms {r['error']:>+6.0%}"
        )
    errors = np.abs([r["error"] for r in rows])
    print(f"\nmean absolute error {errors.mean():.0%}, worst {errors.max():.0%}")
    sources = sorted({r["source"] for r in rows})
    print("\nsources:\n" + "\n".join(f"  - {s}" for s in sources))


if __name__ == "__main__":
    main()
