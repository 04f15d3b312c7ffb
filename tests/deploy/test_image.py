"""The container image recipe: hadolint-clean, in step with deploy/image-steps.sh, and that script's
`all` mode really builds, installs, warms up and serves the app (no container daemon needed)."""
from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from inventory import config
from tests.deploy.helpers import ROOT

DOCKERFILE = ROOT / "Dockerfile"
SCRIPT = ROOT / "deploy" / "image-steps.sh"
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped.rstrip("\\").strip() if pending else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, rest = pending.partition(" ")
            out.append((keyword.upper(), rest.strip()))
            pending = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    values = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                values[key] = value
    return values


def image_steps_calls() -> list[list[str]]:
    """Each `planb-image-steps STEP ARGS...` the Dockerfile runs, in order."""
    calls = []
    for keyword, rest in instructions():
        if keyword == "RUN":
            for command in re.split(r"&&|;", rest):
                words = shlex.split(command)
                words = [w for w in words if not w.startswith("--mount=")]
                if words and words[0] == "planb-image-steps":
                    calls.append(words[1:])
    return calls


def script_all_steps() -> list[str]:
    body = SCRIPT.read_text().split("step_all() {", 1)[1].split("\n}\n", 1)[0]
    return [name.replace("_", "-") for name in re.findall(r"^\s*step_(\w+) ", body, re.M)]


def test_hadolint_is_clean():
    result = subprocess.run([str(HADOLINT), "--format", "json", str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout or "[]") == []


def test_hadolint_really_lints():
    # The same linter flags a careless Dockerfile, so a clean result above means something.
    bad = "FROM python:latest\nRUN apt-get install gcc\nRUN cd /src && pip install .\n"
    result = subprocess.run([str(HADOLINT), "--format", "json", "-"], input=bad, capture_output=True,
                            text=True, timeout=60)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3007", "DL3008", "DL3003"} <= codes and result.returncode != 0


def test_the_dockerfile_runs_the_scripts_steps_in_the_order_all_runs_them():
    assert [call[0] for call in image_steps_calls()] == script_all_steps() \
        == ["wheels", "install", "warm-up", "check-cache"]


def test_paths_and_settings_agree_between_the_steps_and_the_runtime_environment():
    wheels, runtime = stages()
    assert wheels[0][1].endswith("AS wheels")
    calls = {call[0]: call[1:] for call in image_steps_calls()}
    env = env_of(runtime)
    venv, cache = calls["install"][1], calls["warm-up"][1]
    assert calls["wheels"] == ["/src", "/wheels"] and calls["install"][0] == "/wheels"
    assert calls["warm-up"] == calls["check-cache"] == [venv, cache]
    assert env["NUMBA_CACHE_DIR"] == cache                 # the runtime loads what the build compiled
    assert env["PATH"].split(":")[0] == f"{venv}/bin"      # `planb` and `python` are the venv's
    script = SCRIPT.read_text()
    assert f'NUMBA_CPU_NAME="${{NUMBA_CPU_NAME:-{env["NUMBA_CPU_NAME"]}}}"' in script
    # The wheels stage mounts into the install step exactly where the wheels were built.
    assert any("from=wheels,source=/wheels,target=/wheels" in rest for kw, rest in runtime if kw == "RUN")


def test_what_is_installed_is_planb_with_its_redis_extra():
    script = SCRIPT.read_text()
    assert 'REQUIREMENT="planb[redis]"' in script
    assert '"${src}[redis]"' in script and "--no-index --find-links" in script
    import tomllib
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "redis" in extras


def test_the_runtime_stage():
    runtime = stages()[-1]
    base = runtime[0][1]
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim-\w+", base), base
    text = " ".join(rest for _kw, rest in runtime).lower()
    for compiler in ("gcc", "g++", "build-essential", "clang", "apt-get install"):
        assert compiler not in text   # no compilers (nor anything else) installed into the runtime
    keywords = dict((kw, rest) for kw, rest in runtime)
    assert keywords["USER"].split(":")[0] not in ("0", "root")
    assert json.loads(keywords["ENTRYPOINT"]) == ["planb"] and json.loads(keywords["CMD"]) == ["serve"]
    assert "/healthz" in (ROOT / "deploy" / "healthcheck.py").read_text()
    assert keywords["HEALTHCHECK"].endswith('CMD ["python", "/opt/planb/healthcheck.py"]')
    assert keywords["EXPOSE"] == env_of(runtime)["PLANB_PORT"]


def test_every_planb_variable_of_the_image_is_a_setting_that_parses():
    env = env_of(stages()[-1])
    planb = {key: value for key, value in env.items() if key.startswith(config.ENV_PREFIX)}
    assert planb["PLANB_HOST"] == "0.0.0.0"   # reachable from outside the container
    for key, value in planb.items():
        config.parse(key[len(config.ENV_PREFIX):], value)


def test_the_build_context_holds_what_the_dockerfile_copies():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        verdict = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            body = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, body) or path.startswith(body + "/") or \
                    fnmatch.fnmatch(path, body.replace("**/", "*/")):
                verdict = not negate
        return verdict

    for keyword, rest in instructions():
        if keyword == "COPY" and "--from" not in rest:
            for source in shlex.split(rest)[:-1]:
                assert (ROOT / source).exists(), source
                assert not ignored(source), f"{source} is left out of the build context by .dockerignore"
    assert ignored(".venv") and ignored("tests") and ignored(".git")


@pytest.mark.slow
def test_image_steps_build_install_warm_up_and_serve(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT), "all", str(tmp_path / "image")], capture_output=True,
                            text=True, timeout=1500, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-6000:]
    assert "numba cache: 3 loaded, 0 compiled" in result.stdout
    assert "all steps passed" in result.stderr
