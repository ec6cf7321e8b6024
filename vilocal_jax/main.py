"""`python -m vilocal_jax.main --config=configs/vilocal.py:demo --workdir=DIR` runs both stages (stage1/, stage2/)."""
from common.train import cli

if __name__ == "__main__":
  cli.run()
