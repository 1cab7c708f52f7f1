"""Measuring what `keras_rbp.shrink` removes from one model, for the
benchmarks that shrink many (`applications`, `hub`)."""

import collections
import re
import time
import warnings

import numpy as np
import tensorflow as tf

import keras_rbp as rbp


def random_masks(pruned, keep, seed=0):
    """A mask for every group, keeping each channel with probability `keep`
    (at least one a group)."""
    rng = np.random.RandomState(seed)
    masks = {}
    for group, noise in rbp.pruning_groups(pruned).items():
        mask = rng.rand(noise.channels) < keep
        mask[rng.randint(noise.channels)] = True
        masks[group] = mask
    return masks


def measure_shrink(model, inputs, keep):
    """Prunes `model`, freezes random masks keeping `keep` of each group and
    shrinks it; the groups, the channels masked but kept (with the reasons
    shrink's warnings give), the parameter and MAC ratios, the largest
    output difference from the pruned model on `inputs` (in inference),
    and the seconds prune and shrink took. The MAC ratio is None for a
    model built for any input size."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruned = rbp.prune(model, dataset_size=1000)
    prune_seconds = time.perf_counter() - start
    masks = random_masks(pruned, keep)
    rbp.freeze(pruned, masks, {group: np.ones(len(mask)) for group, mask in masks.items()})
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = rbp.shrink(pruned)
    shrink_seconds = time.perf_counter() - start
    kept = rbp.kept_channels(pruned)
    groups = rbp.pruning_groups(pruned)
    expected = [np.asarray(t) for t in tf.nest.flatten(pruned(inputs, training=False))]
    actual = [np.asarray(t) for t in tf.nest.flatten(small(inputs, training=False))]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            macs_ratio = rbp.report(model, small).totals["macs_reduction"]
    except ValueError:  # a model built for any input size has no MAC count
        macs_ratio = None
    reasons = collections.Counter()
    for warning in caught:
        match = re.match(r"shrink: group .* keeps \d+ channel\(s\) its mask removes: (.*)", str(warning.message))
        if match:
            for reason in match.group(1).split("; "):
                reasons[re.sub(r"'[^']*'", "'...'", reason)] += 1
    return {
        "groups": len(groups),
        "coupled_groups": sum(noise.calls > 1 for noise in groups.values()),
        "channels": int(sum(noise.channels for noise in groups.values())),
        "channels_masked": int(sum((~mask).sum() for mask in masks.values())),
        "channels_masked_but_kept": int(sum(np.isin(kept[g], np.flatnonzero(~masks[g])).sum() for g in groups)),
        "reasons_kept": dict(reasons),
        "params": {"before": model.count_params(), "after": small.count_params()},
        "params_ratio": model.count_params() / small.count_params(),
        "macs_ratio": macs_ratio,
        "max_abs_output_difference": max(float(np.abs(a - e).max()) for a, e in zip(actual, expected)),
        "output_scale": max(float(np.abs(e).max()) for e in expected),
        "prune_seconds": prune_seconds,
        "shrink_seconds": shrink_seconds,
    }
