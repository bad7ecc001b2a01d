""".ci/run, the CI entry point, run with stand-ins for python3, python, pip and pytest: it must exit non-zero
when the install or any test run fails, stop there, and remove the environment it made.

A failed `pip install -e ".[test]"` once let the script go on and exit 0 (bash's `set -e` ignores a failure
in an `&&` list but for its last command), and every run left its 1.5 GB environment in the temp folder.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

CI_SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "run"

pytestmark = [
    pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash"),
    pytest.mark.skipif(not CI_SCRIPT.exists(), reason=".ci/run is not next to the tests (installed package)"),
]

# Each stand-in logs its command line; pip and pytest exit with the status the test asks for.
STAND_INS = {
    "python3": """#!/bin/sh
echo "python3 $*" >> "$CI_LOG"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then mkdir -p "$3/bin" && : > "$3/bin/activate"; fi
""",
    "python": '#!/bin/sh\necho "python $*" >> "$CI_LOG"\n',
    "pip": '#!/bin/sh\necho "pip $*" >> "$CI_LOG"\nexit "$PIP_STATUS"\n',
    "pytest": """#!/bin/sh
echo "pytest $*" >> "$CI_LOG"
if [ -n "$NUMBA_DISABLE_JIT" ]; then exit "$NOJIT_PYTEST_STATUS"; fi
exit "$PYTEST_STATUS"
""",
}


def run_ci(tmp_path, pip=0, pytest_status=0, nojit_pytest=0):
    """Run a copy of .ci/run in a scratch checkout; returns (exit status, logged commands, temp folder)."""
    checkout = tmp_path / "checkout"
    (checkout / ".ci").mkdir(parents=True)
    shutil.copy(CI_SCRIPT, checkout / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in STAND_INS.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    temp = tmp_path / "temp"
    temp.mkdir()
    log = tmp_path / "log"
    log.touch()
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "TMPDIR": str(temp),
        "CI_LOG": str(log),
        "PIP_STATUS": str(pip),
        "PYTEST_STATUS": str(pytest_status),
        "NOJIT_PYTEST_STATUS": str(nojit_pytest),
        "HOME": str(tmp_path),
    }
    done = subprocess.run(["bash", ".ci/run"], cwd=checkout, env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, log.read_text().splitlines(), temp


def test_passes_when_everything_passes_and_runs_both_test_commands(tmp_path):
    status, commands, _ = run_ci(tmp_path)
    assert status == 0
    assert [c for c in commands if c.startswith(("pip", "pytest"))] == [
        "pip install -e .[test]",
        "pytest -q -p no:cacheprovider",
        "pytest -q -p no:cacheprovider -m not slow tests/test_kernels_layer_norm.py",
    ]


@pytest.mark.parametrize(
    "failure,ran",
    [
        ({"pip": 3}, ["pip"]),  # the install fails: no test runs, and the script says so
        ({"pytest_status": 1}, ["pip", "pytest"]),  # the suite fails: the no-JIT subset does not run
        ({"nojit_pytest": 2}, ["pip", "pytest", "pytest"]),  # the no-JIT subset fails
    ],
)
def test_any_failure_ends_the_run_with_a_non_zero_status(tmp_path, failure, ran):
    status, commands, _ = run_ci(tmp_path, **failure)
    assert status != 0
    assert [c.split()[0] for c in commands if c.startswith(("pip", "pytest"))] == ran


@pytest.mark.parametrize("failure", [{}, {"pip": 3}, {"pytest_status": 1}])
def test_the_environment_it_made_is_removed_pass_or_fail(tmp_path, failure):
    _, commands, temp = run_ci(tmp_path, **failure)
    assert any(c.startswith("python3 -m venv") for c in commands)
    assert list(temp.iterdir()) == []
