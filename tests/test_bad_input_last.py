"""The bad-input table (issue 21), last rows: generator bundles each kind's loader reads, a
decompression bomb given to `classify`, the wording of a dead tracking server outside a study,
and a full disk (a real tmpfs in a user namespace where the kernel allows one). Each row: exit 2,
one line naming the file or key and what to do, no traceback, nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input import _one_line, _study  # noqa: E402
from test_bad_input_hangs import closed_port  # noqa: E402,F401 (the fixture)
from test_bad_input_more import LIMIT_TEXT, _bomb_png, _row, ds, tree  # noqa: E402,F401 (ds: the fixture)

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- 1. generator bundles

# Every registered generator kind with a generator.json that names it and nothing else its
# loader reads: the key each loader reads first is named (KeyError was a traceback).
FIRST_KEY = {
    "syncgan": "cgan",
    "gan": "gans",
    "cyclegan": "translators",
    "nst": "images",
    "refined-sim": "segmenter_kwargs",
    "diffusion": "denoiser",
}


def test_every_generator_kind_is_in_the_table():
    from cytoray.generators import generator_names, get_generator

    # Kinds the package ships (test modules and the template register toy kinds: not bundles users hold).
    from cytoray.generators.base import discovered_module

    shipped = [n for n in generator_names() if discovered_module(get_generator(n).__module__)]
    assert sorted(shipped) == sorted(FIRST_KEY)


def _bundle(root: Path, meta: dict, weights: dict[str, dict] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, sd in (weights or {}).items():
        torch.save(sd, root / f"{name}.pt")
    (root / "generator.json").write_text(json.dumps(meta))
    return root


def _generate(b: Path, tmp_path: Path) -> list[str]:
    return [
        "generate",
        "--checkpoint",
        str(b),
        "--n",
        "2",
        "--cls",
        "benign",
        "--out",
        str(tmp_path / "g"),
    ]


@pytest.mark.parametrize("kind", sorted(FIRST_KEY))
def test_generator_json_missing_the_keys_of_its_kind(kind, tmp_path, capsys):
    b = _bundle(tmp_path / "b", {"generator": kind, "classes": ["benign", "malignant"]})
    _row(
        _generate(b, tmp_path),
        f"{b / 'generator.json'}: not a complete '{kind}' bundle (no key '{FIRST_KEY[kind]}'); re-copy",
        capsys,
        tmp_path,
    )


@pytest.mark.parametrize(
    "meta,fragment",
    [
        (
            {"generator": "gan", "classes": ["benign"], "gans": [1, 2]},
            "(AttributeError: 'list' object has no attribute 'items')",
        ),
        ({"generator": "syncgan", "classes": ["benign"], "cgan": {}}, "(no key 'kwargs')"),
        (
            {"generator": "gan", "classes": 5, "gans": {}},
            "(TypeError: 'int' object is not iterable)",
        ),
    ],
)
def test_generator_json_with_keys_of_the_wrong_shape(meta, fragment, tmp_path, capsys):
    b = _bundle(tmp_path / "b", meta)
    _row(
        _generate(b, tmp_path),
        f"{b / 'generator.json'}: not a complete '{meta['generator']}' bundle {fragment}",
        capsys,
        tmp_path,
    )


def _tiny_unet():
    from cytoray.nets import UNet

    kw = dict(in_ch=3, out_ch=1, base=4, depth=2, norm="batch", dropout=0.0, out_act="none")
    return kw, UNet(**kw).state_dict()


def _truncate(f: Path) -> Path:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return f


def _truncated_bundle(kind: str, root: Path) -> tuple[Path, Path]:
    """A bundle of `kind` whose generator.json is right and one real weights or arrays file is cut in half."""
    from cytoray.nets.unet import VanillaGenerator

    if kind == "gan":
        kw = dict(z_dim=8, out_size=16, base=4, max_ch=8)
        b = _bundle(
            root,
            {"generator": "gan", "classes": ["benign"], "gans": {"benign": {"kwargs": kw}}},
            {"gan_benign": VanillaGenerator(**kw).state_dict()},
        )
        return b, _truncate(b / "gan_benign.pt")
    if kind == "syncgan":
        kw, sd = _tiny_unet()
        b = _bundle(
            root,
            {
                "generator": "syncgan",
                "classes": ["benign"],
                "cgan": {"kwargs": kw},
                "mask_gans": {},
            },
            {"cgan": sd},
        )
        return b, _truncate(b / "cgan.pt")
    if kind == "refined-sim":
        kw, sd = _tiny_unet()
        b = _bundle(
            root,
            {
                "generator": "refined-sim",
                "classes": ["benign"],
                "segmenter_kwargs": kw,
                "refined": False,
                "references": "references.npz",
                "class_index": {"benign": 0},
            },
            {"segmenter": sd},
        )
        return b, _truncate(b / "segmenter.pt")
    import numpy as np

    b = _bundle(
        root, {"generator": "nst", "classes": ["benign"], "images": "images.npz", "nst": {}}
    )
    np.savez_compressed(
        b / "images.npz",
        content_benign=np.zeros((4, 16, 16, 3), np.uint8),
        style_benign=np.ones((4, 16, 16, 3), np.uint8),
    )
    return b, _truncate(b / "images.npz")


@pytest.mark.parametrize("kind", ["gan", "syncgan", "refined-sim", "nst"])
def test_a_truncated_file_inside_a_generator_bundle_is_named(kind, tmp_path, capsys):
    b, cut = _truncated_bundle(kind, tmp_path / "b")
    what = "not loadable arrays" if cut.suffix == ".npz" else "not loadable weights"
    err = _row(_generate(b, tmp_path), f"{cut}: {what} (", capsys, tmp_path)
    assert "re-copy the bundle or retrain" in err


def test_a_weights_file_missing_from_a_bundle_is_named(tmp_path, capsys):
    b, cut = _truncated_bundle("syncgan", tmp_path / "b")
    cut.unlink()
    _row(
        _generate(b, tmp_path),
        f"{cut}: missing from the bundle; re-copy the bundle or retrain",
        capsys,
        tmp_path,
    )


@pytest.mark.parametrize("damage", ["truncated", "json"])
def test_segment_with_a_damaged_segmenter_bundle(damage, ds, tmp_path, capsys):
    from test_bad_input_more import _untrained_segmenter

    seg = _untrained_segmenter(tmp_path / "seg")
    if damage == "truncated":
        frag = f"{_truncate(seg / 'segmenter.pt')}: not loadable weights ("
    else:
        (seg / "segmenter.json").write_text('{"threshold": 0.5}')
        frag = f"{seg / 'segmenter.json'}: segmenter bundle file lacks segmenter_kwargs"
    _row(["segment", str(seg), str(ds), "--out", str(tmp_path / "masks")], frag, capsys, tmp_path)


def test_segment_with_a_truncated_refined_sim_bundle(ds, tmp_path, capsys):
    b, cut = _truncated_bundle("refined-sim", tmp_path / "b")
    _row(
        ["segment", str(b), str(ds), "--out", str(tmp_path / "masks")],
        f"{cut}: not loadable weights (",
        capsys,
        tmp_path,
    )


# ----------------------------------------------------------------------------- 2. classify on a decompression bomb


def test_classify_on_a_decompression_bomb_names_it_before_pulling(ds, tmp_path, capsys):
    bomb = _bomb_png(ds / "benign" / "zz.png")
    assert bomb.stat().st_size < 100
    err = _row(
        [
            "classify",
            "clf@champion",
            str(ds / "benign"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
        ],
        f"{bomb}: {LIMIT_TEXT}",
        capsys,
        tmp_path,
    )
    assert "CYTORAY_MAX_IMAGE_PIXELS" in err  # the setting that raises the limit


# ----------------------------------------------------------------------------- 3. --resume only where it exists


def test_train_with_a_dead_tracking_server_is_not_told_to_resume(closed_port, ds, tmp_path, capsys):
    uri = f"http://127.0.0.1:{closed_port}"
    err = _row(
        ["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--tracking-uri", uri],
        f"cannot reach the MLflow tracking server at {uri}",
        capsys,
        tmp_path,
    )
    assert "--resume" not in err and "starting the training run" in err


@pytest.mark.parametrize("cmd", ["pull", "classify"])
def test_pull_and_classify_with_a_dead_tracking_server_are_not_told_to_resume(
    cmd, closed_port, ds, tmp_path, capsys
):
    uri = f"http://127.0.0.1:{closed_port}"
    argv = {
        "pull": ["pull", "gen@champion", "--n", "1", "--out", str(tmp_path / "p")],
        "classify": ["classify", "clf@champion", str(ds / "benign")],
    }[cmd]
    err = _row(
        [*argv, "--tracking-uri", uri],
        f"cannot reach the MLflow tracking server at {uri}",
        capsys,
        tmp_path,
    )
    assert "--resume" not in err


def test_a_server_lost_mid_command_names_resume_for_studies_only():
    """The wording once the probe has passed (the server died between calls): `pull`'s download,
    `train`'s run; a study's client (RetryingClient) is the one caller with a --resume."""
    from cytoray.tracking.mlflow_utils import tracking_error

    e = ConnectionError("Max retries exceeded: Connection refused")
    assert "--resume" not in str(tracking_error(e, "http://127.0.0.1:9", "pulling x@champion"))
    assert "then rerun with --resume" in str(
        tracking_error(e, "http://127.0.0.1:9", "calling log_metric", resume=True)
    )


# ----------------------------------------------------------------------------- 4. a full disk

# A real full disk without root: a tmpfs of a few KiB mounted in a user and mount namespace of its
# own (`unshare -rm`), seen only by the command run inside it. The kernel may forbid unprivileged
# user namespaces (a sysctl, or AppArmor on Ubuntu 24.04): those rows are then skipped, saying so,
# and the RLIMIT_FSIZE row below (EFBIG at a per-process file-size limit, no namespace) still runs.
_MOUNT = (
    'mount -t tmpfs -o size="$1" tmpfs "$2" || exit 97; d="$2"; r="$3"; shift 3; "$@" >"$r/out" 2>"$r/err"; '
    'echo $? >"$r/rc"; find "$d" -mindepth 1 -printf "%P\\n" | sort >"$r/ls"'
)


@pytest.fixture(scope="module")
def tmpfs_ok(tmp_path_factory) -> None:
    import shutil
    import subprocess

    d = tmp_path_factory.mktemp("probe")
    ok = (
        shutil.which("unshare")
        and subprocess.run(
            ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=8k tmpfs {d}"],
            capture_output=True,
        ).returncode
        == 0
    )
    if not ok:
        pytest.skip(
            "no unprivileged user namespaces here: a tmpfs needs root (the RLIMIT_FSIZE row covers the write error)"
        )


def _on_full_disk(
    tmp_path: Path, cmd: list[str], size: str = "48k", limit: float = 120
) -> tuple[int, str, list[str], Path]:
    """`python CMD` with {disk} (a new tmpfs of `size`) in its arguments: (exit code, stderr, files left on the disk, disk)."""
    import os
    import subprocess

    disk, res = tmp_path / "disk", tmp_path / "res"
    disk.mkdir()
    res.mkdir()
    args = [a.format(disk=disk, tmp=tmp_path) for a in cmd]
    r = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            _MOUNT,
            "sh",
            size,
            str(disk),
            str(res),
            sys.executable,
            *args,
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=limit,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, (
        r.stderr
    )  # the mount and the shell (the command's own code is in res/rc)
    return (
        int((res / "rc").read_text()),
        (res / "err").read_text(),
        (res / "ls").read_text().split(),
        disk,
    )


def _only_line(err: str) -> str:
    lines = [
        x for x in err.strip().splitlines() if x.strip() and not x.startswith("[")
    ]  # [data]/[masks] progress lines
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("cytoray: error: "), (
        err
    )
    return lines[0]


@pytest.mark.usefixtures("tmpfs_ok")
def test_simulate_on_a_full_disk(tmp_path):
    code, err, left, disk = _on_full_disk(
        tmp_path,
        ["-m", "cytoray.cli", "simulate", "--out", "{disk}/s", "--n", "20", "--size", "64"],
    )
    line = _only_line(err)
    assert code == 2 and ": no space left on the device" in line and f"{disk}/s/" in line, (
        err
    )  # the image that did not fit
    assert left == []  # the dataset folder is complete or absent: absent


@pytest.mark.usefixtures("tmpfs_ok")
def test_masks_on_a_full_disk_leave_no_half_set(ds, tmp_path):
    code, err, left, disk = _on_full_disk(
        tmp_path, ["-m", "cytoray.cli", "masks", "--data", str(ds), "--out", "{disk}/m"], "16k"
    )
    line = _only_line(err)
    assert code == 2 and f"{disk}/m/" in line and "no space left on the device" in line, err
    assert left and all(p == "m" or p.startswith("m/.cache") for p in left), (
        left
    )  # no mask, no summary: only whole cache entries


@pytest.mark.usefixtures("tmpfs_ok")
def test_train_with_its_sqlite_store_on_a_full_disk_is_refused_before_the_split(ds, tmp_path):
    code, err, left, disk = _on_full_disk(
        tmp_path,
        [
            "-m",
            "cytoray.cli",
            "train",
            "gan",
            "--data",
            str(ds),
            "--out",
            "{tmp}/o",
            "--tracking-uri",
            "sqlite:///{disk}/m.db",
        ],
    )
    line = _only_line(err)
    assert (
        code == 2
        and f"{disk}/m.db: " in line
        and "KiB free on its disk" in line
        and "--tracking-uri on another disk" in line
    ), err
    assert left == [] and not (tmp_path / "o").exists()


@pytest.mark.usefixtures("tmpfs_ok")
def test_a_study_with_its_sqlite_store_on_a_full_disk_is_refused_before_anything(tmp_path):
    code, err, left, disk = _on_full_disk(
        tmp_path,
        [
            str(ROOT / "studies" / "syncgan_ratio.py"),
            "--smoke-test",
            "--out",
            "{tmp}/out",
            "--tracking-uri",
            "sqlite:///{disk}/m.db",
        ],
    )
    assert (
        code == 2
        and "Traceback" not in err
        and f"{disk}/m.db: " in err
        and "KiB free on its disk" in err
    ), err
    _one_line(err)
    assert left == [] and not (tmp_path / "out").exists()


@pytest.mark.usefixtures("tmpfs_ok")
def test_the_sqlite_store_filling_up_is_one_line_and_leaves_no_broken_database(tmp_path):
    """Past the free-space check (the disk fills while MLflow creates its tables): SQLAlchemy's
    'database or disk is full' becomes one line naming the database, and the cut-off file goes."""
    code = (
        "from cytoray.tracking.mlflow_utils import setup\nfrom cytoray.errors import CytorayError\n"
        "try:\n    setup('x', 'sqlite:///{disk}/m.db')\n"
        "except CytorayError as e:\n    print('cytoray: error:', e, file=__import__('sys').stderr)\n"
        "    raise SystemExit(2)\n"
    )
    rc, err, left, disk = _on_full_disk(tmp_path, ["-c", code])
    line = _only_line("\n".join(x for x in err.splitlines() if "INFO mlflow" not in x))
    assert rc == 2 and f"{disk}/m.db: the MLflow store's disk is full" in line, err
    assert left == []


def test_a_file_size_limit_is_one_line_and_nothing_half_written(tmp_path):
    """EFBIG (RLIMIT_FSIZE, `ulimit -f`): the write error a full disk gives in every environment."""
    import os
    import resource
    import subprocess

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cytoray.cli",
            "simulate",
            "--out",
            str(tmp_path / "s"),
            "--n",
            "4",
            "--size",
            "64",
        ],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    line = _only_line(r.stderr)
    assert (
        r.returncode == 2
        and f"{tmp_path / 's'}/" in line
        and "file too large" in line
        and "ulimit -f" in line
    ), r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.usefixtures("tmpfs_ok", "single_ray_instance")
def test_train_whose_ray_workers_fill_the_disk(ds, tmp_path):
    """--out on a 64 KiB tmpfs: the split fits, a worker's checkpoint upload (pyarrow, inside Ray
    Train) does not. One line naming Ray's storage folder, no worker traceback, no bundle, run FAILED."""
    from mlflow import MlflowClient

    argv = [
        "-m",
        "cytoray.cli",
        "train",
        "gan",
        "--data",
        str(ds),
        "--size",
        "32",
        "--epochs",
        "1",
        "--out",
        "{disk}/o",
        "--tracking-uri",
        "sqlite:///{tmp}/m.db",
        "--set",
        "gan.g_base=8",
        "--set",
        "gan.d_base=8",
        "--set",
        "gan.z_dim=16",
        "--set",
        "run.max_failures=0",
    ]
    code, err, left, disk = _on_full_disk(tmp_path, argv, "64k", limit=300)
    assert (
        code == 2 and f"cytoray: error: {disk}/o/stages/ray: no space left on the device" in err
    ), err
    assert (
        "Traceback" not in err and len([x for x in err.splitlines() if "error" in x.lower()]) == 1
    ), err
    assert "o/generator.json" not in left and not any(p.endswith("done.json") for p in left), left
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    (run,) = client.search_runs([client.get_experiment_by_name("cytoray-train").experiment_id])
    assert run.info.status == "FAILED"


# ----------------------------------------------------------------------------- 5. a joined cluster that cannot place the job

_HEAD = (
    "import sys\nimport ray\nfrom cytoray.training.runner import init_ray\n"
    "init_ray(num_cpus=1)\nprint(ray.get_runtime_context().gcs_address, flush=True)\nsys.stdin.read()\n"
)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A running Ray head of 1 CPU and no GPU on 127.0.0.1 (cytoray's loopback-only local cluster, with
    Ray's token authentication), in a process of its own that this fixture ends by closing its stdin
    (its ray.shutdown stops the head; `ray stop` would stop every Ray on the machine)."""
    import os
    import subprocess

    p = subprocess.Popen(
        [sys.executable, "-c", _HEAD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path_factory.mktemp("head"),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        address = p.stdout.readline().strip()
        assert address.startswith("127.0.0.1:"), address
        yield address
    finally:
        p.stdin.close()
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def _train_joined(address: str, ds: Path, tmp_path: Path, argv: list[str], auth: str = "token"):
    """`cytoray train` as a driver of the cluster at `address` (RAY_AUTH_MODE is read when Ray is imported: a process of its own)."""
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": address, "RAY_AUTH_MODE": auth}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cytoray.cli",
            "train",
            "gan",
            "--data",
            str(ds),
            "--out",
            str(tmp_path / "o"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
            *argv,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (
            ["--workers", "1000"],
            "run.num_workers=1000 x run.cpus_per_worker=1 = 1000 CPUs, and the Ray cluster at {address} has 1; "
            "use --workers 1 or fewer",
        ),
        (
            ["--gpu"],
            "--gpu: 1 worker(s) x 1 GPU need 1 GPUs, and the Ray cluster at {address} has 0; leave out --gpu",
        ),
    ],
)
def test_train_on_a_joined_cluster_that_cannot_place_it(argv, fragment, ray_head, ds, tmp_path):
    """Joined on loopback (Ray turned 127.0.0.1 into the machine's address, where a loopback-only head
    does not listen: minutes of silence), asked for its CPUs and GPUs, refused before the split."""
    import time

    before = tree(tmp_path)
    t0 = time.monotonic()
    r = _train_joined(ray_head, ds, tmp_path, argv)
    line = _only_line(r.stderr)
    assert (
        r.returncode == 2
        and fragment.format(address=ray_head) in line
        and "CYTORAY_TRUST_AUTOSCALER=1" in line
    ), r.stderr
    assert (
        time.monotonic() - t0 < 60 and tree(tmp_path) == before
    )  # no split, no store, no Ray folder


@pytest.mark.slow  # Ray's own retries take ~20 s before it gives up
def test_train_on_a_token_cluster_without_the_token_is_one_line(ray_head, ds, tmp_path):
    r = _train_joined(ray_head, ds, tmp_path, ["--workers", "1000"], auth="disabled")
    line = _only_line(
        "\n".join(x for x in r.stderr.splitlines() if " W " not in x[:40])
    )  # Ray's C++ retry warnings
    assert (
        r.returncode == 2
        and f"cannot join the Ray cluster at {ray_head}" in line
        and "RAY_AUTH_MODE=token" in line
    ), r.stderr


# ----------------------------------------------------------------------------- 6. the rest of the list


@pytest.mark.parametrize(
    "kwargs,fragment",
    [({"base": 10**9}, "are not a plausible network"), ({"nope": 1}, "do not build")],
)
@pytest.mark.parametrize("kind", ["syncgan", "refined-sim"])
def test_absurd_or_unknown_network_arguments_of_a_unet_bundle(
    kind, kwargs, fragment, tmp_path, capsys
):
    """The UNet-based loaders (SynCGAN's CGAN, refined-sim's segmenter) built from generator.json as
    given: a 10^9-channel UNet would allocate until the machine gives out."""
    kw, _ = _tiny_unet()
    meta = (
        {
            "generator": "syncgan",
            "classes": ["benign"],
            "cgan": {"kwargs": {**kw, **kwargs}},
            "mask_gans": {},
        }
        if kind == "syncgan"
        else {
            "generator": kind,
            "classes": ["benign"],
            "segmenter_kwargs": {**kw, **kwargs},
            "refined": False,
        }
    )
    b = _bundle(tmp_path / "b", meta)
    err = _row(
        _generate(b, tmp_path), f"{b / 'generator.json'}: network arguments", capsys, tmp_path
    )
    assert fragment in err, err


def test_weights_of_another_shape_in_a_generator_bundle(tmp_path, capsys):
    from cytoray.nets import UNet

    kw, _ = _tiny_unet()
    other = UNet(**{**kw, "base": 8}).state_dict()  # twice the channels the bundle's kwargs say
    b = _bundle(
        tmp_path / "b",
        {"generator": "syncgan", "classes": ["benign"], "cgan": {"kwargs": kw}, "mask_gans": {}},
        {"cgan": other},
    )
    _row(
        _generate(b, tmp_path),
        f"{b / 'generator.json'}: not a complete 'syncgan' bundle (RuntimeError: Error(s) in loading",
        capsys,
        tmp_path,
    )


@pytest.mark.parametrize("where", ["another dataset", "the input", "above the input"])
def test_masks_never_write_over_a_dataset_or_their_input(where, ds, tmp_path, capsys):
    import shutil

    other = shutil.copytree(
        ds, tmp_path / "other"
    )  # same class folders, same file names: masks would replace its images
    out = {"another dataset": other, "the input": ds, "above the input": tmp_path}[where]
    _row(
        ["masks", "--data", str(ds), "--out", str(out)],
        f"--out {out}: holds files `masks` did not write",
        capsys,
        tmp_path,
    )


def test_masks_rerun_into_their_own_output(ds, tmp_path, capsys):
    from cytoray.cli import main

    out = tmp_path / "m"
    assert main(["masks", "--data", str(ds), "--out", str(out), "--json"]) == 0
    masks = {k: v for k, v in tree(out).items() if k.endswith(".png") and "/.cache/" not in k}
    capsys.readouterr()
    assert (
        main(["masks", "--data", str(ds), "--out", str(out), "--json"]) == 0
    )  # its own output: the cache answers
    assert json.loads(capsys.readouterr().out)["cache_hits"] == 12 and len(masks) == 12
    assert {
        k: v for k, v in tree(out).items() if k.endswith(".png") and "/.cache/" not in k
    } == masks


def test_refined_segmentation_outside_the_repository_finds_its_config(
    tmp_path, capsys, monkeypatch
):
    """Run from another folder: the study's default config is found (it said 'config file not found');
    the row stops on a wrong key, which is only known once the config was read."""
    monkeypatch.chdir(tmp_path)
    code, err = _study(
        "refined_segmentation",
        [
            "--smoke-test",
            "--out",
            str(tmp_path / "out"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
            "--set",
            "nosuchkey=1",
        ],
        capsys,
    )
    assert code == 2 and "unknown key 'nosuchkey'" in err and "not found" not in err, err
    _one_line(err)
    assert list(tmp_path.iterdir()) == []
