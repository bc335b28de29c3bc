"""The numeric profile every training step runs under, so that weights reproduce on any CPU.

numpy's and scipy's bundled OpenBLAS picks its kernel by CPU at load time (`Haswell` on an AVX2
machine, `SkylakeX` on an AVX-512 one, `Zen` -> Haswell on AMD): each kernel sums in another order,
so the same code, data, seed and library versions give other float bits, another pickle and another
DVC md5 on another machine (measured: AMD EPYC with AVX-512 against the committed pointers). MKL
(torch's BLAS on x86) and OpenMP runtimes do the same with their thread counts.

The kernel is chosen when the library loads, so it cannot be set from inside a running process:
`python -m pipelines.steps` (the one entry point of every training path: the Argo steps and the
local runner alike) re-executes itself once under `pinned_environ()` before it imports anything
numeric (`ensure_pinned`).

The profile per architecture:
- x86-64: OpenBLAS `Haswell` (AVX2 + FMA: every x86-64 server CPU since 2013, Intel and AMD),
  numpy's AVX-512 loops off (`NPY_DISABLE_CPU_FEATURES`: numpy dispatches its own SIMD loops by CPU
  too), PyTorch's ATen kernels at AVX2 (`ATEN_CPU_CAPABILITY`: torch picks avx512 kernels on an AVX-512
  CPU otherwise), MKL's conditional numerical reproducibility at AVX2 (`MKL_CBWR`), one thread everywhere.
  A CPU without AVX2/FMA cannot run that kernel: training then runs with the CPU's own kernel and
  says that its weights will not match pointers trained elsewhere.
- arm64: OpenBLAS `ARMV8` (the generic NEON kernel every arm64 CPU runs), one thread. arm64 and
  x86-64 kernels differ in their FMA use, so the two architectures each reproduce their own bytes;
  the committed pointers are x86-64's (docs/model-spec.md, "Reproducible training").

Only the standard library: this runs before numpy is imported.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

MARKER = "GITOPS_TRAINING_NUMERICS"  # set in the pinned environment: the profile's name
THREADS = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                  "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")}

# numpy's own AVX-512 loops (dispatched at import, names of numpy 2.x and 1.x; unknown names are ignored):
# off, so an AVX-512 CPU runs the AVX2 loops every x86-64-v3 CPU runs (they round differently: measured,
# the digits MLP's pickle changes with them on)
NUMPY_AVX512 = ("X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX "
                "AVX512_CLX AVX512_CNL AVX512FP16")

# machine -> (profile name, the variables that pin it, the CPU flags it needs; none: any CPU of the architecture)
PROFILES: dict[str, tuple[str, dict[str, str], frozenset[str]]] = {
    "x86_64": ("x86-64-avx2", {"OPENBLAS_CORETYPE": "Haswell", "MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                               "NPY_DISABLE_CPU_FEATURES": NUMPY_AVX512},
               frozenset({"avx2", "fma"})),
    "aarch64": ("arm64-generic", {"OPENBLAS_CORETYPE": "ARMV8"}, frozenset()),
}
PROFILES["amd64"] = PROFILES["x86_64"]
PROFILES["arm64"] = PROFILES["aarch64"]


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (None where it cannot be read: not Linux)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def profile_for(machine: str | None = None, flags: frozenset[str] | None = None) -> tuple[str, dict[str, str], str]:
    """(profile name, variables, note) for this machine; the note is empty when the profile applies as designed."""
    machine = (machine or platform.machine()).lower()
    known = PROFILES.get(machine)
    if known is None:
        return (f"{machine}-native", dict(THREADS),
                f"no pinned numeric profile for {machine}: weights reproduce only on this CPU kind")
    name, variables, needs = known
    flags = cpu_flags() if flags is None else flags
    if needs and flags is not None and not needs <= flags:
        lacking = ", ".join(sorted(needs - flags))
        return (f"{machine}-native", dict(THREADS),
                f"this CPU lacks {lacking}, so the {name} kernels cannot run: weights trained here will not "
                "match pointers trained on other machines")
    return name, {**THREADS, **variables}, ""


def pinned_environ(base: Mapping[str, str] | None = None, *, machine: str | None = None,
                   flags: frozenset[str] | None = None) -> dict[str, str]:
    """`base` (default os.environ) with the profile's variables set, overriding what the caller had."""
    name, variables, _ = profile_for(machine, flags)
    env = dict(os.environ if base is None else base)
    env.update(variables)
    env[MARKER] = name
    return env


def is_pinned(env: Mapping[str, str] | None = None) -> bool:
    return bool((os.environ if env is None else env).get(MARKER))


def ensure_pinned(argv: list[str] | None = None) -> None:
    """Re-execute this interpreter under the pinned profile unless it already runs under it.

    Called first thing by `python -m pipelines.steps`, before numpy loads. Prints the profile's note
    (a CPU that cannot run it) to stderr once.
    """
    if is_pinned():
        return
    _, _, note = profile_for()
    if note:
        print(f"warning: {note}", file=sys.stderr)
    args = [sys.executable, "-m", "pipelines.steps", *(sys.argv[1:] if argv is None else argv)]
    os.execve(sys.executable, args, pinned_environ())
