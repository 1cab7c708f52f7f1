"""keras_rbp: Recursive Bayesian Pruning for Keras and TensorFlow."""

import setuptools

setuptools.setup(
    name="keras-rbp",
    version="0.1.0",
    description=(
        "Structured pruning for Keras with Recursive Bayesian Pruning: learn which "
        "channels to drop, remove them for real, export SavedModel and TFLite."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["keras_rbp", "keras_rbp.*"]),
    python_requires=">=3.10",
    license="Apache-2.0",  # an SPDX expression; setuptools deprecates license classifiers
    license_files=["LICENSE"],
    entry_points={"console_scripts": ["keras-rbp=keras_rbp.__main__:run"]},
    install_requires=[
        # tf-keras requires the full tensorflow package, not tensorflow-cpu.
        "tensorflow>=2.16,<2.22",
        "keras>=3.3",
        "numpy",
        "absl-py",
        # tf.summary, used by PruningSummaries, needs TensorBoard installed.
        "tensorboard",
        # LiteRT runs and times the exported TFLite files.
        "ai-edge-litert",
        # prune_and_export draws pruning.png.
        "matplotlib",
    ],
    extras_require={
        # Keras 2 mode (TF_USE_LEGACY_KERAS=1) and quantization-aware training.
        "legacy": ["tf-keras>=2.16,<2.22", "tensorflow-model-optimization>=0.8,<0.9"],
        # Keras 3's other backends: KERAS_BACKEND=jax or torch.
        "jax": ["jax>=0.4.30"],
        "torch": ["torch>=2.4"],
        "test": [
            "jax>=0.4.30",
            "torch>=2.4",
            "tf-keras>=2.16,<2.22",
            "tensorflow-model-optimization>=0.8,<0.9",
            "pytest",
            # -n 2: the suite runs on both cores of a CI machine.
            "pytest-xdist",
            "hypothesis",
            # KerasHub's models, built offline from small configs.
            "keras-hub",
        ],
        # KerasHub (Keras 3's model zoo): its Backbone and Task models prune.
        "hub": ["keras-hub"],
        "benchmarks": ["matplotlib"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: TensorFlow",
    ],
)
