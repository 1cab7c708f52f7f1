"""LeNet-5-Caffe on MNIST: train, prune conv filters, fc1 inputs and fc1
neurons recursively with the cost-aware prior, shrink, export.

    python examples/lenet5.py --data_dir ../shared/data --output_dir out/lenet5
"""

from absl import flags

import common

common.define_flags(
    pretrain_epochs=10,
    kl_weight=60.0,
    flatten_features=True,
    cost_aware=True,
    epochs_per_stage=4,
    finetune_epochs=6,
    output_dir="out/lenet5",
    quantize=["int8"],
)

flags.adopt_module_key_flags(common)  # --help lists the recipe's flags

if __name__ == "__main__":
    common.main("lenet5_caffe", "mnist")
