"""`python -m safepaint_jax.main --config=configs/safepaint.py:demo --workdir=DIR` trains and evaluates SafePaint."""
from common.train import cli

if __name__ == "__main__":
  cli.run()
