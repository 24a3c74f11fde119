"""The page behind results/paper-static-drift.md (experiments.paper_drift), written from made-up metrics.json files
(no training): its tables, its computed figures, what it lists as missing, the reading it keeps, its refusals."""
import json
import os

import pytest

from experiments import paper_drift as drift

pytestmark = pytest.mark.study


def write(out, accuracy, macs, keep, params_over_cap=0.8, budget=0.255, history=(0.5, 0.9)):
    os.makedirs(out, exist_ok=True)
    metrics = {"accuracy": accuracy, "macs_ratio": macs, "keep_static": keep, "static_width_budget": 0.5,
               "static_params_ratio": 0.2 * params_over_cap, "param_cap": 0.2, "budget": budget,
               "history": [{"accuracy": a} for a in history]}
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f)


def folders(tmp_path):
    small, mcifarnet, diag = (str(tmp_path / name) for name in ("small", "mcifarnet", "diag"))
    for folder in (small, mcifarnet, diag):
        os.makedirs(folder)
    return small, mcifarnet, diag


def test_the_page_holds_each_run_its_figures_and_what_is_missing(tmp_path):
    small, mcifarnet, diag = folders(tmp_path)
    learned, held = [0.950, 0.940, 0.945], [0.962, 0.958, 0.960]
    for seed in range(3):
        write(f"{small}/paper-0.255-s{seed}", learned[seed], 0.22, [0.43, 0.45], 0.8)
        write(f"{diag}/paper-frozen-static-0.255-s{seed}", held[seed], 0.245 if seed else 0.2455, [0.5, 0.5004], 1.02)
        if seed < 2:
            write(f"{diag}/paper-target-0.255-s{seed}", learned[seed], 0.254, [0.5, 0.51], 0.99)
    write(f"{diag}/paper-frozen-static-0.08-s2", 0.844, 0.0737, [0.276] * 4, 1.05, 0.08, (0.404, 0.852))
    out = tmp_path / "drift.md"
    assert drift.main(["--small-dir", small, "--mcifarnet-dir", mcifarnet, "--diag-dir", diag,
                       "--out", str(out)]) == 0
    page = out.read_text()
    assert f"| small | `{small}/paper-0.255-s0` | 0.255 | 0.500 | 0.430 to 0.450 | 0.80 | 0.2200 | 0.9500 |" in page
    assert f"| mcifarnet | `{mcifarnet}/paper-0.08-s2` | 0.08 | missing |" in page
    assert "| 0.276 on every layer | 1.05 | 0.0737 | 0.8440 | 0.404, 0.852 |" in page
    assert "| 0.255 | 1 | 0.9400 | 0.2200 | 0.80 | 0.9580 | 0.2450 | 1.02 | +0.0180 |" in page
    assert "- Static parameters over their cap in the 3 default runs: 0.80 to 0.80; above 1 in 0;" in page
    assert "- small: 0 of 3 default runs end within 0.01 of their MACs budget on test; 3 under it." in page
    # held beats learned at every seed by more than either spread (0.0050 and 0.0020)
    assert ("- Held, budget 0.255: 0.9600 ± 0.0020 against learned 0.9450 ± 0.0050, +0.0150 against the larger "
            "seed-to-seed standard deviation 0.0050: beyond the spread (held higher in 3 of 3 seeds); mean test MACs "
            "0.2452 held (1 of 3 within 0.01 of the budget), 0.2200 learned.") in page
    assert "- Held, budget 0.15:" not in page       # no pair there: no verdict
    assert "| 0.255 | 0 | 0.9500 | 0.2200 | 0.80 | 0.9500 | 0.2540 | 0.99 | +0.0000 |" in page       # target
    assert "| 0.255 | 2 | 0.9450 | 0.2200 | 0.80 | missing |  |  |  |" in page
    assert "- Target, budget 0.255: 0.9450 ± 0.0071 against learned 0.9450 ± 0.0071, +0.0000" in page
    assert "--paper-lr-static 1e-9 --dataset mnist5k --model small --budget 0.08 --seed 2" in page


def test_made_again_the_page_keeps_its_hand_written_reading(tmp_path):
    small, mcifarnet, diag = folders(tmp_path)
    out = tmp_path / "drift.md"
    out.write_text("# old\n\nold tables\n\n## Reading\n\n- written by hand.\n")
    drift.main(["--small-dir", small, "--mcifarnet-dir", mcifarnet, "--diag-dir", diag, "--out", str(out)])
    page = out.read_text()
    assert "old tables" not in page and page.endswith("\n## Reading\n\n- written by hand.\n")
    assert page.count("## Reading") == 1 and "## Figures" in page


@pytest.mark.parametrize("broken", ["not json", json.dumps({"accuracy": 0.9, "macs_ratio": 0.1})])
def test_a_run_that_is_not_a_finished_paper_run_is_refused_with_one_line(tmp_path, capsys, broken):
    small, mcifarnet, diag = folders(tmp_path)
    os.makedirs(f"{small}/paper-0.15-s1")
    with open(f"{small}/paper-0.15-s1/metrics.json", "w") as f:
        f.write(broken)
    out = tmp_path / "drift.md"
    with pytest.raises(SystemExit) as stop:
        drift.main(["--small-dir", small, "--mcifarnet-dir", mcifarnet, "--diag-dir", diag, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and f"{small}/paper-0.15-s1" in err[0] and not out.exists()


def test_a_folder_that_does_not_exist_is_refused_before_anything_is_read(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        drift.main(["--small-dir", str(tmp_path / "none"), "--out", str(tmp_path / "drift.md")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and err == [f"experiments.paper_drift: error: --small-dir {tmp_path / 'none'}: no "
                                            f"such folder (give the folder that holds the runs)"]
