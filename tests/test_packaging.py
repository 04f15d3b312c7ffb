"""The app works when installed from a wheel, not only from the checkout."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import inventory, inventory.paths as paths
assert inventory.__file__.startswith({target!r}), inventory.__file__
assert paths.templates_dir().is_dir() and (paths.templates_dir() / "base.html").is_file()
assert (paths.migrations_dir() / "env.py").is_file()
from click.testing import CliRunner
from inventory.cli import main
result = CliRunner().invoke(main, ["demo", "--no-serve"])
assert result.exit_code == 0, result.output
from inventory import create_app
client = create_app().test_client()
assert client.get("/login").status_code == 200
assert client.get("/healthz").get_json()["checks"]["migrations"] == "ok"
print("installed app ok")
"""


def test_wheel_ships_templates_migrations_and_data_and_runs_installed(tmp_path):
    wheel_dir, target, workdir = tmp_path / "wheel", tmp_path / "site", tmp_path / "run"
    workdir.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(wheel_dir), str(ROOT)], check=True, capture_output=True)
    wheel = next(wheel_dir.glob("planb-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("inventory/_templates/base.html", "inventory/_templates/impact/index.html",
                   "inventory/_migrations/env.py", "inventory/_migrations/versions/0001_initial_schema.py",
                   "inventory/data/demo_estate.yaml", "collectors/data/catalogue.yaml",
                   "inventory/static/planb.css"):
        assert needed in names, needed
    templates = {f"inventory/_templates/{p.relative_to(ROOT / 'templates').as_posix()}"
                 for p in (ROOT / "templates").rglob("*.html")}
    assert templates <= names, sorted(templates - names)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target), "PLANB_LOG_LEVEL": "ERROR"}
    env.pop("PLANB_DATABASE_URL", None)
    env.pop("PLANB_INSTANCE_PATH", None)
    result = subprocess.run([sys.executable, "-c", CHECK.format(target=str(target))], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "installed app ok" in result.stdout
