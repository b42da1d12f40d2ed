"""local_infra/: the compose file is valid, keeps MongoDB off public interfaces, and .env.example
has every variable; the search connects with its own read-write account, never root; no password
means no start, a placeholder is refused; the hks containers run as a non-root user.

Debian's docker-compose (apt, 1.29) validates a compose file without a Docker engine; .ci/run
installs it. MongoDB's container scripts run here with stubs of mongosh and of the image's
entrypoint (no server here).
"""
import json
import glob
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


# Real passwords, as a user sets them in local_infra/.env (.env.example ships none)
PASSWORDS = {"MONGO_ROOT_PASSWORD": "root-4f9c2a7e1b", "MONGO_DB_PASSWORD": "search-8d3e6f0a2c"}
ROOT_ACCOUNT = {"MONGO_ROOT_USER", "MONGO_ROOT_PASSWORD", "MONGO_INITDB_ROOT_USERNAME",
                "MONGO_INITDB_ROOT_PASSWORD"}


def compose_config(tmp_path, *args, quiet=False, **values):
    """docker-compose config with .env.example as local_infra/.env, its NAME=value lines set to
    values."""
    with open(os.path.join(INFRA, ".env.example")) as f:
        text = f.read()
    for name, value in values.items():
        text, n = re.subn(rf"^(# )?{name}=.*$", f"{name}={value}", text, flags=re.M)
        text += "" if n else f"\n{name}={value}\n"
    (tmp_path / ".env").write_text(text)
    # only the .env counts
    env = {k: v for k, v in os.environ.items() if k not in example_variables()}
    # --project-directory: where compose reads .env; the repository stays untouched
    return subprocess.run(["docker-compose", "--project-directory", str(tmp_path), "-f", COMPOSE,
                           *args, "config",
                           *(["-q"] if quiet else [])], capture_output=True, text=True, timeout=120,
                          env=env)


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
@pytest.mark.parametrize("unset", sorted(PASSWORDS))
def test_compose_file_is_refused_without_a_password(tmp_path, unset):
    """.env.example as it ships has no passwords: docker-compose stops, naming the one to set."""
    out = compose_config(tmp_path, quiet=True, **{k: v for k, v in PASSWORDS.items() if k != unset})
    assert out.returncode != 0 and f"set {unset} in local_infra/.env" in out.stderr, out.stderr
    assert compose_config(tmp_path, quiet=True).returncode != 0


@needs_compose
def test_mongodb_is_published_on_localhost_only_and_workers_scale(tmp_path):
    services = compose_services(tmp_path, "--profile", "gpus")
    assert sorted(services) == ["hks_hyperopt", "hks_hyperopt_worker", "hks_hyperopt_worker_gpu0",
                                "hks_hyperopt_worker_gpu1", "hks_mongo_db"]
    published = [(name, port) for name, s in services.items() for port in s.get("ports", [])]
    assert published == [("hks_mongo_db", "127.0.0.1:27017:27017/tcp")]
    # a fixed name would forbid --scale
    assert "container_name" not in services["hks_hyperopt_worker"]
    assert services[
        "hks_mongo_db"]["image"] == "mongo:7.0.14" and "healthcheck" in services["hks_mongo_db"]
    for name in ("hks_hyperopt", "hks_hyperopt_worker", "hks_hyperopt_worker_gpu0"):
        assert any(v.endswith(":/hks/results:rw") for v in services[name]["volumes"])
        assert any(v.endswith(":/hks/ml_req:ro") for v in services[name]["volumes"])
    gpus = services["hks_hyperopt_worker_gpu1"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpus == [{"driver": "nvidia", "device_ids": ["1"], "capabilities": ["gpu"]}]


@needs_compose
def test_mongodb_stays_on_localhost_when_no_address_is_set(tmp_path):
    with open(os.path.join(INFRA, ".env.example")) as f:
        assert re.search(r"^MONGO_DB_BIND=127\.0\.0\.1$", f.read(), flags=re.M)
    services = compose_services(tmp_path, MONGO_DB_BIND="")  # unset or empty: the default
    assert services["hks_mongo_db"]["ports"] == ["127.0.0.1:27017:27017/tcp"]


@needs_compose
def test_only_the_mongo_container_gets_the_root_account(tmp_path):
    services = compose_services(tmp_path, "--profile", "gpus")
    mongo = services.pop("hks_mongo_db")
    assert mongo["environment"]["MONGO_INITDB_ROOT_PASSWORD"] == PASSWORDS["MONGO_ROOT_PASSWORD"]
    # the account its init script makes is the one the driver and the workers use
    search_account = {k: mongo["environment"][k] for k in ("MONGO_DB_NAME", "MONGO_DB_USER",
                                                           "MONGO_DB_PASSWORD")}
    assert search_account == {"MONGO_DB_NAME": "hyperopt", "MONGO_DB_USER": "hks",
                              "MONGO_DB_PASSWORD": PASSWORDS["MONGO_DB_PASSWORD"]}
    for name, service in services.items():
        env = service["environment"]
        # it would pass all of local_infra/.env, root account included
        assert "env_file" not in service, name
        assert not ROOT_ACCOUNT & set(
            env) and PASSWORDS["MONGO_ROOT_PASSWORD"] not in env.values(), name
        assert search_account.items() <= env.items(), name


@needs_compose
def test_mongo_container_checks_the_passwords_then_makes_the_search_account(tmp_path):
    mongo = compose_services(tmp_path)["hks_mongo_db"]
    assert mongo["entrypoint"] == ["bash",
                                   "/hks/mongo_entrypoint.sh"] and mongo["command"] == ["mongod"]
    mounts = {v.split(":")[1]: v for v in mongo["volumes"]}
    assert mounts[
        "/hks/mongo_entrypoint.sh"].endswith("/mongo_entrypoint.sh:/hks/mongo_entrypoint.sh:ro")
    init = [target for target in mounts if target.startswith("/docker-entrypoint-initdb.d/")]
    # .sh: sourced by the image's entrypoint
    assert init == ["/docker-entrypoint-initdb.d/hks_user.sh"]
    assert mounts[init[0]].startswith(str(tmp_path / "mongo_init_user.sh") + ":")


@needs_compose
def test_hks_containers_run_as_the_images_user(tmp_path):
    services = compose_services(tmp_path, "--profile", "gpus", HKS_UID="1234", HKS_GID="1235")
    for name, service in services.items():
        if name != "hks_mongo_db":
            # no user: root, no user that would miss the build's UID
            assert "user" not in service, name
            assert service["build"]["args"] == {"HKS_UID": "1234", "HKS_GID": "1235"}, name


def dockerfile_instructions():
    with open(os.path.join(INFRA, "Dockerfile")) as f:
        text = re.sub(r"\\\n", " ", f.read())  # continued lines
    return [line.split(None, 1) for line in text.splitlines() if line.strip()
            and not line.lstrip().startswith("#")]


def test_dockerfile_ends_as_a_non_root_user_that_owns_the_work_folder():
    instructions = [(op.upper(), arg.strip()) for op, arg in dockerfile_instructions()]
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    user = users[-1]
    assert any(op == "RUN" and re.search(rf"\buseradd\b.*-u \"\$HKS_UID\".*\b{user}$", arg)
               for op, arg in instructions)
    assert {"HKS_UID=1000", "HKS_GID=1000"} <= {arg for op, arg in instructions if op == "ARG"}
    assert ("WORKDIR", "/hks") in instructions
    assert ("RUN", f"chown {user}:{user} /hks") in instructions
    assert instructions.index(("USER", user)) > max(i for i, (op, _) in enumerate(instructions)
                                                    if op == "COPY")


def test_env_example_has_every_variable():
    """What the compose file interpolates and what the driver and the workers read from the
    environment."""
    with open(COMPOSE) as f:
        used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", f.read()))
    # every module of the driver and the workers
    for script in glob.glob(os.path.join(ROOT, "*.py")):
        with open(script) as f:
            used |= set(re.findall(r"[\"']((?:HKS|MONGO_DB|EXPERIMENT)_[A-Z0-9_]+)[\"']", f.read()))
    # set by docker-compose.yml itself: the hks_mongo_db service
    used -= {"MONGO_DB_HOST", "MONGO_DB_PORT",
             "HKS_WORKER_CHECKED",  # set by a worker for its own per-trial processes
             # ml_req/ is mounted read-only in the containers: no download to turn off
             "HKS_NO_DOWNLOAD"}
    assert used <= example_variables(), used - example_variables()


def test_hks_containers_get_every_variable_the_code_reads():
    """docker-compose.yml lists what the driver and the workers get (no env_file): nothing may be
    left out."""
    with open(COMPOSE) as f:
        passed = set(yaml.safe_load(f)["services"]["hks_hyperopt_worker"]["environment"])
    for script in glob.glob(os.path.join(ROOT, "*.py")):
        with open(script) as f:
            read = set(re.findall(r"[\"']((?:HKS|MONGO_DB|EXPERIMENT)_[A-Z0-9_]+)[\"']", f.read()))
        read -= {"HKS_WORKER_CHECKED", "HKS_NO_DOWNLOAD"}  # see test_env_example_has_every_variable
        assert read <= passed, (script, read - passed)


def stub(folder, name, body):
    path = folder / name
    path.write_text(body)
    path.chmod(0o755)


MONGO_ENV = {"MONGO_INITDB_ROOT_USERNAME": "admin",
             "MONGO_INITDB_ROOT_PASSWORD": PASSWORDS["MONGO_ROOT_PASSWORD"],
             "MONGO_DB_NAME": "hyperopt", "MONGO_DB_USER": "hks",
             "MONGO_DB_PASSWORD": PASSWORDS["MONGO_DB_PASSWORD"]}


def run_mongo_entrypoint(tmp_path, **changes):
    """local_infra/mongo_entrypoint.sh, with a stub of the mongo image's entrypoint that says it
    started."""
    stub(tmp_path, "docker-entrypoint.sh", '#!/bin/sh\necho "image entrypoint: $*"\n')
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", **MONGO_ENV, **changes}
    return subprocess.run(["bash", os.path.join(INFRA, "mongo_entrypoint.sh"), "mongod"], env=env,
                          capture_output=True, text=True, timeout=30)


def test_mongo_entrypoint_starts_mongodb_with_real_passwords(tmp_path):
    out = run_mongo_entrypoint(tmp_path)
    assert (out.returncode, out.stdout, out.stderr) == (0, "image entrypoint: mongod\n", "")


@pytest.mark.parametrize("name, value, error", [
    # the old example
    ("MONGO_DB_PASSWORD", "change-this-password", "MONGO_DB_PASSWORD is a placeholder"),
    ("MONGO_ROOT_PASSWORD", "Change-Me-Please-1", "MONGO_ROOT_PASSWORD is a placeholder"),
    ("MONGO_DB_PASSWORD", "", "set MONGO_DB_PASSWORD in local_infra/.env"),
    ("MONGO_DB_PASSWORD", "hks12345", "MONGO_DB_PASSWORD is shorter than 12 characters"),
    ("MONGO_DB_PASSWORD", PASSWORDS["MONGO_ROOT_PASSWORD"],
     "MONGO_DB_PASSWORD and MONGO_ROOT_PASSWORD are the same"),
    ("MONGO_DB_USER", "admin", "MONGO_DB_USER and MONGO_ROOT_USER are the same name"),
])
def test_mongo_entrypoint_refuses_placeholders_in_one_line(tmp_path, name, value, error):
    container_name = {"MONGO_ROOT_PASSWORD": "MONGO_INITDB_ROOT_PASSWORD"}.get(name, name)
    out = run_mongo_entrypoint(tmp_path, **{container_name: value})
    # MongoDB never started: no account was made
    assert out.returncode == 1 and out.stdout == "", out
    assert out.stderr.startswith(f"error: {error}") and out.stderr.count("\n") == 1, out.stderr


def test_mongo_init_script_makes_a_read_write_account_on_the_search_database_only(tmp_path):
    """The mongo image sources the script (set -Eeuo pipefail) on the first start; mongosh is a stub
    that records its arguments. Node, where installed, runs the script's JavaScript on a stand-in
    db."""
    stub(tmp_path, "mongosh", '#!/usr/bin/env python3\nimport json, os, sys\n'
                              'json.dump(sys.argv[1:], open(os.environ["STUB_LOG"], "w"))\n'
                              'sys.exit(int(os.environ.get("STUB_RC", "0")))\n')
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
           "STUB_LOG": str(tmp_path / "argv.json"), **MONGO_ENV}
    source = ["bash", "-c", 'set -Eeuo pipefail; . "$0"', os.path.join(INFRA, "mongo_init_user.sh")]
    out = subprocess.run(source, env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "hks: MongoDB user hks may read and write database hyperopt only" in out.stdout
    with open(tmp_path / "argv.json") as f:
        argv = json.load(f)
    assert argv[:2] == ["--quiet", "mongodb://127.0.0.1:27017/admin"] and argv[2] == "--eval", argv
    # passwords stay off command lines
    assert not any(p in " ".join(argv) for p in PASSWORDS.values())
    failed = subprocess.run(source, env={**env, "STUB_RC": "1"}, capture_output=True, text=True,
                            timeout=30)
    # the image's start stops
    assert failed.returncode != 0 and "may read and write" not in failed.stdout

    if shutil.which("node") is None:
        pytest.skip("node is not installed: the JavaScript was not run")
    stand_in = ("const calls = [];\nconst db = {auth: (...a) => calls.push(['auth', ...a]),\n"
                "            createUser: (doc) => calls.push(['createUser', doc])};\n"
                f"{{\n{argv[3]}\n}}\nconsole.log(JSON.stringify(calls));\n")
    node = subprocess.run(["node", "-e", stand_in], env=env, capture_output=True, text=True,
                          timeout=30)
    assert node.returncode == 0, node.stderr
    assert json.loads(node.stdout) == [
        ["auth", "admin", PASSWORDS["MONGO_ROOT_PASSWORD"]],
        ["createUser", {"user": "hks", "pwd": PASSWORDS["MONGO_DB_PASSWORD"],
                        # in admin: see the script
                        "roles": [{"role": "readWrite", "db": "hyperopt"}]}]]
