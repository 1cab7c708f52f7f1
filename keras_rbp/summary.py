"""What `prune_and_export` writes for people: report.txt and pruning.png,
both from the contents of report.json."""

import os


def text_report(summary, table):
    """report.txt: the per-layer table (`table`, the text of a `Report`), the
    budget, the errors before and after on the validation data, the files
    with their checks, and the LiteRT speed-up."""
    pruning = summary.get("pruning", {})
    result = summary["report"]
    totals = result["totals"]
    lines = [
        "keras_rbp: pruning report",
        "",
        f"architecture: {result['architecture_before']} -> {result['architecture_after']}",
        f"MACs: {totals['macs_before']:,} -> {totals['macs_after']:,} ({totals['macs_reduction']:.2f}x fewer)",
        f"parameters: {totals['params_before']:,} -> {totals['params_after']:,} "
        f"({totals['params_reduction']:.2f}x fewer)",
    ]
    target = pruning.get("target")
    if target:
        line = f"budget: target_{target['metric']}={target['given']:g}"
        if target["given"] != target["target"]:
            line += f" ({target['target']:,.0f})"
        if "reached" in target:
            line += f", reached {target['reached']:,} ({100 * target['reached_over_target']:.1f} % of the target)"
        lines.append(line)
    if pruning.get("before") is not None:
        lines.append(
            f"validation {_measure(pruning)} ({pruning['validation_examples']:,} examples): "
            f"{_value(pruning, pruning['before'])} unpruned -> {_value(pruning, pruning['after'])} after shrink"
        )
    if "speedup" in summary:
        lines.append(
            f"LiteRT speed-up: {summary['speedup']['single_thread']:.2f}x single-thread "
            f"({summary['original_latency_ms']['single_thread']:.4f} ms -> "
            f"{summary['files']['model.tflite']['latency_ms']['single_thread']:.4f} ms an example), "
            f"{summary['speedup']['multi_thread']:.2f}x multi-thread"
        )
    lines += ["", table, ""]
    if "files" in summary:
        lines.append("files (each checked against the Keras model):")
        for name, entry in summary["files"].items():
            check = entry["check"]
            line = (f"  {name}: {entry['size_bytes']:,} bytes, {check['metric']} {check['value']:.3g} "
                    f"(limit {check['limit']:.3g}, {check['samples']} inputs)")
            if "latency_ms" in entry:
                line += f", {entry['latency_ms']['single_thread']:.4f} ms single-thread"
            lines.append(line)
    if pruning.get("stages"):
        lines.append("")
        lines.append("plan (step: stage, validation " + _measure(pruning) + " at its start):")
        values = dict((step, value) for step, value in pruning.get("curve", []))
        for step, label in pruning["stages"]:
            value = values.get(step)
            lines.append(f"  {step}: {label}" + (f", {_value(pruning, value)}" if value is not None else ""))
    return "\n".join(lines).rstrip()


def _measure(pruning):
    return "error" if pruning.get("measure") == "error" else "loss"


def _value(pruning, value):
    return f"{100 * value:.2f} %" if pruning.get("measure") == "error" else f"{value:.4g}"


def plot(summary, path):
    """pruning.png: each layer's channels before and after `shrink`, and the
    validation error (or loss) over the plan, each stage's start marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    pruning = summary.get("pruning", {})
    rows = [row for row in summary["report"]["layers"] if row["channels_before"] is not None]
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(12, 4.5))
    positions = range(len(rows))
    left.bar([p - 0.2 for p in positions], [row["channels_before"] for row in rows], 0.4, label="before")
    left.bar([p + 0.2 for p in positions], [row["channels_after"] for row in rows], 0.4, label="after")
    left.set_xticks(list(positions))
    left.set_xticklabels([row["layer"] for row in rows], rotation=45, ha="right")
    left.set_ylabel("output channels")
    left.set_yscale("log")
    result = summary["report"]
    left.set_title(f"{result['architecture_before']} -> {result['architecture_after']}")
    left.legend()

    steps = pruning.get("steps_per_epoch") or 1
    curve = pruning.get("curve") or []
    scale = 100.0 if pruning.get("measure") == "error" else 1.0
    if curve:
        right.plot([step / steps for step, _ in curve], [scale * value for _, value in curve], marker="o")
    if pruning.get("before") is not None:
        right.axhline(scale * pruning["before"], color="gray", linestyle=":", label="unpruned")
        right.legend()
    for step, label in pruning.get("stages", []):
        right.axvline(step / steps, color="gray", linestyle="--", linewidth=0.8)
        right.annotate(label, (step / steps, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                       va="top", ha="right", fontsize=8)
    right.set_xlabel("epoch of the pruning plan")
    unit = "error %" if pruning.get("measure") == "error" else "loss"
    right.set_ylabel(f"validation {unit}")
    right.set_title("validation over the plan (dashed: a stage starts)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return os.path.abspath(path)
