import subprocess
import sys
from pathlib import Path

import pytest

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


@pytest.mark.parametrize("script", ["pet_cgan.py", "eagan.py", "anogan.py", "dann_seg.py"])
def test_pipeline_uses_its_config_and_reports_bad_input_in_one_line(script, tmp_path):
    missing = tmp_path / "no_such_folder"
    proc = subprocess.run(
        [sys.executable, str(PIPELINES / script), f"data.root={missing}", "trainer.max_epochs=1"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0]
