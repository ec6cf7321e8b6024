"""`python -m msccnet_jax.main --config=configs/msccnet.py:demo --workdir=DIR` trains and evaluates MSCCNet."""
from common.train import cli

if __name__ == "__main__":
  cli.run()
