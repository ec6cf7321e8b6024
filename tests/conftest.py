"""Test-session set-up: simulated CPU devices, parsed absl flags (Grain needs them), markers.

Four simulated devices: on a 2-core machine eight devices running collectives can hit XLA's CPU
rendezvous timeout (see ARCHITECTURE.md, Tests).
"""
import os
import sys

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags  # noqa: E402

if not flags.FLAGS.is_parsed():
  flags.FLAGS(sys.argv[:1])

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN_DIR = os.path.join(REPO_ROOT, "tests", "testdata", "golden")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end runs (minutes); still run by CI")
  config.addinivalue_line("markers", "torch_parity: needs PyTorch installed (the `torch` extra)")
