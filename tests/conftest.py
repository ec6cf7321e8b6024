"""Test-session set-up: simulated CPU devices, parsed absl flags (Grain needs them), markers, and a
compilation cache shared by the session's tests, its xdist workers (they inherit the controller's environment)
and the subprocesses they start.

Four simulated devices: on a 2-core machine eight devices running collectives can hit XLA's CPU
rendezvous timeout (see ARCHITECTURE.md, Tests). XLA's CPU backend without LLVM optimisation: the suite's
tiny models are compile-bound (SafePaint's combined-pass test: 137 s -> 83 s on 2 cores) and the arithmetic is the
same (the golden-parity tests pass at the same tolerances). The persistent compilation cache starts empty in a fresh
temporary folder each session (nothing carries over between sessions); it spares the suite recompiling the same
smoke models for every end-to-end run (resume after a kill, export, predict). The longest test files run first
(`LONGEST_FIRST`), so that the two xdist workers finish together.
"""
import atexit
import os
import shutil
import sys
import tempfile

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=4").strip()
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jax-test-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

from absl import flags  # noqa: E402

if not flags.FLAGS.is_parsed():
  flags.FLAGS(sys.argv[:1])

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN_DIR = os.path.join(REPO_ROOT, "tests", "testdata", "golden")


# The longest test files, longest first (seconds on 2 cores, 2026-12-07: 325, 225, 213, 207, 184, 147, 143, 125, ...).
# `--dist loadfile` gives each worker a file at a time in collection order; started first, the long files leave the
# short ones to fill the end, and the workers finish together (longest-processing-time-first scheduling; in
# xdist's default order, by test count, the one-test rehearsal ran last while the other worker idled for 2 min).
# Only the order depends on this list: a stale entry costs balance, never a test.
LONGEST_FIRST = ("test_safepaint_task.py", "test_engine.py", "test_vilocal_task.py", "test_uniformer.py",
                 "test_pods.py", "test_rehearsal.py", "test_delocate_run.py", "test_exports.py", "test_vilocal_convert.py",
                 "test_ncl_tools.py", "test_safepaint_model.py", "test_run_dir.py", "test_msccnet_predict.py",
                 "test_vilocal_predict.py", "test_msccnet_convert.py", "test_prepare.py", "test_resnet.py",
                 "test_preemption.py", "test_ablations.py", "test_msccnet_task.py")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end runs (minutes); still run by CI")
  config.addinivalue_line("markers", "torch_parity: needs PyTorch installed (the `torch` extra)")
  if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the collection order below
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the other files keep their order
