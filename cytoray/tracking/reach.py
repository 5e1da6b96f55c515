"""Is there an MLflow tracking server at this URI? Asked once, in seconds, before a one-shot
command (`pull`, `classify`, `segment`, `report`) talks to it.

MLflow's client retries a refused connection for minutes (7 retries with backoff by default;
cytoray's 3 with a 30 s timeout each still add up to over 4 minutes when the server does not
answer), and a plain web server's 404 page reads as "model not found in the registry". One
GET of `/health` (MLflow's liveness page, "OK") with a short timeout tells the three apart: no
answer, an answer that is not MLflow, or a server to talk to. Only http(s) URIs are probed; a
sqlite store is a file (tracking.mlflow_utils.check_store) and other schemes are left to MLflow.
"""

from __future__ import annotations

import os

from ..errors import CytorayError

PROBE_TIMEOUT_S = float(os.environ.get("CYTORAY_TRACKING_PROBE_TIMEOUT_S", "5"))


def probe_tracking_server(uri: str, what: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """A one-line CytorayError naming `uri` unless an MLflow server answers there."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    url = uri.split("?")[0].rstrip("/") + "/health"
    fix = "start it, or pass the --tracking-uri of a running MLflow server"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, method="GET"), timeout=timeout
        ) as r:  # noqa: S310 (http only)
            body = r.read(64)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            return  # a server that wants credentials: MLflow's own calls say which
        raise CytorayError(
            f"{uri} (while {what}): not an MLflow tracking server (HTTP {e.code} on /health); {fix}"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise CytorayError(
            f"cannot reach the MLflow tracking server at {uri} ({reason}) while {what}; {fix}"
        ) from None
    if body.strip() != b"OK":
        raise CytorayError(
            f"{uri} (while {what}): not an MLflow tracking "
            f"server (/health says {body[:20]!r}); {fix}"
        )
