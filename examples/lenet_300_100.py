"""LeNet-300-100 on MNIST: train, prune input pixels and both hidden layers
recursively, shrink, export. The small model takes only the kept pixels:
results.json lists them (`kept_features`).

    python examples/lenet_300_100.py --data_dir ../shared/data --output_dir out/lenet_300_100
"""

from absl import flags

import common

common.define_flags(
    pretrain_epochs=20,
    kl_weight=10.0,
    input_features=True,
    epochs_per_stage=5,
    finetune_epochs=10,
    output_dir="out/lenet_300_100",
)

flags.adopt_module_key_flags(common)  # --help lists the recipe's flags

if __name__ == "__main__":
    common.main("lenet_300_100", "mnist")
