"""The first model a process registers is as quiet as the later ones (issue 24).

MLflow's registry prints "Successfully registered model ..." / "Created version ..." on stderr;
the tracker switches MLflow's stream off around log_model, but a module that log_model loads
lazily (mlflow.types.responses) switched it back on as it loaded, so the first registration of
a fresh process (every `medgen train`) still printed both lines. A pytest process has loaded
that module long before, hence a fresh interpreter here.
"""

import subprocess
import sys

SCRIPT = """
import sys
from torch import nn
from medgen.tracking import MLflowTracker
t = MLflowTracker(sys.argv[1], artifact_root=sys.argv[2])
t.start("registry")
print(t.log_model(nn.Linear(2, 1), "model", registered_name="toy"))
t.end()
"""


def test_first_registration_of_a_fresh_process_prints_no_mlflow_lines(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, f"sqlite:///{tmp_path / 'r.db'}", (tmp_path / "art").as_uri()],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1"
    for line in ("Successfully registered model", "Created version", "already exists"):
        assert line not in out.stderr, out.stderr
