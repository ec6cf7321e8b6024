"""The embedded demo corpus, built locally and deterministically from media that ship inside PyPI packages.

    python -m common.data.demo --out DIR [--seed 0] [--scale full|tiny] [--force]
    python -m common.data.demo            # build (or find) the cached corpus and print its path

Modules: `corpus` (build, manifest, cache and command line; the corpus layout is documented there), `media`
(source media and deterministic writers), and one per part: `video` (video inpainting), `images` (image
manipulation and inpainting), `faces` (FaceForensics++ layout).
"""
from common.data.demo.corpus import CACHE_ENV
from common.data.demo.corpus import DEFAULT_SEED
from common.data.demo.corpus import MANIFEST
from common.data.demo.corpus import SCALES
from common.data.demo.corpus import Scale
from common.data.demo.corpus import VERSION
from common.data.demo.corpus import build
from common.data.demo.corpus import default_cache_root
from common.data.demo.corpus import ensure_demo_corpus
from common.data.demo.corpus import load_manifest
from common.data.demo.corpus import main
