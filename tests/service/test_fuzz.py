"""schemathesis against our own OpenAPI spec: generated requests, valid and not, never get
a 500 (a short, bounded run)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.conftest import ADMIN, start

ST = shutil.which("st") or str(Path(sys.executable).parent / "st")


@pytest.mark.slow
def test_no_generated_request_gets_a_server_error(fresh_ws, tmp_path):
    if not Path(ST).exists():
        pytest.skip("schemathesis is not installed (make dev installs it)")
    srv = start(fresh_ws, {"AVREC_RATE_LIMIT": "100000/second"})
    try:
        r = subprocess.run(
            [ST, "run", f"{srv.url}/openapi.json",
             "--checks", "not_a_server_error",
             "-H", f"Authorization: Bearer {ADMIN}",
             "--exclude-path-regex", "^/v1/admin/",  # a retraining per example is not a test
             "--phases", "examples,coverage,fuzzing",
             "--max-examples", "25", "--max-time", "120", "--seed", "1",
             "--request-timeout", "30", "--no-color",
             "--report", "junit", "--report-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,  # its cache goes there
        )  # fmt: skip
        out = r.stdout + r.stderr
        # the check is "no 500": schemathesis' own crashes (an IndexError inside hypothesis
        # on one operation, seen in 2 of 3 runs) are not the server's, and are reported
        assert "Server error" not in out and "[500]" not in out, out[-6000:]
        assert r.returncode == 0 or "Runtime Error" in out, out[-6000:]
        import xml.etree.ElementTree as ET

        report = ET.parse(next(tmp_path.glob("junit-*.xml"))).getroot()
        cases = list(report.iter("testcase"))
        assert len(cases) >= 15  # every operation was exercised
        assert "generated" in out
        log = srv.log.read_text()
        assert '"status": 500' not in log, log[-3000:]
    finally:
        srv.stop()
