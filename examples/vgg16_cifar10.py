"""VGG-16 on CIFAR-10 (the variant of SBP and VIBNet: 13 conv layers with
BatchNormalization and a small dense head): train, prune the filters with the
cost-aware prior, two groups a stage, shrink, export. Slow on a CPU; meant
for a GPU.

    python examples/vgg16_cifar10.py --output_dir out/vgg16_cifar10
"""

from absl import flags

import common

common.define_flags(
    pretrain_epochs=60,
    batch_size=128,
    kl_weight=20.0,
    cost_aware=True,
    groups_per_stage=2,
    epochs_per_stage=4,
    finetune_epochs=10,
    output_dir="out/vgg16_cifar10",
)

flags.adopt_module_key_flags(common)  # --help lists the recipe's flags

if __name__ == "__main__":
    common.main("vgg16_cifar10", "cifar10")
