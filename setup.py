"""Installs selfsup: `pip install -e ".[test]"` for development."""
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _version():
  with open(os.path.join(HERE, "selfsup", "version.py")) as f:
    scope = {}
    exec(f.read(), scope)  # pylint: disable=exec-used
    return scope["__version__"]


def _readme():
  with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    return f.read()


# TensorFlow is pinned by flavour through extras so a user picks the build that
# matches the hardware: `selfsup[cpu]`, `selfsup[gpu]` (CUDA wheels) or
# `selfsup[tpu]` (the plain wheel, on a Cloud TPU VM with libtpu installed).
# Installing selfsup with no flavour expects TensorFlow to be there already.
TF_VERSION = "2.21.0"
CORE = [
    "numpy>=1.26",
    "scipy>=1.11",
    "absl-py>=2.0",
    "gin-config>=0.5",
    "tensorflow-datasets>=4.9",
    "tensorboard>=2.20",
    "pillow>=10.0",
    # Keeps scipy's BLAS to one thread while L-BFGS-B runs (evaluation/lbfgs).
    "threadpoolctl>=3.1",
]
EXTRAS = {
    "cpu": [f"tensorflow-cpu=={TF_VERSION}"],
    "gpu": [f"tensorflow[and-cuda]=={TF_VERSION}"],
    "tpu": [f"tensorflow=={TF_VERSION}"],
    # The demo renders scikit-learn's digits; tests also use scikit-image photos
    # and compare the L-BFGS fit against scikit-learn.
    "demo": ["scikit-learn>=1.3"],
    # bin/report's figures (bin/study and the tables need nothing more).
    "study": ["matplotlib>=3.7"],
    "test": [
        f"tensorflow-cpu=={TF_VERSION}",
        "scikit-learn>=1.3",
        "scikit-image>=0.22",
        "pytest>=8",
        "pytest-timeout>=2.2",
        # Only for the subprocess that runs the authors' TF1 models as the
        # oracle of tests/test_tf1_reference.py; selfsup never imports it.
        f"tf-keras=={TF_VERSION}",
        "matplotlib>=3.7",
        # tests/test_packaging.py builds the wheel without build isolation.
        "build>=1.0",
        "wheel>=0.40",
    ],
}

setup(
    name="selfsup",
    version=_version(),
    description=("Self-supervised visual representation learning in "
                 "TensorFlow 2 / Keras 3: Rotation, Exemplar, Jigsaw and "
                 "Relative Patch Location on ResNet, RevNet and VGG backbones."),
    long_description=_readme(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # The repository's gin/ is the source of truth for the configs; installed,
    # it is the package data folder selfsup/gin (selfsup.cli.common finds
    # either), so `--gin_file=jigsaw.gin` works after `pip install selfsup`.
    packages=find_packages(include=["selfsup", "selfsup.*"]) + ["selfsup.gin"],
    package_dir={"selfsup.gin": "gin"},
    package_data={"selfsup": ["assets/*.bin", "study/paper_results.json"],
                  "selfsup.gin": ["*.gin", "*/*.gin"]},
    include_package_data=True,
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "selfsup=selfsup.__main__:main",
            "selfsup-pretrain=selfsup.cli.pretrain:run",
            "selfsup-linear-eval=selfsup.cli.linear_eval:run",
            "selfsup-import-tf1=selfsup.cli.import_tf1:run",
            "selfsup-study=selfsup.cli.study:run_study",
            "selfsup-report=selfsup.cli.study:run_report",
            "selfsup-demo=selfsup.cli.demo:run",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
