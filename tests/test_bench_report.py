"""benchmarks/report.py (rendering) and run_all.py (what runs): report assembly from fake
benchmark results (no benchmark runs)."""
import argparse
import datetime
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def run_all():
    return _load("run_all")


@pytest.fixture(scope="module")
def report():
    return _load("report")


FM_MD = """# FM benchmark: cfm vs xLearn vs modern_fm

| dataset | library | config | fit time (s) | scoring rows/s | metric |
|---|---|---|---:|---:|---|
| synthetic 50k | cfm | defaults | 0.12 | 5,086,833 | AUC 0.6712 |
| synthetic 50k | xlearn | defaults | 0.54 | 414,842 | AUC 0.5964 |
| synthetic 50k | cfm | best of lr grid (lr=0.1) | 0.13 | n/a | AUC 0.68 |
"""

PREDICT_MD = """| tool | rows | seconds | rows/s | peak RSS MB |
|---|---:|---:|---:|---:|
| cfm predict | 1,000,000 | 1.5 | 666,667 | 120 |
| xLearn predict | 1,000,000 | 9.0 | 111,111 | 900 |
"""


def fake(name, title, status="ok", markdown="", js=None, log=""):
    return {"name": name, "title": title, "script": f"bench_{name}.py", "status": status,
            "seconds": 3.0, "markdown": markdown, "json": js, "log_tail": log, "note": "",
            "command": f"python benchmarks/bench_{name}.py --quick"}


def test_markdown_helpers(report):
    tables = report.parse_md_tables("intro\n\n" + FM_MD + "\ntext\n" + PREDICT_MD)
    assert len(tables) == 2
    header, rows = tables[0]
    assert header[:2] == ["dataset", "library"] and len(rows) == 3
    assert rows[1]["scoring rows/s"] == "414,842"
    assert report.to_number("5,086,833") == 5086833
    assert report.to_number("AUC 0.6712") == 0.6712
    assert report.to_number("1.2x") == 1.2
    assert report.to_number("n/a") is None
    assert report.to_number("cfm") is None
    assert report.demote_headings("# A\ntext\n```\n# not a heading\n```") == \
        "### A\ntext\n```\n# not a heading\n```"


def test_report_assembly_with_failures_and_skips(run_all, report, tmp_path):
    results = [
        fake("fm", "FM training", markdown=FM_MD),
        fake("predict", "Batch scoring", markdown=PREDICT_MD),
        fake("outofcore", "Out of core", status="failed (exit code 1)",
             log="Traceback (most recent call last):\nValueError: boom"),
        dict(fake("mcmc", "MCMC", status="skipped"), note="bench_mcmc.py is absent"),
        fake("xlearn_import", "xLearn import", markdown="| a |\n|---|\n| 1 |", js={
            "rows": [{"kind": "FM", "rows": 1000, "max_abs_diff": 2e-6,
                      "xlearn_predict_s": 1.0, "cfm_parse_s": 0.2, "cfm_score_s": 0.1}]}),
    ]
    specs = run_all.benchmarks(2, tmp_path)
    plt = report._plt()
    figdir = tmp_path / "figures"
    report.make_figures(results, specs, figdir, plt)
    args = argparse.Namespace(quick=True, argv=["--quick"])
    out = tmp_path / "REPORT.md"
    text = report.build_report(results, specs, ["- CPU: test"], args, figdir, out, plt,
                               datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc))
    assert "# cfm benchmark report" in text
    assert "Quick smoke run" in text
    assert "- CPU: test" in text
    assert "| [outofcore](#outofcore) | failed (exit code 1) |" in text
    assert "ValueError: boom" in text
    assert "bench_mcmc.py is absent" in text
    assert "### FM benchmark" in text  # the script's own heading, demoted
    if plt is None:
        assert "matplotlib is not installed" in text
    else:
        pngs = sorted(p.name for p in figdir.glob("*.png"))
        assert "fm.png" in pngs and "xlearn_import.png" in pngs
        assert any(p.startswith("predict_") for p in pngs)  # generic plot of a parsed table
        assert "![fm](figures/fm.png)" in text


def test_report_renders_from_saved_outcomes_without_running(run_all, report, tmp_path):
    """run_all saves what it measured as JSON; report.py renders it alone."""
    results = [dict(fake("fm", "FM training", markdown=FM_MD), plot="fm"),
               dict(fake("predict", "Batch scoring", markdown=PREDICT_MD), plot="generic")]
    args = argparse.Namespace(quick=False, argv=["--only", "fm,predict"])
    started = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    outcomes = tmp_path / "results" / "run_all.json"
    report.save_outcomes(outcomes, results, ["- CPU: test"], args, started)
    assert report.main([str(outcomes)]) == 0
    text = (tmp_path / "results" / "REPORT.md").read_text()
    assert "`python benchmarks/run_all.py --only fm,predict`" in text
    assert "| [predict](#predict) | ok |" in text and "- CPU: test" in text
    # the runner's defaults: everything under benchmarks/results/
    assert run_all.RESULTS == ROOT / "benchmarks" / "results"
