"""`python -m delocate_jax.main --config=configs/delocate.py:demo --workdir=DIR` trains and evaluates Delocate."""
from common.train import cli

if __name__ == "__main__":
  cli.run()
