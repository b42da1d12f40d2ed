"""local_infra/: the compose file is valid, keeps MongoDB off public interfaces, and .env.example has every variable.

Debian's docker-compose (apt, 1.29) validates a compose file without a Docker engine; .ci/run installs it.
"""
import os
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT

INFRA = os.path.join(ROOT, "local_infra")
COMPOSE = os.path.join(INFRA, "docker-compose.yml")


def example_variables():
    """Every NAME=value of .env.example, commented out or not."""
    with open(os.path.join(INFRA, ".env.example")) as f:
        return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", f.read(), flags=re.M))


def compose_config(tmp_path, *args):
    shutil.copy(os.path.join(INFRA, ".env.example"), tmp_path / ".env")  # as a user makes local_infra/.env
    # --project-directory: where compose reads .env; the repository stays untouched
    return subprocess.run(["docker-compose", "--project-directory", str(tmp_path), "-f", COMPOSE, *args, "config",
                           *(["-q"] if not args else [])], capture_output=True, text=True, timeout=120)


needs_compose = pytest.mark.skipif(shutil.which("docker-compose") is None,
                                   reason="docker-compose is not installed (.ci/run installs it)")


@needs_compose
def test_compose_file_is_valid(tmp_path):
    out = compose_config(tmp_path)
    assert out.returncode == 0, out.stderr


@needs_compose
def test_mongodb_is_published_on_localhost_only_and_workers_scale(tmp_path):
    out = compose_config(tmp_path, "--profile", "gpus")
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert sorted(services) == ["hks_hyperopt", "hks_hyperopt_worker", "hks_hyperopt_worker_gpu0",
                                "hks_hyperopt_worker_gpu1", "hks_mongo_db"]
    published = [(name, port) for name, s in services.items() for port in s.get("ports", [])]
    assert published == [("hks_mongo_db", "127.0.0.1:27017:27017/tcp")]
    assert "container_name" not in services["hks_hyperopt_worker"]  # a fixed name would forbid --scale
    assert services["hks_mongo_db"]["image"] == "mongo:7.0.14" and "healthcheck" in services["hks_mongo_db"]
    for name in ("hks_hyperopt", "hks_hyperopt_worker", "hks_hyperopt_worker_gpu0"):
        assert any(v.endswith(":/hks/results:rw") for v in services[name]["volumes"])
        assert any(v.endswith(":/hks/ml_req:ro") for v in services[name]["volumes"])
    gpus = services["hks_hyperopt_worker_gpu1"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpus == [{"driver": "nvidia", "device_ids": ["1"], "capabilities": ["gpu"]}]


def test_env_example_has_every_variable():
    """What the compose file interpolates and what the driver and the workers read from the environment."""
    with open(COMPOSE) as f:
        used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", f.read()))
    for script in ("hyperopt_optimize.py", "hyperopt_worker.py", "mongo_search.py", "settings.py"):
        with open(os.path.join(ROOT, script)) as f:
            used |= set(re.findall(r"[\"']((?:HKS|MONGO_DB|EXPERIMENT)_[A-Z0-9_]+)[\"']", f.read()))
    used -= {"MONGO_DB_HOST", "MONGO_DB_PORT",  # set by docker-compose.yml itself: the hks_mongo_db service
             "HKS_WORKER_CHECKED"}  # set by a worker for its own per-trial processes
    assert used <= example_variables(), used - example_variables()
