"""The Kubernetes base deploy/kubernetes, as `kubectl kustomize` renders it.

The rendered objects are validated against Kubernetes' schemas (kubernetes-validate),
checked for what must hold (workers in parallel, the dashboard inside the cluster, no
password in any manifest, the project's image, resources), compared with
docker-compose.yml's commands, and the `create-study` and `worker` Jobs' pods are run:
their init containers and containers, with the rendered `args` and `env`, as processes
against the local PostgreSQL of HPO_TEST_POSTGRES_URL.  As in the compose tests
(test_workers_postgres.py), only what points into the cluster is replaced: the password
from the Secret (none here), the host `postgres` in HPO_STORAGE, the volume at /artifacts,
and the study file baked into the image.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "deploy" / "kubernetes"
KUBECTL = shutil.which("kubectl")
POSTGRES_URL = os.environ.get("HPO_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: it renders deploy/kubernetes "
                                                        "(apt-get install kubernetes-client, or .ci/run)")
SECRET = "hpo-postgres"
# The storage URL every hpo container builds from the Secret's variable (Kubernetes expands $(NAME)).
CLUSTER_STORAGE = "postgresql+psycopg2://hpo:$(POSTGRES_PASSWORD)@postgres:5432/hpo"
STUDY_FILE_IN_IMAGE = "studies/fashion_mnist.toml"  # the Dockerfile copies studies/ to the image's /app


@pytest.fixture(scope="module")
def rendered_text() -> str:
    result = subprocess.run([KUBECTL, "kustomize", str(BASE)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def rendered(rendered_text) -> dict[tuple[str, str], dict]:
    """(kind, name) -> object."""
    return {(item["kind"], item["metadata"]["name"]): item for item in yaml.safe_load_all(rendered_text) if item}


def pod_spec(item: dict) -> dict:
    return item["spec"]["template"]["spec"]


def all_containers(item: dict) -> list[dict]:
    """The pod's init containers (in order) then its containers."""
    spec = pod_spec(item)
    return [*spec.get("initContainers", []), *spec["containers"]]


def runs_hpo(container: dict) -> bool:
    """Whether ``container`` runs ``hpo``: the image's entrypoint with ``args`` (the others, PostgreSQL's
    image, run their own entrypoint or a ``command``)."""
    return "args" in container and "command" not in container


def project_image() -> str:
    (image,) = yaml.safe_load((BASE / "kustomization.yaml").read_text())["images"]
    return f"{image['newName']}:{image['newTag']}"


def workloads(rendered) -> list[dict]:
    return [item for (kind, _), item in rendered.items() if kind in ("Job", "Deployment", "StatefulSet")]


def test_the_base_holds_what_compose_holds(rendered):
    assert set(rendered) == {("Service", "postgres"), ("StatefulSet", "postgres"), ("PersistentVolumeClaim", "artifacts"),
                             ("Job", "create-study"), ("Job", "worker"), ("Service", "dashboard"),
                             ("Deployment", "dashboard")}


def test_every_object_validates_against_the_kubernetes_schemas(rendered):
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate "
                                                                            "(the test extra)")
    version = kubernetes_validate.latest_version()
    for item in rendered.values():
        kubernetes_validate.validate(item, version, strict=True)  # raises ValidationError
    broken = {**rendered[("Job", "worker")], "spec": {**rendered[("Job", "worker")]["spec"], "parallelism": "four"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_the_worker_job_is_a_work_queue_of_parallel_workers(rendered):
    job = rendered[("Job", "worker")]["spec"]
    assert job["parallelism"] >= 2
    # A work queue: the first worker to exit 0 (the shared budget is met) completes the Job.
    assert "completions" not in job
    assert pod_spec(rendered[("Job", "worker")])["restartPolicy"] == "OnFailure"
    assert 1 <= job["backoffLimit"] <= 50
    (worker,) = pod_spec(rendered[("Job", "worker")])["containers"]
    environment = {variable["name"]: variable.get("value") for variable in worker["env"]}
    assert environment["HPO_BLAS_THREADS"] == "1" and environment["OMP_NUM_THREADS"] == "1"
    assert worker["resources"]["limits"]["cpu"] == worker["resources"]["requests"]["cpu"] == "1"
    # Above the measured peaks of a worker of the main jobs (563 and 548 MiB; see worker.yaml).
    assert worker["resources"]["limits"]["memory"] == worker["resources"]["requests"]["memory"] == "1Gi"


def test_nothing_is_exposed_outside_the_cluster(rendered):
    assert rendered[("Service", "dashboard")]["spec"]["type"] == "ClusterIP"
    assert rendered[("Service", "postgres")]["spec"]["clusterIP"] == "None"
    for (kind, name), item in rendered.items():
        assert kind != "Ingress"
        assert item.get("spec", {}).get("type", "ClusterIP") == "ClusterIP", (kind, name)
        if kind in ("Job", "Deployment", "StatefulSet"):
            assert not pod_spec(item).get("hostNetwork")
            assert all("hostPort" not in port for container in all_containers(item)
                       for port in container.get("ports", []))


def test_no_password_is_written_in_any_manifest(rendered, rendered_text):
    assert ("Secret", SECRET) not in rendered and not any(kind == "Secret" for kind, _ in rendered)
    assert "stringData" not in rendered_text
    for item in workloads(rendered):
        for container in all_containers(item):
            for variable in container.get("env", []):
                if "PASSWORD" in variable["name"]:
                    assert variable == {"name": variable["name"], "valueFrom": {"secretKeyRef": {
                        "name": SECRET, "key": "password"}}}
                if variable["name"] == "HPO_STORAGE":
                    assert variable["value"] == CLUSTER_STORAGE
                    assert sqlalchemy.engine.make_url(variable["value"]).password == "$(POSTGRES_PASSWORD)"
            # pg_isready needs no password; no command line carries one.
            assert not any("password" in part.lower() for part in container.get("command", []) + container.get("args", []))
    # The URL of every hpo container is built from the Secret's variable, which comes before it.
    for item in workloads(rendered):
        for container in filter(runs_hpo, all_containers(item)):
            names = [variable["name"] for variable in container["env"]]
            assert names.index("POSTGRES_PASSWORD") < names.index("HPO_STORAGE")


def test_every_hpo_container_runs_the_project_image_and_every_container_has_resources(rendered):
    image = project_image()
    database_image = pod_spec(rendered[("StatefulSet", "postgres")])["containers"][0]["image"]
    hpo_containers = 0
    for item in workloads(rendered):
        for container in all_containers(item):
            assert container["image"] == (image if runs_hpo(container) else database_image), container["name"]
            hpo_containers += runs_hpo(container)
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    assert hpo_containers == 5  # create-study; worker and dashboard: create-study (init) and themselves


def test_the_commands_are_compose_s(rendered):
    """The Kubernetes containers run docker-compose.yml's commands and set its hpo variables."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    pods = {"create-study": rendered[("Job", "create-study")], "worker": rendered[("Job", "worker")],
            "dashboard": rendered[("Deployment", "dashboard")]}
    for name, item in pods.items():
        (container,) = pod_spec(item)["containers"]
        compose_command = [re.sub(r"\$\{HPO_STUDY_FILE:-([^}]*)\}", r"\1", part) for part in services[name]["command"]]
        assert container["args"] == compose_command
        environment = {variable["name"]: variable.get("value") for variable in container["env"]}
        compose_environment = services[name]["environment"]
        assert set(environment) == {*compose_environment, "POSTGRES_PASSWORD"}
        assert {key: value for key, value in environment.items() if key not in ("HPO_STORAGE", "POSTGRES_PASSWORD")} \
            == {key: value for key, value in compose_environment.items() if key != "HPO_STORAGE"}
        if "HPO_ARTIFACT_DIR" in environment or name == "dashboard":  # the shared volume
            (mount,) = container["volumeMounts"]
            (volume,) = pod_spec(item)["volumes"]
            assert mount == {"name": volume["name"], "mountPath": "/artifacts"}
            assert volume["persistentVolumeClaim"]["claimName"] == "artifacts"
    assert rendered[("PersistentVolumeClaim", "artifacts")]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert (ROOT / STUDY_FILE_IN_IMAGE).is_file()


# ------------------------------------------------------------------ the Jobs' pods, run as processes
def expand(value: str, environment: dict[str, str]) -> str:
    """Kubernetes' $(NAME) expansion of an env value from the variables defined before it."""
    return re.sub(r"\$\((\w+)\)", lambda match: environment.get(match.group(1), match.group(0)), value)


def pod_processes(item: dict, console_scripts: Path, study_file: Path, artifacts: Path) -> list[list]:
    """The pod's containers in order, each as (argv, environment) to run on this machine."""
    server = sqlalchemy.engine.make_url(POSTGRES_URL)
    processes = []
    for container in all_containers(item):
        if runs_hpo(container):
            argv = [str(console_scripts / "hpo"), *container["args"]]
            assert argv.count(STUDY_FILE_IN_IMAGE) == 1  # the file baked into the image; here the test's own
            argv[argv.index(STUDY_FILE_IN_IMAGE)] = str(study_file)
        else:  # wait-for-database: pg_isready of the cluster's `postgres`, here of the local server
            script = container["command"][-1]
            assert container["command"][:2] == ["sh", "-c"] and "pg_isready -h postgres -p 5432" in script
            argv = [*container["command"][:2],
                    script.replace("-h postgres -p 5432", f"-h {server.host} -p {server.port or 5432}")]
        environment = {}
        for variable in container.get("env", []):
            if "valueFrom" in variable:  # the Secret's password: the local server takes none
                assert variable["valueFrom"]["secretKeyRef"]["name"] == SECRET
                environment[variable["name"]] = ""
            else:
                environment[variable["name"]] = expand(variable["value"], environment)
        if "HPO_STORAGE" in environment:
            assert environment["HPO_STORAGE"] == "postgresql+psycopg2://hpo:@postgres:5432/hpo"
            environment["HPO_STORAGE"] = POSTGRES_URL
        if "HPO_ARTIFACT_DIR" in environment:  # the ReadWriteMany volume; here a folder shared by the workers
            assert environment["HPO_ARTIFACT_DIR"] == "/artifacts"
            environment["HPO_ARTIFACT_DIR"] = str(artifacts)
        processes.append((argv, {**os.environ, **environment}))
    return processes


def start(argv_environment, cwd: Path) -> subprocess.Popen:
    argv, environment = argv_environment
    return subprocess.Popen(argv, env=environment, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_to_the_end(argv_environment, cwd: Path) -> str:
    process = start(argv_environment, cwd)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, (argv_environment[0], stderr)
    return stdout


@pytest.mark.usefixtures("postgres_lock")
@pytest.mark.skipif(not POSTGRES_URL, reason="set HPO_TEST_POSTGRES_URL to a PostgreSQL URL to run the Jobs' pods")
@pytest.mark.skipif(shutil.which("pg_isready") is None, reason="pg_isready (postgresql-client) runs the init containers")
def test_the_create_study_and_worker_jobs_run_the_study_to_its_budget(
        rendered, tmp_path, console_scripts, study_factory, worker_id, assert_each_trial_finished_by_one_worker):
    study_file, name = study_factory(trials=12, epochs=2)
    artifacts = tmp_path / "artifacts"
    # The create-study Job: its init container waits for the server, its container creates the study.
    for process in pod_processes(rendered[("Job", "create-study")], console_scripts, study_file, artifacts):
        output = run_to_the_end(process, tmp_path)
    assert output.startswith(f"study {name} in ") and "0 of 12 trials finished" in output
    # The worker Job: `parallelism` pods, each its init containers in turn, then the worker.
    job = rendered[("Job", "worker")]
    *init, worker = pod_processes(job, console_scripts, study_file, artifacts)
    workers = []
    for _ in range(job["spec"]["parallelism"]):
        for process in init:
            run_to_the_end(process, tmp_path)
        workers.append(start(worker, tmp_path))
    logs = {}
    for process in workers:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr  # each worker exits 0 once the shared budget is met
        logs[worker_id(process.pid)] = stderr
    trials = optuna.load_study(study_name=name, storage=POSTGRES_URL).get_trials()
    finished = [trial for trial in trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 12
    assert_each_trial_finished_by_one_worker(trials, logs)
    # Every worker wrote to the one artifact folder: the weights of every completed trial.
    completed = [trial for trial in finished if trial.state == TrialState.COMPLETE]
    assert completed and {path.name for path in artifacts.iterdir()} == {
        trial.user_attrs["weights_artifact_id"] for trial in completed}
