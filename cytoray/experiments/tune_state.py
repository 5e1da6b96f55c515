"""What `--resume` lets Ray Tune unpickle: only state this user's cytoray wrote.

`Tuner.restore` unpickles `<out>/tune/<name>/tuner.pkl` (and the experiment and searcher state
beside it). On a cluster `--out` is shared storage: anyone who can write there could plant a
pickle that runs as the next person who resumes. So, before anything is restored:

- `tuner.pkl` must hash to what this cytoray recorded when Tune wrote it (`<name>.cytoray.json`
  beside the experiment folder, written right after the Tuner is built or restored);
- the experiment folder, its parent and every file at its top level (what Tune unpickles:
  experiment, searcher and callback state) must belong to the current user and be writable by
  no one else (a colleague's file, or a folder they may write into, is refused).

Anything else is a one-line error, with nothing loaded and nothing written.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import CytorayError
from ..io import sha256_file, write_json

TUNER_PKL = "tuner.pkl"


def record_path(exp_dir: Path) -> Path:
    return exp_dir.with_name(f"{exp_dir.name}.cytoray.json")


def record_tune_state(exp_dir: Path) -> None:
    """After Tune wrote tuner.pkl (Tuner() and Tuner.restore() both do): remember its hash."""
    pkl = exp_dir / TUNER_PKL
    if pkl.is_file():
        write_json(record_path(exp_dir), {TUNER_PKL: sha256_file(pkl)})


def verify_tune_state(exp_dir: Path) -> None:
    """Refuse to restore Tune state that this user's cytoray did not write (see the module doc)."""
    import json

    pkl = exp_dir / TUNER_PKL
    if not pkl.exists():
        return  # nothing to restore: the study starts afresh
    fix = f"remove {exp_dir} to start the search afresh (or resume from a copy you made)"
    try:
        want = json.loads(record_path(exp_dir).read_text()).get(TUNER_PKL)
    except (OSError, ValueError, AttributeError):
        want = None
    if want is None:
        raise CytorayError(
            f"{pkl}: no record that cytoray wrote it ({record_path(exp_dir).name} "
            f"missing or unreadable); refusing to unpickle it; {fix}"
        )
    uid = os.getuid()
    # The experiment-level files are what Tune unpickles (experiment state, searcher and callback
    # state); trial folders may be written by Ray workers running as another user on a cluster.
    top = sorted(p for p in exp_dir.iterdir() if p.is_file() or p.is_symlink())
    for p in [exp_dir.parent, record_path(exp_dir), exp_dir, *top]:
        st = p.lstat()
        if (
            st.st_uid != uid
            or st.st_mode & stat.S_IWOTH
            or (p.is_symlink() and not p.resolve().is_relative_to(exp_dir))
        ):
            raise CytorayError(
                f"{p}: owned by uid {st.st_uid} or writable by others (mode "
                f"{stat.filemode(st.st_mode)}): Tune would load it on --resume; refusing; {fix}"
            )
    if sha256_file(pkl) != want:
        raise CytorayError(
            f"{pkl}: changed since cytoray wrote it (sha256 differs from "
            f"{record_path(exp_dir).name}); refusing to unpickle it; {fix}"
        )


# ----------------------------------------------------------------------------- per-split results of a trial


class SplitResults:
    """A split-averaged trial's finished splits (`tune.splits` > 1), kept as JSON (never a pickle)
    in `<out>/trial_splits/<trial id>.json`, so a trial that Tune restarts (after `--resume`, or a
    retry after a failure) keeps the splits it scored and scores only the rest.

    A split's entry is written only once its result is whole, and it is reused only for the same
    trial configuration (`config_key`) and the same split manifest (`split_key`): a changed
    config or data scores afresh. Entries are indexed by split number, so a split is never
    counted twice; a trial's result counts as whole (`final: 1`) only when every split is in.
    """

    def __init__(self, path: Path, config_key: str) -> None:
        import json

        self.path, self.config_key = Path(path), config_key
        try:
            d = json.loads(self.path.read_text())
        except (OSError, ValueError):
            d = {}
        ok = (
            isinstance(d, dict)
            and d.get("config") == config_key
            and isinstance(d.get("splits"), dict)
        )
        self.splits: dict[str, dict] = d["splits"] if ok else {}

    def get(self, index: int, split_key: str) -> dict | None:
        e = self.splits.get(str(index))
        return (
            dict(e["result"])
            if isinstance(e, dict)
            and e.get("key") == split_key
            and isinstance(e.get("result"), dict)
            else None
        )

    def put(self, index: int, split_key: str, result: dict) -> None:
        """Record split `index` (atomically: a kill mid-write leaves the previous file)."""
        self.splits[str(index)] = {"key": split_key, "result": result}
        write_json(self.path, {"config": self.config_key, "splits": self.splits})
