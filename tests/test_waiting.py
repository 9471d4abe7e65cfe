"""The driver says what it waits for when a step takes long, and nothing when it does not."""

import io
import threading

from raysparse.waiting import still_waiting


def test_a_long_wait_is_said_with_its_seconds_and_a_short_one_is_silent():
    out, release = io.StringIO(), threading.Event()
    with still_waiting("building data (data.factory 'pkg:load')", after=0.05, every=0.05, stream=out):
        while out.getvalue().count("\n") < 2:  # the block waits until it has been told twice
            release.wait(0.01)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2
    assert all(line.startswith("raysparse: still building data (data.factory 'pkg:load'): ") and
               line.endswith(" s") for line in lines)
    quiet = io.StringIO()
    with still_waiting("reading", after=60, stream=quiet):
        pass
    assert quiet.getvalue() == ""
    assert not any(t.name == "raysparse-still-waiting" for t in threading.enumerate())  # the thread ended


def test_the_cli_says_what_it_waits_for_while_a_data_factory_hangs(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    (tmp_path / "slowdata.py").write_text(
        "import time\nimport torch\nfrom torch.utils.data import TensorDataset\n\n\ndef load():\n"
        "    time.sleep(2.5)  # a slow disk\n"
        "    x, y = torch.randn(40, 4), torch.arange(40) % 2\n"
        "    return {'train': TensorDataset(x[:30], y[:30]), 'test': TensorDataset(x[30:], y[30:])}\n")
    config = {"epochs": 1, "measure_latency": False, "model": {"name": "mlp", "hidden": [8]},
              "data": {"factory": "slowdata:load", "batch_size": 8}, "sparsity": {"method": "dense"}}
    (tmp_path / "slow.yaml").write_text(yaml.safe_dump(config))
    cli = Path(sys.executable).parent / "raysparse"
    done = subprocess.run([str(cli), "train", str(tmp_path / "slow.yaml")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "RAYSPARSE_STILL_WAITING_S": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "raysparse: still checking the model and data before training (building them once here): " in done.stderr
