"""One commit trains to the committed weights on any x86-64 CPU: the numeric profile of pipelines/numerics.py.

OpenBLAS picks its kernel by CPU (SkylakeX on an AVX-512 machine, Haswell on an AVX2 one, ...), and
numpy dispatches its own SIMD loops by CPU too. Setting OPENBLAS_CORETYPE / NPY_DISABLE_CPU_FEATURES
in the caller's environment is how one machine acts as another's CPU: every training path must come
out with the committed pointers whatever the caller's CPU would have chosen.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines import numerics
from tests.conftest import PROJECT

MODELS = ("iris-classifier", "digits-classifier")
# what other CPUs pick: OpenBLAS kernels (SkylakeX: AVX-512 Intel/AMD, Zen: AMD, Haswell: AVX2) and
# numpy's loops with and without AVX-512
CPUS = {
    "avx512": {"OPENBLAS_CORETYPE": "SkylakeX"},
    "haswell": {"OPENBLAS_CORETYPE": "Haswell", "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"},
    "zen": {"OPENBLAS_CORETYPE": "Zen"},
    "sandybridge-kernel": {"OPENBLAS_CORETYPE": "Sandybridge"},
}

needs_x86_avx2 = pytest.mark.skipif(
    numerics.profile_for()[2] != "" or platform.machine().lower() not in ("x86_64", "amd64"),
    reason="the committed pointers are the x86-64 (AVX2) profile's; this machine runs another profile")


def committed_md5(model: str, artifact: str = "model.pkl") -> str:
    """The pointer's md5 at the checkout's HEAD (not the working tree, which a retrain may have rewritten)."""
    path = f"models/{model}/{artifact}.dvc"
    try:
        text = subprocess.run(["git", "-C", str(PROJECT), "show", f"HEAD:{path}"], capture_output=True,
                              text=True, check=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):  # not a git checkout (an sdist): the file
        text = (PROJECT / path).read_text()
    return yaml.safe_load(text)["outs"][0]["md5"]


def train(model: str, out: Path, env: dict[str, str]) -> str:
    """`python -m pipelines.steps train` from the repository root, as the Argo task and the runner call it."""
    done = subprocess.run([sys.executable, "-m", "pipelines.steps", "train", "--model", model, "--model-dir", str(out)],
                          cwd=PROJECT, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return hashlib.md5((out / "model.pkl").read_bytes()).hexdigest()  # DVC's md5


def caller_env(cpu: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != numerics.MARKER and not k.startswith(("OPENBLAS_", "NPY_", "ATEN_"))}
    return {**env, **cpu}


@pytest.mark.slow
@needs_x86_avx2
@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_training_gives_the_committed_pointers_whatever_kernel_the_cpu_picks(cpu, tmp_path):
    for model in MODELS:
        assert train(model, tmp_path / model, caller_env(CPUS[cpu])) == committed_md5(model), (
            f"{model} trained to other bytes when the CPU picks {CPUS[cpu]}")


@pytest.mark.slow
@needs_x86_avx2
def test_without_the_profile_the_kernel_changes_the_bytes(tmp_path):
    """The check above can fail: unpinned (the marker set, so the step does not re-execute), two kernels
    that every AVX2 CPU can run train iris to different bytes."""
    unpinned = {numerics.MARKER: "off-for-this-test"}
    haswell = train("iris-classifier", tmp_path / "a", caller_env({**unpinned, "OPENBLAS_CORETYPE": "Haswell"}))
    sandy = train("iris-classifier", tmp_path / "b", caller_env({**unpinned, "OPENBLAS_CORETYPE": "Sandybridge"}))
    assert haswell != sandy


# the PyTorch model: torch dispatches its ATen kernels by CPU too (avx512 on an AVX-512 CPU, avx2, or the generic
# `default`), and its BLAS (MKL, statically linked in torch) picks a code path by CPU, besides the BLAS kernel and
# numpy's loops of its data preparation. Measured on an AMD EPYC with AVX-512 (2026-12-07), unpinned: ATen's
# `default` kernels and MKL's `COMPATIBLE` path (no FMA) each train other bytes than the AVX2 ones
TORCH_MODEL, TORCH_ARTIFACT = "wine-classifier", "model.pt"
TORCH_CPUS = {
    "aten-avx512": {"ATEN_CPU_CAPABILITY": "avx512", "OPENBLAS_CORETYPE": "SkylakeX"},
    "aten-default": {"ATEN_CPU_CAPABILITY": "default", "NPY_DISABLE_CPU_FEATURES": "X86_V4"},
    "mkl-compatible": {"MKL_CBWR": "COMPATIBLE", "OPENBLAS_CORETYPE": "Prescott"},
    "zen": {"OPENBLAS_CORETYPE": "Zen"},
}


def train_torch(python: Path, out: Path, env: dict[str, str]) -> str:
    """`python -m pipelines.steps train` in the model's own environment, from the repository root."""
    done = subprocess.run([str(python), "-m", "pipelines.steps", "train", "--model", TORCH_MODEL, "--model-dir", str(out),
                           "--output", TORCH_ARTIFACT], cwd=PROJECT, env=env, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    return hashlib.md5((out / TORCH_ARTIFACT).read_bytes()).hexdigest()  # DVC's md5


@pytest.mark.slow
@needs_x86_avx2
def test_the_pytorch_model_trains_the_committed_pointer_whatever_kernels_the_cpu_picks(tmp_path):
    """models/wine-classifier in its own lock's environment: callers whose environment picks other ATen, MKL,
    BLAS and numpy kernels train the committed model.pt; without the profile, ATen's generic kernels do not."""
    from reconciler.build.pipeline_runner import training_python

    python = training_python(PROJECT, TORCH_MODEL)
    committed = committed_md5(TORCH_MODEL, TORCH_ARTIFACT)
    for name, cpu in sorted(TORCH_CPUS.items()):
        assert train_torch(python, tmp_path / name, caller_env(cpu)) == committed, (
            f"{TORCH_MODEL} trained to other bytes when the CPU picks {cpu}")
    unpinned = caller_env({numerics.MARKER: "off-for-this-test", "ATEN_CPU_CAPABILITY": "default",
                           "OMP_NUM_THREADS": "1"})
    assert train_torch(python, tmp_path / "unpinned", unpinned) != committed


def test_the_profile_per_machine():
    avx2 = frozenset({"avx2", "fma", "sse2"})
    name, env, note = numerics.profile_for("x86_64", avx2)
    assert (name, env["OPENBLAS_CORETYPE"], env["OPENBLAS_NUM_THREADS"], note) == ("x86-64-avx2", "Haswell", "1", "")
    assert env["ATEN_CPU_CAPABILITY"] == "avx2"  # torch's kernels (its generic ones train other bytes)
    assert "X86_V4" in env["NPY_DISABLE_CPU_FEATURES"]
    # a CPU that cannot run the Haswell kernel is not forced onto it (it would die of SIGILL): it says why
    name, env, note = numerics.profile_for("x86_64", frozenset({"sse2", "avx"}))
    assert "OPENBLAS_CORETYPE" not in env and "avx2" in note and "will not match" in note
    assert numerics.profile_for("aarch64", frozenset())[1]["OPENBLAS_CORETYPE"] == "ARMV8"
    assert "no pinned numeric profile" in numerics.profile_for("riscv64", frozenset())[2]
    pinned = numerics.pinned_environ({"OPENBLAS_CORETYPE": "SkylakeX", "PATH": "/bin"}, machine="x86_64", flags=avx2)
    assert pinned["OPENBLAS_CORETYPE"] == "Haswell" and pinned["PATH"] == "/bin" and numerics.is_pinned(pinned)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert numerics.cpu_flags(info) == frozenset({"fpu", "sse2", "avx2", "fma"})
    assert numerics.cpu_flags(tmp_path / "missing") is None
