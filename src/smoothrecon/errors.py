"""The one exception type a user can cause.

Anything a user can get wrong (a path, an image, a config value) raises `UserError` with one
sentence naming the bad value and what was expected. The CLI prints it as one line and exits
non-zero; internal invariants use assertions instead.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one clear line (no traceback)."""


class TrainingDiverged(UserError):
    """The training loss became NaN or Inf; the last good checkpoint is kept."""
