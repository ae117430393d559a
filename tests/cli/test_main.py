import subprocess
import sys
import time

import pytest

from fedscene.cli.main import main
from fedscene.common.config import load_config
from fedscene.simulations.configs import default_config_path


def test_help_runs_from_the_console_script():
    done = subprocess.run([sys.executable, "-m", "fedscene.cli.main", "--help"],
                          capture_output=True, text=True, check=True)
    assert "simulate" in done.stdout and "data" in done.stdout


def test_data_check_on_embedded_default(capsys):
    assert main(["data", "check"]) == 0
    out = capsys.readouterr().out
    assert "7 scenes pass the data contract" in out and "christmas" in out


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


def test_data_check_accepts_epoch_seconds_and_milliseconds(capsys, tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title,price\nx,red mug,1\ny,blue mug,2\n"
                                        "z,lamp,9\nw,tea,3\nv,cup,4\n")
    for name, scale in (("seconds", 1), ("millis", 1000)):
        rows = [("a", "x", 978300760), ("a", "y", 978387160), ("a", "z", 978473560),
                ("b", "w", 978300760), ("b", "v", 978387160), ("b", "y", 978473560)]
        (tmp_path / f"{name}.csv").write_text("user_id,item_id,timestamp,scene\n" + "".join(
            f"{u},{i},{t * scale},s\n" for u, i, t in rows))
        config = tmp_path / f"{name}.toml"
        config.write_text(f'[data]\nsource = "table"\npath = "{name}.csv"\n'
                          f'items_path = "items.csv"\nmin_users = 2\n')
        assert main(["data", "check", str(config)]) == 0, capsys.readouterr().out
        out = capsys.readouterr().out
        assert "2000-12-31" in out and "2001-01-02" in out and "1 scenes pass" in out


@pytest.mark.parametrize("name", ["default", "online_retail", "online_retail_transfer",
                                  "synthetic_shift"])
def test_packaged_configs_load(name):
    config = load_config(default_config_path().with_name(f"{name}.toml"))
    if name.startswith("online_retail"):  # the country configs say so: malls are the default
        assert config.data.scene_by == "country"


@pytest.mark.parametrize("overrides, key", [
    (['simulation.arms=["local", "fedper"]'], "transfer.source"),
    (["simulation.privacy_sweep=[1, 8]"], "simulation.privacy_sweep"),
    (["privacy.scenes.atlantis.epsilon=2"], "privacy.scenes"),
    (['alignment.unlabelled=["home"]'], "alignment.enabled"),
])
def test_simulate_refuses_cross_field_mistakes_before_any_work(overrides, key, tmp_path,
                                                                capsys):
    # The main job's config (transfer from fedavg) with one mistake: refused while loading
    # the config, before data is read or a run directory is written.
    started = time.perf_counter()
    code = main(["simulate", "--out", str(tmp_path / "run"),
                 *[a for o in overrides for a in ("--set", o)]])
    assert code == 2 and time.perf_counter() - started < 10
    out = capsys.readouterr().out
    assert key in out and len(out.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_simulate_refuses_a_budget_for_an_unknown_scene_once_scenes_are_known(tmp_path,
                                                                                capsys):
    code = main(["simulate", "--out", str(tmp_path / "run"), "--set", "data.scenes=[]",
                 "--set", "transfer.targets=[]", "--set", "privacy.scenes.atlantis.epsilon=2"])
    assert code == 2 and "privacy.scenes names ['atlantis']" in capsys.readouterr().out
