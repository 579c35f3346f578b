"""Runs scenario.sh (the aws CLI v1 P0 scenario, lattice.md §8.4) against the server under test."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def find_aws():
    """Prefer the `aws` installed next to this interpreter (the suite's virtualenv)."""
    beside = Path(sys.executable).parent / "aws"
    if beside.exists():
        return str(beside)
    return shutil.which("aws")


def test_cli_scenario(endpoint):
    aws = find_aws()
    assert aws, ("the aws CLI v1 is required and was not found next to this Python or on PATH; "
                 "install the suite's requirements: pip install -r conformance/requirements.txt")
    env = dict(os.environ)
    env["TRELLIS_ENDPOINT"] = endpoint
    env["PATH"] = f"{Path(aws).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(["bash", str(HERE / "scenario.sh")], env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, (f"scenario.sh failed (exit {proc.returncode})\n--- stdout ---\n{proc.stdout}"
                                  f"\n--- stderr ---\n{proc.stderr}")
    assert "scenario: OK" in proc.stdout
