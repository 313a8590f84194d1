"""Run by tests/test_kill_resume.py: the real ``headstart train`` CLI that SIGKILLs itself at a
chosen point, so the kill lands at the same place every time.

    python tests/kill_script.py <point> <headstart train arguments...>

Points (the process kills itself with SIGKILL, exactly as ``kill -9`` from outside would):

* ``epoch``: epoch 1, after its 2nd training batch (epoch 0's checkpoints are on disk).
* ``checkpoint``: while writing epoch 1's ``last.ckpt``: the temp file beside it holds only half
  of the bytes (a torn write) and has not been renamed yet.
* ``features``: during cached-feature extraction of the validation images (the training
  features are already in the disk cache; no checkpoint exists yet).
* ``interrupt``: epoch 1, after its 2nd training batch, creates ``<run>.waiting`` and waits
  there for the test to send SIGINT (Ctrl-C) from outside; the process is not killed.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    if point == "epoch":
        from headstart.training.module import HeadstartModule

        def on_train_batch_end(self: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if self.current_epoch == 1 and batch_idx == 1:
                _die()

        HeadstartModule.on_train_batch_end = on_train_batch_end  # type: ignore[method-assign]
    elif point == "interrupt":
        import time
        from pathlib import Path

        from headstart.training.module import HeadstartModule

        marker = Path(next(a[len("--out=") :] for a in sys.argv if a.startswith("--out=")))

        def wait_for_sigint(self: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if self.current_epoch == 1 and batch_idx == 1:
                marker.with_suffix(".waiting").touch()
                time.sleep(300)  # the SIGINT's handler raises in here

        HeadstartModule.on_train_batch_end = wait_for_sigint  # type: ignore[method-assign]
    elif point == "checkpoint":
        real_fsync = os.fsync
        seen = {"n": 0}

        def fsync(fd: int) -> None:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
            if name.startswith(".last.ckpt.") and name.endswith(".tmp"):
                seen["n"] += 1
                if seen["n"] == 2:  # epoch 1's last.ckpt
                    os.ftruncate(fd, os.fstat(fd).st_size // 2)
                    _die()
            real_fsync(fd)

        os.fsync = fsync
    elif point == "features":
        import headstart.training.features as features

        real_extract = features.extract_features

        class KillAt:
            def __init__(self, dataset: Any, index: int) -> None:
                self.dataset, self.index = dataset, index

            def __len__(self) -> int:
                return len(self.dataset)

            def __getitem__(self, i: int) -> Any:
                if i == self.index:
                    _die()
                return self.dataset[i]

        def extract(backbone: Any, dataset: Any, **kw: Any) -> Any:
            if kw.get("description") == "val features":
                dataset = KillAt(dataset, len(dataset) // 2)
            return real_extract(backbone, dataset, **kw)

        features.extract_features = extract  # type: ignore[assignment]
    else:
        raise SystemExit(f"unknown kill point {point!r}")


if __name__ == "__main__":
    arm(sys.argv[1])
    sys.argv = ["headstart", "train", *sys.argv[2:]]
    from headstart.cli import main

    main()
