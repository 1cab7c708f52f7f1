"""What a stage of `RecursivePruning` keeps when it ends: each group's mask,
by threshold on pi or by a budget's share, and how many channels the noise
left undecided."""

import warnings

import numpy as np

from keras_rbp import magnitude


def _undecided(noise, tolerance):
    """Per channel of a noise, whether pi is within (tolerance, 1 - tolerance)."""
    pi = noise.keep_probability()
    return np.minimum(pi, 1.0 - pi) > tolerance


def undecided(noises, tolerance):
    """(undecided, channels): the channels of the Dirac-like `noises` whose
    pi is within (tolerance, 1 - tolerance), and all their channels."""
    flags = [_undecided(noise, tolerance) for noise in noises if noise.collapses]
    return sum(int(flag.sum()) for flag in flags), sum(flag.size for flag in flags)


def collapsed(noise, tolerance):
    """Whether a Dirac-like noise has decided every channel (pi within
    `tolerance` of 0 or 1); the peer methods' noises never collapse, and
    their stages run their length."""
    return noise.collapses and not _undecided(noise, tolerance).any()


def stage_masks(model, groups, names, later, budget, threshold, min_channels, widths):
    """The masks of the stage's groups `names`: with `budget`, those that
    meet its share (`budget.Budget.stage_masks`), ranked by keep logit or
    weight magnitude, with `widths` "posterior" at most what each group's
    posterior keeps (a stage ranked by weight magnitude keeps its share);
    else pi >= `threshold`, at least `min_channels`, with a warning where
    that floor keeps more than the threshold."""
    budget_masks = {}
    if budget is not None:
        ranked = [name for name in names if groups[name].ranks_by_weights]
        scores = {name: groups[name].keep_logit() for name in names}
        scores.update(magnitude.channel_importance(model, ranked) if ranked else {})
        posterior = None  # the posterior's widths, where they set the stage's
        if widths == "posterior" and not ranked:
            posterior = {name: int((groups[name].keep_probability() >= threshold).sum()) for name in names}
        budget_masks = budget.stage_masks(frozen_masks(groups), scores, later, posterior)
    masks = {}
    for name in names:
        pi = groups[name].keep_probability()
        masks[name] = budget_masks.get(name)
        if masks[name] is None:
            masks[name] = keep_mask(pi, threshold, min_channels)
            if masks[name].sum() > (pi >= threshold).sum():
                warnings.warn(
                    f"RecursivePruning: group {name!r} would keep {int((pi >= threshold).sum())} of "
                    f"{pi.size} channels; keeping the {int(masks[name].sum())} with the largest pi "
                    f"(min_channels={min_channels})",
                    stacklevel=3,
                )
    return masks


def keep_mask(pi, threshold, min_channels):
    """Channels with pi >= threshold, and at least the `min_channels` with
    the largest pi."""
    mask = pi >= threshold
    floor = min(min_channels, pi.size)
    if mask.sum() < floor:
        mask = np.zeros(pi.size, bool)
        mask[np.argsort(-pi, kind="stable")[:floor]] = True
    return mask


def frozen_masks(groups):
    """The masks of the frozen groups of `groups` (name to noise)."""
    return {name: noise.mask.numpy() > 0 for name, noise in groups.items() if noise.mode == "frozen"}


def kept_channels(noise, threshold):
    """Channels a group keeps now: its mask when frozen, pi >= threshold when
    active, all of them when off."""
    if noise.mode == "frozen":
        return int(noise.mask.numpy().sum())
    if noise.mode == "active":
        return int((noise.keep_probability() >= threshold).sum())
    return noise.channels
