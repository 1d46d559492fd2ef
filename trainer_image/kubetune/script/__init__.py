"""The user's own training script as a trial: the API it calls and what runs it.

``import kubetune; trial = kubetune.trial()`` (:mod:`kubetune.script.api`) is all a
script needs; ``search.command`` makes ``ml-search`` run the script as each trial
(:mod:`kubetune.script.runner`), handing the trial over through the environment
(:mod:`kubetune.script.handover`). Importing this package imports neither torch nor
Optuna.
"""

from __future__ import annotations

from kubetune.script.api import Pruned, ReportError, Trial, trial

__all__ = ["Pruned", "ReportError", "Trial", "trial"]
