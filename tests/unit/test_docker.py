"""docker/: the compose file and the image recipe describe the whole platform, gate start-up on health checks and
keep every secret in the uncommitted docker/.env. (No Docker daemon here: these read the files themselves.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
AIRFLOW = {"airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}
SERVICES = {"postgres", "mlflow", "airflow-init", *AIRFLOW, "spark-master", "spark-worker", "trainer"}
ONE_SHOT = {"airflow-init"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN", re.IGNORECASE)


def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def test_compose_runs_every_component_with_health_checks_and_healthy_start_order():
    spec = compose()
    services = spec["services"]
    assert set(services) == SERVICES
    for name in SERVICES - ONE_SHOT:
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and check["retries"] >= 3, name
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert condition["condition"] == expected, (name, dependency)
    assert {services[name]["command"][1] for name in AIRFLOW} == {
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
    }
    assert all("airflow-init" in services[name]["depends_on"] for name in AIRFLOW)
    # Spark: one master, a worker registered with it, and the DAGs' spark_default connection pointing at it.
    assert "org.apache.spark.deploy.master.Master" in services["spark-master"]["command"]
    assert "spark://spark-master:7077" in services["spark-worker"]["command"]
    assert '"spark://spark-master"' in services["airflow-scheduler"]["environment"]["AIRFLOW_CONN_SPARK_DEFAULT"]
    # The trainer reserves NVIDIA GPUs and is built from the image's gpu stage.
    devices = services["trainer"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert services["trainer"]["build"]["target"] == "gpu"


def test_volumes_exist_and_ports_are_published_on_loopback_only():
    spec = compose()
    for name, service in spec["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (DOCKER / source).is_file(), (name, source)
            else:
                assert source in spec["volumes"], (name, source)
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
    # The lake, MLflow artifacts and checkpoints are one shared volume, mounted at /data everywhere it is used.
    users = {name for name, s in spec["services"].items() if "reco-data:/data" in s.get("volumes", [])}
    assert {"mlflow", "airflow-scheduler", "spark-worker", "trainer"} <= users


def test_secrets_are_files_mounted_only_where_needed_and_never_in_commands_or_environment():
    """Before: the database password on the MLflow server's command line and one superuser password exported as
    PGPASSWORD to every container, Spark workers included."""
    text = (DOCKER / "docker-compose.yml").read_text()
    spec = compose()
    # No password in any URL, command or environment value; secret-named settings only name a file or a command
    # that reads one.
    assert not re.findall(r"://[^:/\s'\"]+:[^@\s/]+@", text)
    assert "PGPASSWORD" not in text and "POSTGRES_PASSWORD:" not in text
    for name, service in spec["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert key.endswith(("_FILE", "_CMD")) or key == "PGPASSFILE", (name, key)
                # Airflow's own password file, written from a secret onto a volume only Airflow's containers mount.
                assert str(value).startswith(("/run/secrets/", "cat /run/secrets/", "/airflow-auth/")), (name, key)
    auth_users = {name for name, s in spec["services"].items() if "airflow-auth:/airflow-auth" in s.get("volumes", [])}
    assert auth_users == {"airflow-init", *AIRFLOW}
    # Every secret is a file under docker/secrets/ (git-ignored), and each service gets only its own.
    assert all(entry["file"].startswith("./secrets/") for entry in spec["secrets"].values())
    given = {name: set(service.get("secrets") or []) for name, service in spec["services"].items()}
    assert given["spark-master"] == given["spark-worker"] == given["trainer"] == set()
    assert given["mlflow"] == {"mlflow.pgpass"}
    assert all("postgres_superuser" not in secrets for name, secrets in given.items() if name != "postgres")
    assert all(secrets <= set(spec["secrets"]) for secrets in given.values())
    assert subprocess.run(["git", "check-ignore", "-q", "docker/secrets/airflow_db"], cwd=ROOT).returncode == 0
    assert subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT).returncode == 0
    tracked = subprocess.run(["git", "ls-files", "docker"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "docker/.env\n" not in tracked and "docker/secrets/" not in tracked
    # .env.example documents every variable the compose file interpolates, and holds no secret.
    example_lines = [line for line in (DOCKER / ".env.example").read_text().splitlines() if line and line[0] != "#"]
    example = dict(line.split("=", 1) for line in example_lines)
    assert set(re.findall(r"\$\{([A-Z0-9_]+)", text)) <= set(example)
    assert not any(SECRET_NAME.search(key) for key in example)


def test_make_secrets_writes_private_files_and_each_pgpass_holds_only_its_services_roles(tmp_path):
    import shutil

    shutil.copy(DOCKER / "make-secrets.sh", tmp_path)
    subprocess.run(["bash", str(tmp_path / "make-secrets.sh")], check=True, capture_output=True)
    secrets = tmp_path / "secrets"
    first = {path.name: path.read_text() for path in secrets.iterdir()}
    assert {path.stat().st_mode & 0o777 for path in secrets.iterdir()} == {0o600}
    assert set(first) >= {entry["file"].removeprefix("./secrets/") for entry in compose()["secrets"].values()}
    roles = {
        name: [line.split(":")[3] for line in text.splitlines()] for name, text in first.items() if "pgpass" in name
    }
    assert roles == {
        "airflow.pgpass": ["airflow", "warehouse_writer"],
        "mlflow.pgpass": ["mlflow"],
        "analyst.pgpass": ["analyst"],
    }
    assert first["mlflow.pgpass"].strip().endswith(first["mlflow_db"].strip())
    subprocess.run(["bash", str(tmp_path / "make-secrets.sh")], check=True, capture_output=True)
    assert {path.name: path.read_text() for path in secrets.iterdir()} == first  # a re-run changes no password


def test_the_image_installs_the_pinned_requirements_and_java_and_runs_unprivileged():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.findall(r"^FROM \S+ AS (\w+)$", dockerfile, re.MULTILINE) == ["cpu", "gpu"]
    assert "openjdk-17-jre-headless" in dockerfile and "pip install -r requirements.txt" in dockerfile
    assert re.search(r"^USER reco$", dockerfile, re.MULTILINE) and dockerfile.rstrip().endswith("USER reco")
    # Every file the image copies exists, and the build context's ignore file lets it through.
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    for line in re.findall(r"^COPY (.+) \S+$", dockerfile, re.MULTILINE):
        for source in line.split():
            assert (ROOT / source).exists(), source
            assert f"!{source}" in ignore or f"!{source}/**" in ignore, source
    pins = [line for line in (DOCKER / "requirements-docker.txt").read_text().splitlines() if line and line[0] != "#"]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9.]+", pin) for pin in pins)
