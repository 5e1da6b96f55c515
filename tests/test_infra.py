"""Static checks of infra/: no default secret, nothing installed at start, auth on everywhere.

No Docker engine or Kubernetes runs in CI, so these read the files: YAML parses, compose's
variable interpolation (emulated below, the documented `${VAR}`, `${VAR:-default}`,
`${VAR:?error}` forms) refuses to render while a secret is missing, the image runs as a
non-root user, and Ray's dashboard is neither bound to the world nor without a token.
The server side itself runs for real in test_tracking_server.py.
"""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "mlflow" / "docker-compose.yaml"
SECRETS = {
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "MLFLOW_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|ACCESS_KEY_ID|ROOT_USER")
REQUIRED = re.compile(r"^\$\{([A-Z0-9_]+):\?[^}]+\}$")  # the whole value is ${VAR:?message}
CREDENTIAL_IN_URI = re.compile(r"://[^/@\s:]+:[^/@\s]+@")  # scheme://user:password@host


# ----------------------------------------------------------------------------- compose interpolation


class MissingVariable(Exception):
    pass


_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*)|(:?\?)([^}]*))?\})")


def interpolate(value, env: dict):
    """Compose's interpolation of every string in a loaded compose file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m):
        if m.group(1):
            return "$"
        name, dflt_op, dflt, err_op, err = m.group(2, 3, 4, 5, 6)
        v = env.get(name)
        unset = v is None or (v == "" and ":" in (dflt_op or err_op or ""))
        if err_op and unset:
            raise MissingVariable(f"{name}: {err}")
        if dflt_op and unset:
            return dflt
        return v or ""

    return _VAR.sub(one, value)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def env_items(svc: dict):
    env = svc.get("environment") or {}
    return env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)


FILLED = {name: f"test-{name.lower()}" for name in SECRETS}


# ----------------------------------------------------------------------------- every file


@pytest.mark.parametrize(
    "path", sorted(INFRA.rglob("*.yaml")), ids=lambda p: str(p.relative_to(INFRA))
)
def test_yaml_parses(path):
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs and all(isinstance(d, dict) for d in docs)


def test_no_password_literal_anywhere_in_infra():
    for p in INFRA.rglob("*"):
        if p.is_file():
            text = p.read_text()
            assert "mlflow-secret" not in text and "password1234" not in text, p
            assert not CREDENTIAL_IN_URI.search(text.replace("user:password@", "")), (
                f"{p}: a credential inside a URI"
            )


# ----------------------------------------------------------------------------- MLflow compose stack


def test_compose_takes_every_secret_from_the_environment():
    seen = set()
    for name, svc in compose()["services"].items():
        for key, value in env_items(svc):
            if SECRET_NAME.search(key):
                m = REQUIRED.match(str(value))
                assert m, (
                    f"{name}.{key} = {value!r}: a secret must be ${{VAR:?message}} (no default, no literal)"
                )
                seen.add(m.group(1))
    assert seen == SECRETS


def test_compose_refuses_to_render_without_each_secret():
    rendered = interpolate(compose(), FILLED)
    assert (
        rendered["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
        == FILLED["POSTGRES_PASSWORD"]
    )
    with pytest.raises(MissingVariable):
        interpolate(compose(), {})
    for missing in sorted(SECRETS):
        for value in (None, ""):  # unset, or set but empty: both refused
            env = (
                {**FILLED, missing: value}
                if value == ""
                else {k: v for k, v in FILLED.items() if k != missing}
            )
            with pytest.raises(MissingVariable, match=missing):
                interpolate(compose(), env)


def test_env_example_lists_every_secret_empty():
    lines = [ln.strip() for ln in (INFRA / "mlflow" / ".env.example").read_text().splitlines()]
    assigned = dict(ln.split("=", 1) for ln in lines if ln and not ln.startswith("#"))
    assert set(assigned) == SECRETS and all(v == "" for v in assigned.values()), assigned
    assert "infra/mlflow/.env" in (ROOT / ".gitignore").read_text().splitlines()


def test_no_service_installs_anything_at_start():
    for name, svc in compose()["services"].items():
        for key in ("command", "entrypoint"):
            cmd = svc.get(key) or ""
            text = " ".join(cmd) if isinstance(cmd, list) else cmd
            assert not re.search(r"pip3?\s+install|apt-get|apk add|conda install", text), (
                f"{name}.{key} installs at start: {text}"
            )


def test_only_mlflow_is_published_on_loopback_by_default():
    services = interpolate(compose(), FILLED)["services"]
    published = {name: svc["ports"] for name, svc in services.items() if svc.get("ports")}
    assert list(published) == ["mlflow"], published
    assert published["mlflow"] == ["127.0.0.1:5000:5000"]
    bound = interpolate(compose(), {**FILLED, "MLFLOW_BIND_ADDRESS": "10.0.0.5"})["services"][
        "mlflow"
    ]["ports"]
    assert bound == ["10.0.0.5:5000:5000"]
    c = compose()
    assert c["networks"]["backend"].get("internal") is True
    for name in ("postgres", "minio"):
        assert c["services"][name]["networks"] == ["backend"], name


def test_minio_console_is_off_and_unpublished():
    minio = compose()["services"]["minio"]
    assert "--console-address" not in " ".join(minio["command"])
    assert minio["environment"]["MINIO_BROWSER"] == "off"


def test_mlflow_runs_basic_auth_with_proxied_s3_artifacts_from_the_one_image():
    services = compose()["services"]
    mlflow = services["mlflow"]
    cmd = mlflow["command"]
    assert cmd[:2] == ["mlflow", "server"]
    for flag in ("--app-name=basic-auth", "--serve-artifacts"):
        assert flag in cmd, cmd
    assert any(a.startswith("--artifacts-destination=s3://") for a in cmd), cmd
    assert any(a.startswith("--backend-store-uri=postgresql+psycopg2://") for a in cmd), cmd
    env = dict(env_items(mlflow))
    mounted = {v.split(":")[1]: v.split(":")[0] for v in mlflow["volumes"]}
    assert mounted[env["MLFLOW_AUTH_CONFIG_PATH"]] == "./basic_auth.ini"
    assert {services[s]["image"] for s in ("mlflow", "bucket")} == {
        "${CYTORAY_IMAGE:-cytoray:latest}"
    }


def test_auth_config_has_no_secret_and_denies_by_default():
    cfg = configparser.ConfigParser()
    cfg.read(INFRA / "mlflow" / "basic_auth.ini")
    m = cfg["mlflow"]
    assert "admin_password" not in m, (
        "the admin password comes from MLFLOW_AUTH_ADMIN_PASSWORD only"
    )
    assert m["default_permission"] == "NO_PERMISSIONS"
    assert m["authorization_function"] == "mlflow.server.auth:authenticate_request_basic_auth"
    assert m["database_uri"].startswith("postgresql+psycopg2://mlflow@postgres:5432/")
    db = m["database_uri"].rsplit("/", 1)[1]
    assert (
        f"CREATE DATABASE {db} " in (INFRA / "mlflow" / "initdb" / "10-mlflow-auth.sql").read_text()
    )


# ----------------------------------------------------------------------------- the image


def test_dockerfile_runs_unprivileged_and_installs_only_at_build():
    lines = [
        ln.strip()
        for ln in (INFRA / "Dockerfile").read_text().splitlines()
        if ln.strip() and not ln.strip().startswith("#")
    ]
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), users
    last_user = max(i for i, ln in enumerate(lines) if ln.startswith("USER "))
    assert all(not ln.startswith("RUN ") for ln in lines[last_user:]), (
        "nothing runs as root after USER"
    )
    for ln in lines:
        if ln.startswith(("CMD", "ENTRYPOINT")):
            assert "pip" not in ln, ln
    install = " ".join(ln for ln in lines if "pip install" in ln)
    assert "-c constraints.txt" in install and "'.[server]'" in install, install


def test_server_and_test_extras_are_pinned_in_constraints():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    pins = {
        ln.split("==")[0].lower().replace("_", "-")
        for ln in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in ln
    }
    server = {re.split(r"[\[<>=]", r)[0].lower() for r in extras["server"]}
    assert {"psycopg2-binary", "boto3", "mlflow"} <= server
    for req in extras["server"] + extras["test"]:
        assert re.split(r"[\[<>=]", req)[0].lower() in pins, (
            f"{req} is not pinned in constraints.txt"
        )
    assert {"flask-wtf", "botocore", "s3transfer"} <= pins  # what mlflow[auth] and boto3 bring


# ----------------------------------------------------------------------------- Ray


def test_ray_up_cluster_has_token_auth_and_a_loopback_dashboard():
    cfg = yaml.safe_load((INFRA / "ray" / "cluster.yaml").read_text())
    assert "--env RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    head = " ".join(cfg["head_start_ray_commands"])
    assert re.search(r"--dashboard-host[= ]127\.0\.0\.1\b", head), head
    assert "0.0.0.0" not in (INFRA / "ray" / "cluster.yaml").read_text()


def test_rayjob_has_token_auth_secrets_from_kubernetes_and_a_network_policy():
    job, policy = yaml.safe_load_all((INFRA / "kuberay" / "rayjob.yaml").read_text())
    spec = job["spec"]["rayClusterSpec"]
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert head.get("serviceType") == "ClusterIP"
    assert "0.0.0.0" not in str(head["rayStartParams"].get("dashboard-host", ""))
    env = {e["name"]: e for e in head["template"]["spec"]["containers"][0]["env"]}
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert "secretKeyRef" in env[name].get("valueFrom", {}), f"{name} must come from a Secret"
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert not [k for k in runtime_env["env_vars"] if SECRET_NAME.search(k) or "USERNAME" in k], (
        "the dashboard shows the runtime env"
    )
    assert policy["kind"] == "NetworkPolicy"
    assert policy["spec"]["podSelector"]["matchLabels"] == {"ray.io/node-type": "head"}
    assert policy["spec"]["ingress"] and all(
        rule.get("from") for rule in policy["spec"]["ingress"]
    )  # no allow-all rule


def test_readme_says_where_each_secret_goes_and_how_to_smoke_check():
    text = (INFRA / "README.md").read_text()
    for name in sorted(SECRETS) + [
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "RAY_AUTH_TOKEN",
        "~/.ray/auth_token",
    ]:
        assert name in text, f"infra/README.md does not mention {name}"
    assert (
        "docker compose -f infra/mlflow/docker-compose.yaml up -d" in text and "Smoke check" in text
    )
