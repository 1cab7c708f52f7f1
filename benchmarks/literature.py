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

# method.md section 7; FLOPs of RigL's table are 2 x MACs.
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
