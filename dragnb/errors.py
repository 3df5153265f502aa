"""Errors a user can act on: each names the argument at fault and says how to fix it."""


class DragnbError(Exception):
    """Base class of the errors dragnb raises for bad input, missing weights and the like."""


class InputError(DragnbError, ValueError):
    """A user-supplied argument is wrong: ``argument`` names it, the message says how to fix it."""

    def __init__(self, argument: str, message: str):
        self.argument = argument
        super().__init__(f"{argument}: {message}")


class SettingError(InputError):
    """A setting is out of its range or not one of its choices: ``argument`` is ``stage.field``."""

    def __init__(self, field: str, value, allowed: str):
        self.value = value
        super().__init__(field, f"got {value!r}; {allowed}")


class SessionBusy(DragnbError, RuntimeError):
    """A second run was asked of a session while one is going (another thread: the run panel's worker)."""


class Notice(UserWarning):
    """One line on what dragnb took from an input or what a run did that the user should know (an all-zero mask
    read as "the whole image may change", the first frame of an animation, a drag that diverged). Raised with
    :func:`warnings.warn`; the command line prints it as ``note: ...``."""


class ModelError(DragnbError, OSError):
    """Model weights are missing, unreachable or corrupt."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or a requested stop: ``stopped``) ended a stage that the next stages cannot do without; ``partial``
    holds what was done."""

    def __init__(self, stage: str, partial: dict, stopped: bool = False):
        self.stage = stage
        self.partial = partial
        self.stopped = stopped  # True: DragSession.request_stop asked for it (a Stop button), not Ctrl-C
        super().__init__(f"{stage} was interrupted; the results so far are in .partial ({', '.join(partial)})")
