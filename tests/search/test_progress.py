"""ml-search's live progress line: counts, best so far, elapsed and ETA, from the storage."""

from __future__ import annotations

import io
import time

import optuna

from kubetune.search.progress import CLEAR, Counts, LiveProgress, duration, eta, render


def test_the_line_reads_like_a_budget():
    counts = Counts(finished=12, target=30, running=2, pruned=5, failed=1, best="val_acc=0.9611 (trial 7)")
    line = render(counts, finished_at_start=2, elapsed=130)
    assert line == ("12/30 trials · 2 running · 5 pruned · 1 failed · best val_acc=0.9611 (trial 7) · "
                    "2m10s · ETA 3m54s")  # 10 trials in 130 s, 18 left
    assert eta(Counts(0, 30, 1, 0, 0, None), 0, 50) == "ETA –"
    assert eta(Counts(30, 30, 0, 0, 0, None), 0, 50) == "ETA 0s"
    assert [duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]


def test_trials_of_any_worker_appear_once_above_the_line(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    study.tell(study.ask(), 0.5)  # an earlier session's trial: not news
    stream = io.StringIO()
    progress = LiveProgress(lambda: optuna.load_study(study_name="s", storage=url), 4, "val_acc",
                            lambda s, t: f"trial {t.number} {t.state.name}", stream, poll=0.05, redraw=0.05)
    with progress:
        time.sleep(0.3)
        study.tell(study.ask(), 0.9)
        study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)
        running = study.ask()
        time.sleep(0.3)
    out = stream.getvalue()
    assert "trial 0 " not in out
    assert out.count(CLEAR + "trial 1 COMPLETE\n") == 1 and out.count(CLEAR + "trial 2 PRUNED\n") == 1
    last = out.rsplit(CLEAR, 1)[1]
    assert last.startswith("3/4 trials · 1 running · 1 pruned · 0 failed · best val_acc=0.9000 (trial 1) · ")
    assert last.endswith("\n")
    study.tell(running, 0.1)
