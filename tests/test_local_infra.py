"""local_infra/: the compose file is valid, keeps MongoDB off public interfaces, and .env.example has every variable;
the hks containers run as a non-root user.

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


# A real password, as a user sets it in local_infra/.env
PASSWORDS = {"MONGO_DB_PASSWORD": "search-8d3e6f0a2c"}


def compose_config(tmp_path, *args, quiet=False, **values):
    """docker-compose config with .env.example as local_infra/.env, its NAME=value lines set to values."""
    with open(os.path.join(INFRA, ".env.example")) as f:
        text = f.read()
    for name, value in values.items():
        text, n = re.subn(rf"^(# )?{name}=.*$", f"{name}={value}", text, flags=re.M)
        text += "" if n else f"\n{name}={value}\n"
    (tmp_path / ".env").write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in example_variables()}  # only the .env counts
    # --project-directory: where compose reads .env; the repository stays untouched
    return subprocess.run(["docker-compose", "--project-directory", str(tmp_path), "-f", COMPOSE, *args, "config",
                           *(["-q"] if quiet else [])], capture_output=True, text=True, timeout=120, env=env)


def compose_services(tmp_path, *args, **values):
    out = compose_config(tmp_path, *args, **{**PASSWORDS, **values})
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)["services"]


needs_compose = pytest.mark.skipif(shutil.which("docker-compose") is None,
                                   reason="docker-compose is not installed (.ci/run installs it)")


@needs_compose
def test_compose_file_is_valid(tmp_path):
    out = compose_config(tmp_path, quiet=True, **PASSWORDS)
    assert out.returncode == 0, out.stderr


@needs_compose
def test_mongodb_is_published_on_localhost_only_and_workers_scale(tmp_path):
    services = compose_services(tmp_path, "--profile", "gpus")
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


@needs_compose
def test_hks_containers_run_as_the_images_user(tmp_path):
    services = compose_services(tmp_path, "--profile", "gpus", HKS_UID="1234", HKS_GID="1235")
    for name, service in services.items():
        if name != "hks_mongo_db":
            assert "user" not in service, name  # no user: root, no user that would miss the build's UID
            assert service["build"]["args"] == {"HKS_UID": "1234", "HKS_GID": "1235"}, name


def dockerfile_instructions():
    with open(os.path.join(INFRA, "Dockerfile")) as f:
        text = re.sub(r"\\\n", " ", f.read())  # continued lines
    return [line.split(None, 1) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_ends_as_a_non_root_user_that_owns_the_work_folder():
    instructions = [(op.upper(), arg.strip()) for op, arg in dockerfile_instructions()]
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    user = users[-1]
    assert any(op == "RUN" and re.search(rf"\buseradd\b.*-u \"\$HKS_UID\".*\b{user}$", arg) for op, arg in instructions)
    assert {"HKS_UID=1000", "HKS_GID=1000"} <= {arg for op, arg in instructions if op == "ARG"}
    assert ("WORKDIR", "/hks") in instructions and ("RUN", f"chown {user}:{user} /hks") in instructions
    assert instructions.index(("USER", user)) > max(i for i, (op, _) in enumerate(instructions) if op == "COPY")


def test_env_example_has_every_variable():
    """What the compose file interpolates and what the driver and the workers read from the environment."""
    with open(COMPOSE) as f:
        used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", f.read()))
    for script in ("hyperopt_optimize.py", "hyperopt_worker.py", "mongo_search.py"):
        with open(os.path.join(ROOT, script)) as f:
            used |= set(re.findall(r"[\"']((?:HKS|MONGO_DB|EXPERIMENT)_[A-Z0-9_]+)[\"']", f.read()))
    used -= {"MONGO_DB_HOST", "MONGO_DB_PORT",  # set by docker-compose.yml itself: the hks_mongo_db service
             "HKS_WORKER_CHECKED"}  # set by a worker for its own per-trial processes
    assert used <= example_variables(), used - example_variables()


