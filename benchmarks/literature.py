"""The MNIST recipes of keras_rbp's paper benchmarks and the published
results of its peers, shared by `paper_table` and `budgets`."""

# The documented budgets: MNIST, batch 128, Adam 1e-3 (the baseline with a
# cosine decay to 1e-4), logits 10x faster (logit_scale), fine-tune at 1e-4.
BUDGETS = {
    "lenet_300_100": dict(
        pretrain_epochs=20, input_features=True, epochs_per_stage=5, finetune_epochs=10,
    ),
    "lenet5_caffe": dict(
        pretrain_epochs=10, flatten_features=True, cost_aware=True, epochs_per_stage=4,
        finetune_epochs=6, quantize=("int8",),
    ),
}

# The benchmarks that choose on validation (baseline_recipes,
# method_comparison) hold out this fraction of the training images, the last
# ones, and keep their trained baselines in this folder under --output_dir.
VALIDATION_SPLIT = 0.1
BASELINES_FOLDER = "method_comparison_baselines"

# docs/method.md section 7: (method, architecture, test error %, MACs as the
# source counts them, source). RigL's table gives FLOPs, 2 x MACs; the
# LeNet-5 papers count their own way: compare by `macs` below.
PUBLISHED = {
    "lenet_300_100": [
        ("SBP", "245-160-55", 1.6, 97_100 / 2, "RigL (arXiv 1911.11134), appendix B"),
        ("L0", "266-88-33", 1.6, 53_300 / 2, "RigL (arXiv 1911.11134), appendix B"),
        ("VIBNet", "97-71-33", 1.6, 19_100 / 2, "RigL (arXiv 1911.11134), appendix B"),
    ],
    "lenet5_caffe": [
        ("SBP", "3-18-284-283", 0.86, 217_000, "SBP (Neklyudov et al. 2017)"),
        ("BC-GNJ", "8-13-88-13", 1.0, 290_000, "Bayesian Compression (Louizos et al. 2017)"),
        ("BC-GHS", "5-10-76-16", 1.0, 158_000, "Bayesian Compression (Louizos et al. 2017)"),
        ("L0", "20-25-45-462", 0.9, 1_300_000, "L0 (Louizos et al. 2018)"),
        ("L0-sep", "9-18-65-25", 1.0, 403_000, "L0 (Louizos et al. 2018)"),
        ("GD", "7-13-208-16", 1.1, 254_000, "SBP's README"),
    ],
}


def macs(model, architecture):
    """Multiply-accumulates per example of a LeNet with the widths of
    `architecture`, counted as keras_rbp's `report` counts them: every
    convolution and Dense layer, the kept input (LeNet-300-100) or Flatten
    (LeNet-5-Caffe) features included."""
    widths = [int(width) for width in architecture.split("-")]
    if model == "lenet_300_100":
        features, hidden1, hidden2 = widths
        return features * hidden1 + hidden1 * hidden2 + hidden2 * 10
    conv1, conv2, features, hidden = widths  # 5x5 convolutions: 24x24 then 8x8 outputs
    return 24 * 24 * 25 * conv1 + 8 * 8 * 25 * conv1 * conv2 + features * hidden + hidden * 10


def published_macs(model, method):
    """A published method's MACs on `model` in keras_rbp's convention."""
    return next(macs(model, arch) for name, arch, _, _, _ in PUBLISHED[model] if name == method)


def draw_published(axis, model, title):
    """Draws `model`'s published points on a matplotlib axis of test error
    against MACs (keras_rbp's count, log scale), and labels the axis."""
    for name, arch, error, _, _ in PUBLISHED[model]:
        axis.scatter([macs(model, arch)], [error], marker="x", color="gray")
        axis.annotate(name, (macs(model, arch), error), fontsize=8)
    axis.set_xscale("log")
    axis.set_xlabel("MACs per example (keras_rbp's count)")
    axis.set_ylabel("test error %")
    axis.set_title(title)
