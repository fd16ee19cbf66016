"""The Docker deployment (docker/), checked statically, no Docker engine: the Dockerfiles lint clean,
the compose file is valid Compose, and images, compose, Spark config and pyproject.toml agree."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

pytestmark = pytest.mark.slow  # ~4 s: three hadolint runs, two compose validators, an Airflow import

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
BIN = Path(sys.executable).parent
IMAGES = ("airflow", "spark-connect", "mlflow")
AIRFLOW_SERVICES = ("airflow-init", "api-server", "scheduler", "dag-processor")
SHARED_VOLUMES = {"cdp-landing": "CDP_LANDING", "cdp-lakehouse": "CDP_LAKEHOUSE", "cdp-exports": "CDP_EXPORTS"}


def _dockerfile(image: str) -> Path:
    return DOCKER / image / "Dockerfile"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # PyYAML resolves the `<<:` merge keys as Compose does


def _services() -> dict[str, dict]:
    return _compose()["services"]


def _pins() -> dict[str, str]:
    """pyproject.toml's exact pins: distribution name -> version."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        req = Requirement(dep)
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if exact:
            pins[req.name] = exact[0]
    return pins


def _python_minor() -> str:
    """The one Python minor version pyproject allows (requires-python = ">=3.11,<3.12")."""
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    low = re.search(r">=\s*(\d+)\.(\d+)", spec)
    high = re.search(r"<\s*(\d+)\.(\d+)", spec)
    assert low and high and (int(high[1]), int(high[2])) == (int(low[1]), int(low[2]) + 1), spec
    return f"{low[1]}.{low[2]}"


def _args(image: str) -> dict[str, str]:
    """ARG defaults of a Dockerfile (the first default given wins, as in a build without --build-arg)."""
    args: dict[str, str] = {}
    for name, value in re.findall(r"^ARG\s+(\w+)=(\S+)", _dockerfile(image).read_text(), re.M):
        args.setdefault(name, value)
    return args


def _env_example() -> dict[str, str]:
    pairs = (ln.split("=", 1) for ln in ENV_EXAMPLE.read_text().splitlines() if ln.strip() and not ln.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def _spark_defaults() -> dict[str, str]:
    conf = {}
    for line in (DOCKER / "spark-connect" / "spark-defaults.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split(None, 1)
            conf[key] = value.strip()
    return conf


def _mounts(service: dict) -> dict[str, str]:
    """Named-volume mounts of a service: volume -> path in the container."""
    out = {}
    for mount in service.get("volumes", []):
        source, target = mount.split(":")[:2]
        out[source] = target
    return out


def _built_from(service: dict) -> str | None:
    build = service.get("build") or {}
    return build.get("dockerfile") if isinstance(build, dict) else None


def _container_ports(service: dict) -> set[int]:
    """The ports other containers reach: published (`ports`) or exposed to the compose network only."""
    return {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in [*service.get("ports", []), *service.get("expose", [])]}


def _hadolint(path: Path) -> subprocess.CompletedProcess:
    exe = BIN / "hadolint"
    assert exe.exists(), f"{exe} missing: install the test extras (pip install -e '.[test]')"
    return subprocess.run([str(exe), "--no-color", "--config", str(DOCKER / ".hadolint.yaml"), str(path)],
                          capture_output=True, text=True, timeout=60)


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose (Debian package) is missing: run scripts/system-deps.sh")
    return exe


# --- Dockerfiles ------------------------------------------------------------------------------------

def test_dockerfiles_are_the_three_images():
    assert sorted(p.parent.name for p in DOCKER.glob("*/Dockerfile")) == sorted(IMAGES)


@pytest.mark.parametrize("image", IMAGES)
def test_hadolint_passes_on_dockerfile(image):
    result = _hadolint(_dockerfile(image))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_careless_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN cd /tmp && pip install requests\nUSER root\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    assert {"DL3006", "DL3003", "DL3013", "DL3002"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_image_versions_match_pyproject_pins():
    pins, python = _pins(), _python_minor()
    airflow, spark, mlflow = _args("airflow"), _args("spark-connect"), _args("mlflow")
    assert airflow["AIRFLOW_VERSION"] == pins["apache-airflow"]
    assert re.search(r"^FROM apache/airflow:\$\{AIRFLOW_VERSION\}-python\$\{PYTHON_VERSION\}$",
                     _dockerfile("airflow").read_text(), re.M)
    assert spark["SPARK_VERSION"] == pins["pyspark"] == pins["pyspark-client"]
    assert mlflow["MLFLOW_VERSION"] == pins["mlflow"]
    # Pickled pandas UDFs and MLflow models cross from the Airflow task to the Spark workers.
    for image in IMAGES:
        assert _args(image)["PYTHON_VERSION"] == python, image
    for image in ("spark-connect", "mlflow"):
        froms = re.findall(r"^FROM (\S+)", _dockerfile(image).read_text(), re.M)
        assert froms and all(f.startswith("python:${PYTHON_VERSION}-") for f in froms), (image, froms)


def test_spark_jars_match_the_python_packages():
    pins = _pins()
    spark_line = ".".join(pins["pyspark"].split(".")[:2])
    deps = {d.get("name"): d.get("rev") for d in ET.parse(DOCKER / "spark-connect" / "ivy.xml").iter("dependency")}
    # delta-spark 4.x publishes one artifact per Spark line (what configure_spark_with_delta_pip names).
    assert deps.get(f"delta-spark_{spark_line}_2.13") == pins["delta-spark"], deps
    # The image loads exactly the Delta JARs that conf/jars.txt pins (and make jars fetched and checked).
    from spark_jobs.session import pinned_jars

    pinned = {c.split(":")[1]: c.split(":")[2] for c, _, _ in pinned_jars("delta")}
    image = {n: r for n, r in deps.items() if n.startswith("delta-")}
    assert image == {n: v for n, v in pinned.items() if n.startswith("delta-spark")}, (image, pinned)
    assert pinned["delta-storage"] == pinned[f"delta-spark_{spark_line}_2.13"]  # ivy pulls delta-storage of the same version
    assert deps.get("graphframes-spark4_2.13") == pins["graphframes-py"], deps
    assert deps.get("graphframes-connect-spark4_2.13") == pins["graphframes-py"], deps


def test_spark_defaults_enable_delta_graphframes_and_the_project_python():
    conf = _spark_defaults()
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert conf["spark.sql.catalog.spark_catalog"] == "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    assert conf["spark.connect.extensions.relation.classes"] == "org.apache.spark.sql.graphframes.GraphFramesConnect"
    assert conf["spark.pyspark.python"] == re.search(r"PYSPARK_PYTHON=(\S+)", _dockerfile("spark-connect").read_text())[1]
    assert "start-connect-server.sh" in _dockerfile("spark-connect").read_text()


@pytest.mark.parametrize("image", ["airflow", "spark-connect"])
def test_build_context_ignore_file_lets_every_copied_path_through(image):
    """The context is the repo root; the Dockerfile's own ignore file allow-lists what the image copies
    (and keeps .venv, lakehouse/ and landing/ out)."""
    lines = [ln.strip() for ln in (DOCKER / image / "Dockerfile.dockerignore").read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = []
    for line in _dockerfile(image).read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied += [t for t in line.split()[1:-1] if not t.startswith("--")]
    assert copied
    for src in copied:
        assert any(src == a or src.startswith(a + "/") for a in allowed), f"{src} is excluded from the context"
    assert not {".venv", "lakehouse", "landing", "mlruns"} & allowed


def test_shell_scripts_pass_shellcheck(tmp_path):
    """fetch-jars.sh, and airflow-init's inline script as the container's bash receives it (Compose has
    replaced `${AIRFLOW_UID:-50000}` and unescaped `$$`)."""
    command = _services()["airflow-init"]["command"]
    init = tmp_path / "airflow-init.sh"
    init.write_text("#!/usr/bin/env bash\nset " + " ".join(command[:2]) + "\n"
                    + command[3].replace("${AIRFLOW_UID:-50000}", "50000").replace("$$", "$"))
    for script in (DOCKER / "spark-connect" / "fetch-jars.sh", init):
        result = subprocess.run([str(BIN / "shellcheck"), str(script)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout


# --- compose file validity --------------------------------------------------------------------------

def test_compose_file_matches_the_compose_spec_schema():
    result = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_spec_schema_check_rejects_a_wrong_condition(tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("service_completed_successfully", "service_finished"))
    result = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "service_finished" in result.stdout


def test_docker_compose_resolves_the_file_with_the_example_env():
    result = subprocess.run([_docker_compose(), "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["services"]["scheduler"]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] == \
        _env_example()["AIRFLOW_JWT_SECRET"]


def test_docker_compose_refuses_to_start_without_the_secrets(tmp_path):
    env = tmp_path / ".env"
    env.write_text("".join(f"{k}={v}\n" for k, v in _env_example().items() if k != "AIRFLOW_JWT_SECRET"))
    result = subprocess.run([_docker_compose(), "-f", str(COMPOSE), "--env-file", str(env), "config", "-q"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode != 0 and "AIRFLOW_JWT_SECRET" in result.stderr


def test_every_compose_variable_is_documented_in_env_example():
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE.read_text()))
    assert used and used <= set(_env_example()), used - set(_env_example())


# --- structure --------------------------------------------------------------------------------------

def test_deployment_has_its_services():
    assert {"postgres", "airflow-init", "api-server", "scheduler", "dag-processor", "spark-connect", "mlflow"} <= \
        set(_services())


def test_depends_on_targets_exist_and_wait_for_what_they_can():
    services, volumes = _services(), set(_compose()["volumes"])
    for name, svc in services.items():
        for target, dep in (svc.get("depends_on") or {}).items():
            assert target in services and target != name, (name, target)
            if dep["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}, which has no healthcheck"
            if dep["condition"] == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} must run once"
        for source in _mounts(svc):
            assert source.startswith((".", "/")) or source in volumes, (name, source)
    for name in ("api-server", "scheduler", "dag-processor", "spark-connect", "mlflow", "postgres"):
        assert "healthcheck" in services[name], name


def test_services_running_cdp_code_share_the_data_volumes_at_the_configured_paths():
    services = _services()
    runs_cdp = {n for n, s in services.items()
                if _built_from(s) in ("docker/airflow/Dockerfile", "docker/spark-connect/Dockerfile")}
    assert set(AIRFLOW_SERVICES) | {"spark-connect"} <= runs_cdp
    for volume, env_var in SHARED_VOLUMES.items():
        targets = {n: _mounts(services[n]).get(volume) for n in runs_cdp}
        assert len(set(targets.values())) == 1 and None not in targets.values(), (volume, targets)
        for name in runs_cdp:
            assert services[name]["environment"][env_var] == targets[name], (name, env_var)


def test_airflow_services_get_the_cdp_spark_connection_to_the_spark_connect_server(monkeypatch, tmp_path_factory):
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow")))  # as tests/test_dags.py
    from spark_jobs.orchestration import SPARK_CONN_ID, spark_connect_url

    services = _services()
    port = int(_spark_defaults()["spark.connect.grpc.binding.port"])
    assert port in _container_ports(services["spark-connect"])
    expected = f"sc://spark-connect:{port}"
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        # Resolved the way the tasks resolve it: Airflow parses the connection URI from the env var.
        monkeypatch.setenv(f"AIRFLOW_CONN_{SPARK_CONN_ID.upper()}", env[f"AIRFLOW_CONN_{SPARK_CONN_ID.upper()}"])
        assert spark_connect_url(SPARK_CONN_ID) == expected, name
        assert env["CDP_SPARK_REMOTE"] == expected, name
    assert services["spark-connect"]["environment"]["CDP_SPARK_REMOTE"] == expected


def test_airflow_components_share_the_jwt_secret_and_reach_the_execution_api():
    services = _services()
    api_port = _container_ports(services["api-server"])
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        values = {services[n]["environment"].get(key) for n in AIRFLOW_SERVICES}
        assert len(values) == 1 and None not in values, (key, values)
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        url = re.fullmatch(r"http://([\w-]+):(\d+)/execution/", env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
        assert url and url[1] == "api-server" and int(url[2]) in api_port, (name, env)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"


def test_tasks_and_spark_workers_reach_mlflow_by_a_host_it_accepts():
    services = _services()
    command = services["mlflow"]["command"]
    allowed = command[command.index("--allowed-hosts") + 1].split(",")
    assert "--serve-artifacts" in command
    for name in ("scheduler", "spark-connect"):
        uri = re.fullmatch(r"http://([\w-]+):(\d+)", services[name]["environment"]["MLFLOW_TRACKING_URI"])
        assert uri and uri[1] in services and int(uri[2]) in _container_ports(services[uri[1]]), name
        assert f"{uri[1]}:{uri[2]}" in allowed, (name, allowed)


def test_no_unauthenticated_server_is_published_beyond_the_hosts_loopback():
    services = _services()
    assert "ports" not in services["spark-connect"] or all("15002" not in str(p) for p in services["spark-connect"]["ports"])
    for name, service in services.items():
        for p in service.get("ports", []):
            assert str(p).startswith("127.0.0.1:"), (name, p)


def test_compose_refuses_the_example_secrets(tmp_path):
    """airflow-init's script (every CDP service waits for it) stops on a change-me value or a short one."""
    script = _services()["airflow-init"]["command"][-1].replace("$$", "$")
    check = script[: script.index('uid="')]
    good = {"POSTGRES_PASSWORD": "p" * 20, "AIRFLOW_JWT_SECRET": "j" * 32, "AIRFLOW_API_SECRET_KEY": "a" * 32,
            "AIRFLOW_ADMIN_PASSWORD": "x" * 16}
    for name, bad in [("AIRFLOW_JWT_SECRET", "change-me-jwt-secret"), ("AIRFLOW_ADMIN_PASSWORD", "short")]:
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", check], env={**good, name: bad, "PATH": os.environ["PATH"]},
                           capture_output=True, text=True)
        assert r.returncode == 1 and name in r.stderr, r.stderr
    assert subprocess.run(["bash", "-euo", "pipefail", "-c", check], env={**good, "PATH": os.environ["PATH"]}).returncode == 0
    dependants = [n for n, s in _services().items() if n not in ("postgres", "airflow-init")]
    for n in dependants:
        assert "airflow-init" in (_services()[n].get("depends_on") or {}), n
