"""The command line every study script shares: the same flags, the same errors, the same run.

    python studies/<study>.py [--data DIR] [--config YAML] [--set KEY=VALUE ...] [--out DIR]
                              [--tracking-uri URI] [--address ADDR] [--resume] [--no-cache] [--smoke-test] [--verbose]

Input problems print one line, `<study>: error: ...`, and exit 2 before anything starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ..config import load
from ..errors import CytorayError
from .driver import Study, run_study


def stop_on_sigterm() -> None:
    """SIGTERM (a scheduler, `kill`) stops a study like Ctrl-C: its MLflow run is marked KILLED."""
    import signal

    def _stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)


def run_script(
    prog: str,
    study: Study,
    argv: list[str] | None,
    *,
    doc: str,
    smoke: list[str],
    default_out: str,
    report: Callable[[object, dict], None],
    default_config: str | None = None,
    extra_args: Callable[[argparse.ArgumentParser], None] | None = None,
    values_of: Callable[[argparse.Namespace], dict] | None = None,
) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=doc.strip().splitlines()[0])
    ap.add_argument(
        "--data", help="folder dataset <root>/<class>/*.png (default: embedded simulator)"
    )
    ap.add_argument(
        "--config", default=default_config, help="YAML study config (configs/studies/*.yaml)"
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. ratio=1",
    )
    ap.add_argument(
        "--out", default=default_out, help="study folder (splits, caches, Tune state, tables)"
    )
    ap.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow URI (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    ap.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join ('auto' or host:port; default RAY_ADDRESS or local)",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="continue the study in --out (finished trials are kept)",
    )
    ap.add_argument(
        "--no-cache",
        action="store_true",
        help="retrain every stage (to measure what the caches save)",
    )
    ap.add_argument(
        "--smoke-test", action="store_true", help="a minimal end-to-end run on tiny data"
    )
    ap.add_argument(
        "--verbose",
        action="store_true",
        help="Ray's and Tune's own output too (workers, status tables)",
    )
    if extra_args:
        extra_args(ap)
    a = ap.parse_args(argv)
    from ..quiet import configure

    configure(verbose=a.verbose)
    stop_on_sigterm()
    try:
        values = {"data": {"root": a.data}} if a.data else {}
        if values_of:
            from ..config import deep_merge

            values = deep_merge(values, values_of(a))
        cfg = load(study.Config, a.config, (smoke if a.smoke_test else []) + a.set, values)
        res = run_study(
            study,
            cfg,
            Path(a.out),
            tracking_uri=a.tracking_uri,
            address=a.address,
            resume=a.resume,
            use_cache=not a.no_cache,
            smoke=a.smoke_test,
        )
    except CytorayError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"{prog}: interrupted; the MLflow parent run is marked KILLED; continue with --resume",
            file=sys.stderr,
        )
        return 130
    except OSError as e:  # a user's path: read-only --out, a file where a folder goes
        from ..io import FULL_DISK_ERRNOS, os_error_message

        if (
            e.filename is None and e.errno not in FULL_DISK_ERRNOS
        ):  # ENOSPC / EDQUOT / EFBIG: the user's to fix
            raise
        print(f"{prog}: error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a full disk under SQLAlchemy/MLflow or Ray's wrappers: one line too
        from ..io import full_disk_message

        if (msg := full_disk_message(e)) is None:
            raise
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    report(cfg, res)
    if isinstance(res, dict) and res.get(
        "report"
    ):  # built from MLflow at the study's end, also on the parent run
        print(f"Report: {res['report']} (and on the MLflow parent run, artefacts report/)")
    return 0
