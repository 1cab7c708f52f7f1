"""`ArgumentError`: an argument of `prune_and_export` (or of the
`keras-rbp` command) that cannot work, found before anything is trained
or written."""


class ArgumentError(ValueError):
    """An argument of `prune_and_export` that cannot work, before anything
    is trained or written: `arg` names it, `reason` says why."""

    def __init__(self, arg, value, reason):
        self.arg, self.value, self.reason = arg, value, reason
        super().__init__(f"prune_and_export: {arg}={_short(value)}: {reason}")


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
