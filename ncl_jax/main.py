"""`python -m ncl_jax.main --config=configs/ncl.py:demo --workdir=DIR` trains and evaluates NCL-IML."""
from common.train import cli

if __name__ == "__main__":
  cli.run()
