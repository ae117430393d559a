"""The main job as a user runs it: `fedscene simulate` with the packaged default config
(category malls of the embedded slice, a held-out mall, the in-run audit), shrunk to one
round and two malls so that CI can afford it, and its HTML report opened in a real
headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fedscene.cli.main import main
from fedscene.common.config import load_config
from fedscene.simulations.configs import default_config_path

pytestmark = pytest.mark.integration

SHRINK = ["federation.rounds=1", 'data.scenes=["toys", "bags"]',
          'transfer.shots=[0, 10, 100, "all"]', "simulation.bootstrap_samples=200"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("main-job") / "run"
    args = ["simulate", "--out", str(out)]
    for assignment in SHRINK:
        args += ["--set", assignment]
    assert main(args) == 0
    return out


def test_default_config_is_the_mission():
    config = load_config(default_config_path())
    assert config.data.source == "embedded" and config.data.scene_by == "category"
    assert config.transfer.targets == ["christmas"]
    assert config.transfer.shots == [0, 10, 100, 1000, "all"]
    assert config.privacy.enabled and config.privacy.unit == "shopper"
    assert not config.privacy.reproducible_noise


def test_results_hold_transfer_gains_intervals_flags_and_the_audit(run):
    results = json.loads((run / "results.json").read_text())
    assert [s["scene"] for s in results["scenes"]] == ["toys", "bags"]
    assert all(s["test_users"] >= 300 for s in results["scenes"])
    transfer = results["transfer"]["christmas"]
    assert set(transfer["shots"]) == {"0", "10", "100", "all"}
    for k, entry in transfer["shots"].items():
        arms = {"local", "zeroshot"} if k == "0" else {"local", "probe", "finetune"}
        assert set(entry["metrics"]) == arms, k
        for arm in arms - {"local"}:
            g = entry["gain"][arm]["full-hr@10"]
            assert g["low"] <= g["mean"] <= g["high"]
            assert g["verdict"] in ("gain", "loss", "no clear difference")
    assert isinstance(results["negative_transfer"], list)
    assert {f["arm"] for f in results["negative_transfer"]} <= {"zeroshot", "probe", "finetune"}
    efficiency = transfer["label_efficiency"]
    assert set(efficiency) == {"local", "zeroshot", "probe", "finetune"}
    # An arm is credited at k only if it used k labels: none adapted at k = 10.
    assert all(entry["k"] != "10" for entry in efficiency.values())
    # k = 10 is a shopper or two, fewer than privacy.min_units: nothing adapts under DP and
    # nothing is spent; with all the data local, probe and finetune each spend.
    assert transfer["shots"]["10"]["privacy"] == {}
    assert set(transfer["shots"]["all"]["privacy"]) == {"local", "probe", "finetune"}
    # Every ledger the run wrote was audited: 3 arms x 2 malls, and each adaptation that
    # spent privacy.
    audit = results["audit"]
    adapted = sum(len(spent) for entry in transfer["shots"].values()
                  for spent in entry["privacy"].values())
    assert audit["ledgers"] == 3 * 2 + adapted
    assert audit["passed"] is True
    assert (run / "audit.md").exists()
    assert sum(count for count in results["shopper_scenes"].values()) > 0


def test_report_opens_with_the_verdict(run):
    report = (run / "report.md").read_text()
    verdict = report.split("## Verdict", 1)[1].split("## Setting", 1)[0]
    for question in ("Did federation help?", "How did the new scene `christmas` start?",
                     "What did it cost in privacy?", "Audit:"):
        assert question in verdict, question
    assert "PASS" in verdict
    assert report.index("## Verdict") < report.index("## Scenes")
    assert "Label efficiency" in report and "## Privacy audit" in report


def test_html_report_is_self_contained(run):
    page = (run / "report.html").read_text()
    assert 'src="data:image/png;base64,' in page
    assert not re.search(r'src="[^"]*\.png"', page)  # no file referenced
    assert '<h2 id="verdict">Verdict</h2>' in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium not installed")
def test_html_report_renders_its_plots_in_chromium(run, tmp_path):
    page = (run / "report.html").read_text()
    # Load a copy in a real browser, with nothing beside it, and let the page say whether
    # every plot decoded: a broken image has naturalWidth 0.
    alone = tmp_path / "report.html"
    alone.write_text(page.replace("</body>", """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  const drawn = images.filter(i => i.complete && i.naturalWidth > 100).length;
  document.body.setAttribute('data-plots', drawn + '/' + images.length);
});</script></body>"""))
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         "--dump-dom", alone.as_uri()], capture_output=True, text=True, timeout=120, check=True)
    marker = dom.stdout.split('data-plots="', 1)[1].split('"', 1)[0]
    drawn, total = map(int, marker.split("/"))
    assert total >= 4 and drawn == total, marker
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    "--window-size=1280,2000", f"--screenshot={shot}", alone.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 20_000  # a page with text and plots, not a blank one
