"""The one error hierarchy of churn-mlops, and the exit code each kind of failure means.

Why one root: `ml_jobs` must tell an expected failure (bad input, a missing file, an unknown
config key, a lock another Job holds: one line that names the file, key or rule, exit 1) from
a bug (any other exception: its traceback, exit 70), and so must every other caller. Modules
raise these classes (or subclasses of their own); nothing catches a bare ValueError to mean
"the user's fault".
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1      # an expected failure (ChurnError): the message says what and where
EXIT_DRIFT = 2      # drift-check found drift (a result, not an error); argparse also uses 2
EXIT_BUG = 70       # an unexpected exception (sysexits EX_SOFTWARE): the traceback is printed


class ChurnError(Exception):
    """An expected failure; the message names the file, key or rule. `exit_code` for CLIs."""

    exit_code = EXIT_ERROR


class ConfigError(ChurnError, ValueError):
    """A configuration problem; the message starts with the dotted key (or the file path)."""


class UsageError(ChurnError):
    """A command was called with options that contradict each other or the data."""


class DataError(ChurnError):
    """A data file is missing, unreadable or malformed, or holds too little data for a step."""


class RegistryError(ChurnError):
    """A model version or alias is missing, corrupt, or a promotion was refused by the rules."""


class LockTimeout(ChurnError, TimeoutError):
    """A file lock was not acquired in time; the message names the lock file and the wait."""


class ShardsIncomplete(ChurnError, TimeoutError):
    """Pods of an Indexed Job waited too long for the other shards; the message names them."""


class StaleInput(DataError):
    """An input was built from another state than the current one (a training set from older
    tables, a holdout that is not the one its model was registered with); the message names
    the file, what it was built from, what is current and the command that rebuilds it."""


class ChangedSincePublished(DataError):
    """A file of a published generation whose bytes are not the ones its MANIFEST records (a
    day file, a report or a snapshot rewritten in place after the publish, or while a reader
    read it); the message names the file and both digests. Nothing was derived from it."""

    exit_code = EXIT_ERROR
