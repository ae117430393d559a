import subprocess
import sys

from fedscene.simulations.cli import main


def test_help_runs_from_the_console_script():
    done = subprocess.run([sys.executable, "-m", "fedscene.simulations.cli", "--help"],
                          capture_output=True, text=True, check=True)
    assert "simulate" in done.stdout and "data" in done.stdout


def test_data_check_on_embedded_default(capsys):
    assert main(["data", "check"]) == 0
    out = capsys.readouterr().out
    assert "7 scenes pass the data contract" in out and "Portugal" in out


def test_bad_input_exits_non_zero_with_one_line(capsys, tmp_path):
    assert main(["data", "check", "--set", "data.source=online_retail",
                 "--set", f"data.path={tmp_path / 'missing.csv.gz'}"]) == 2
    out = capsys.readouterr().out.strip()
    assert "missing.csv.gz: Online Retail file not found" in out
    bad = tmp_path / "c.toml"
    bad.write_text("[data]\nscenes = ['Atlantis']\n")
    assert main(["data", "check", str(bad)]) == 2
    assert "unknown scene 'Atlantis'" in capsys.readouterr().out
    assert main(["simulate", str(bad), "--set", "federation.rounds=0"]) == 2
    assert "federation.rounds" in capsys.readouterr().out
