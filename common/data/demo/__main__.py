"""`python -m common.data.demo --out DIR [--seed 0] [--scale full|tiny] [--force]` (see `corpus`)."""
import sys

from common.data.demo.corpus import main

main(sys.argv[1:])
