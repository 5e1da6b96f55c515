"""`cytoray turing {build,serve,score}`: the subcommands' arguments (machinery imported lazily)."""

from __future__ import annotations


def _build(a) -> int:
    from .build import build_from_args

    return build_from_args(a)


def _serve(a) -> int:
    from .serve import serve_from_args

    return serve_from_args(a)


def _score(a) -> int:
    from .score import score_from_args

    return score_from_args(a)


def add_parser(sub) -> None:
    """Register `turing` and its three subcommands on the top-level subparsers."""
    t = sub.add_parser(
        "turing",
        help="a visual Turing test: blinded real-vs-synthetic reading set, a local page, scores",
    )
    ts = t.add_subparsers(dest="turing_command", required=True)

    s = ts.add_parser(
        "build",
        help="a blinded reading set: half real test-split images, half synthetic, balanced classes",
    )
    s.add_argument(
        "--generator",
        required=True,
        help="NAME@ALIAS or NAME/VERSION in the registry, or a local bundle folder",
    )
    s.add_argument(
        "--data",
        required=True,
        help="the real folder <root>/<class>/*.png the generator was trained on",
    )
    s.add_argument("--n", type=int, default=40, help="images in all (a multiple of 2 x classes)")
    s.add_argument(
        "--out",
        required=True,
        help="the reading set folder (new); its key goes beside it as <out>.key.json",
    )
    s.add_argument(
        "--seed",
        type=int,
        default=0,
        help="picks the real images, the synthetic samples and the order",
    )
    s.add_argument(
        "--split-seed", type=int, default=0, help="data.split_seed the generator was trained with"
    )
    s.add_argument(
        "--unchecked-split",
        action="store_true",
        help="take this split's test images even if the generator's recorded split differs",
    )
    s.add_argument(
        "--run-id",
        default=None,
        help="the generator's MLflow run, recorded in the key (a registered one: found)",
    )
    s.add_argument(
        "--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
    )
    s.set_defaults(func=_build)

    s = ts.add_parser(
        "serve", help="the reading page on 127.0.0.1 (one image at a time; answers saved as given)"
    )
    s.add_argument("dir", help="a reading set folder from `cytoray turing build`")
    s.add_argument(
        "--reader",
        required=True,
        help="the reader's name: their answers go to <dir>/answers/<reader>.json",
    )
    s.add_argument("--port", type=int, default=8765, help="0: any free port")
    s.set_defaults(func=_serve)

    s = ts.add_parser(
        "score",
        help="accuracy with exact 95%% CIs and p vs chance, sens./spec., class accuracy, kappa",
    )
    s.add_argument("dir", help="a reading set folder with answers/")
    s.add_argument(
        "--key", default=None, help="the key (default: <dir>.key.json beside the folder)"
    )
    s.add_argument(
        "--log",
        nargs="?",
        const="",
        default=None,
        metavar="RUN_ID",
        help="log metrics and an HTML page to this MLflow run (no value: the generator's run in the key)",
    )
    s.add_argument("--html", default=None, help="also write the scores page here")
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
    )
    s.set_defaults(func=_score)
