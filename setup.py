"""Install the JAX/Flax forensics suite: `pip install -e ".[test]"`.

TensorFlow (CPU build) is a deliberate dependency: clu's metric writers and progress reporting import it. It is
imported lazily by the logging modules only; the train step, the models, dataset preparation and the Grain input
pipelines never import it, and its GPU visibility is turned off. Apache Beam (the `prepare` extra, in `test` so
that CI runs the Beam preparation test) is only needed for `python -m common.data.prepare --runner=beam`.
"""
import setuptools

setuptools.setup(
    name="jax-forensics",
    version="0.1.0",
    description="JAX/Flax reimplementations of ViLocal, NCL-IML, MSCCNet, Delocate and SafePaint",
    python_requires=">=3.11",
    packages=setuptools.find_packages(
        include=["common*", "vilocal_jax*", "ncl_jax*", "msccnet_jax*", "delocate_jax*", "safepaint_jax*"]),
    install_requires=[
        "jax>=0.10,<0.12",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "grain>=0.2.18",
        "tensorflow-datasets>=4.9.10",
        "array-record>=0.8",
        "tensorflow-cpu>=2.20",
        "tensorboard>=2.20",  # clu's SummaryWriter imports it; tensorflow-cpu 2.21 no longer pulls it in
        "ml-collections>=1.1",
        "clu>=0.0.12",
        "numpy>=1.26",
        "opencv-python-headless>=4.9",
        "scikit-image>=0.24",
        "scikit-video>=1.1.11",
        "imageio>=2.34",
        "matplotlib>=3.8",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "scikit-learn>=1.4", "dill", "apache-beam>=2.78",
                 "imageio-ffmpeg>=0.5"],
        # Distributed dataset preparation (python -m common.data.prepare --runner=beam).
        "prepare": ["apache-beam>=2.78"],
        # The FF++-shaped benchmark set (benchmarks/ffpp_shaped.py): a static ffmpeg with libx264 (OpenCV's wheel
        # encodes only mp4v). In `test` too, so that CI builds a tiny one.
        "bench": ["imageio-ffmpeg>=0.5"],
        # Only for reading official PyTorch `.pth` checkpoints in the converters' CLIs.
        "torch": ["torch>=2.1"],
    },
)
