"""`harness report` on two real runs (SmolLM2 and its int8 variant): the tables' numbers, the files it writes, and
the HTML page in a real headless Chromium (no console errors, no network, sorting, drill-down, a screenshot)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # two `harness run` processes on the real model, and a browser
TASKS = "mmlu_anatomy,mmlu_astronomy,cola,sst2"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output"  # kept for people and CI artifacts


def harness(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two runs of the same tasks, the reference model and :int8, and the report comparing them."""
    folder = tmp_path_factory.mktemp("report")
    runs = []
    for spec in ("smollm2-135m", "smollm2-135m:int8"):
        out = folder / spec.replace(":", "-")
        # --no-cache: the report shows systems figures, which only computed responses have.
        result = harness("run", "--model", spec, "--tasks", TASKS, "--limit", 6, "--output", out, "--no-cache")
        assert result.returncode == 0, result.stderr
        runs.append(out)
    result = harness("report", *runs, "--output", folder / "report")
    assert result.returncode == 0, result.stderr
    return runs, folder / "report"


def test_tables_hold_every_task_with_its_interval(report):
    runs, output = report
    assert sorted(p.name for p in output.iterdir()) == ["comparison.csv", "glue.csv", "mmlu.csv", "quality.csv",
                                                         "report.html", "report.md", "side_by_side.csv", "systems.csv"]
    record = json.loads((runs[0] / "results.json").read_text())
    quality = pd.read_csv(output / "quality.csv")
    ours = quality[quality.run == "smollm2-135m"].set_index(["task", "metric"])
    for task, values in record["results"].items():
        for metric in [m for m in values if m not in ("n", "members", "aggregation")
                       and not m.endswith(("_stderr", "_ci95"))]:
            row = ours.loc[(task, metric)]
            assert row.value == pytest.approx(values[metric])
            # The interval the run recorded (Wilson's for accuracy at n = 6), not value +- 1.96 stderr.
            low, high = values[metric + "_ci95"] or (float("nan"), float("nan"))
            assert row.ci95_low == pytest.approx(low, nan_ok=True) and row.ci95_high == pytest.approx(high, nan_ok=True)
    mmlu = pd.read_csv(output / "mmlu.csv")
    assert set(zip(mmlu.subject, mmlu.category)) == {("anatomy", "stem"), ("astronomy", "stem")}
    assert set(pd.read_csv(output / "glue.csv").task) == {"cola", "sst2"}
    comparison = pd.read_csv(output / "side_by_side.csv").set_index("run")
    assert comparison.loc["smollm2-135m:int8", "bytes"] < 0.5 * comparison.loc["smollm2-135m", "bytes"]
    assert comparison.loc["smollm2-135m:int8", "variant"] == "int8"
    assert (comparison["prefill tok/s"] > 0).all() and (comparison["peak RSS bytes"] > 100 << 20).all()
    assert comparison.loc["smollm2-135m", "mmlu_anatomy acc"] == pytest.approx(record["results"]["mmlu_anatomy"]["acc"])
    systems = pd.read_csv(output / "systems.csv")
    assert set(systems.scope) == {"mmlu_anatomy", "mmlu_astronomy", "cola", "sst2", "run"}
    markdown = (output / "report.md").read_text()
    assert "## MMLU by subject and category" in markdown and "| smollm2-135m:int8" in markdown
    # The paired comparison with the first run opens the report (tests/test_report_comparison.py checks its rows).
    paired = pd.read_csv(output / "comparison.csv")
    assert set(paired.run) == {"smollm2-135m:int8"} and paired.role.iloc[0] == "primary"
    assert markdown.index("## Compared with smollm2-135m") < markdown.index("## Quality")


def test_html_is_one_self_contained_file(report):
    page = (report[1] / "report.html").read_text()
    assert page.count("<svg") >= 2  # the frontier charts, inline
    for outside in ("src=\"http", "href=\"http", "<link", "src=\"//", "@import"):
        assert outside not in page


def chromium():
    """A headless Chromium through Selenium and Debian's chromedriver; None when they are not installed."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        if os.environ.get("HARNESS_REQUIRE_BROWSER"):
            pytest.fail("chromium and chromedriver are required here (apt-get install chromium chromium-driver)")
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def column(browser, table: str, index: int) -> list[str]:
    from selenium.webdriver.common.by import By

    return [row.find_elements(By.TAG_NAME, "td")[index].get_attribute("data-sort")
            for row in browser.find_elements(By.CSS_SELECTOR, f"#table-{table} tbody tr")]


def test_html_in_a_real_browser(report):
    from selenium.webdriver.common.by import By

    runs, output = report
    page = output / "report.html"
    browser = chromium()
    try:
        browser.get(page.as_uri())
        assert browser.title == "Report: smollm2-135m, smollm2-135m:int8"
        assert [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"] == []
        requests = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
        urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
        assert urls == [page.as_uri()]  # the page itself and nothing else

        quality, paired = pd.read_csv(output / "quality.csv"), pd.read_csv(output / "comparison.csv")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#table-quality tbody tr")) == len(quality)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#table-side_by_side tbody tr")) == 2
        assert len(browser.find_elements(By.CSS_SELECTOR, "#table-comparison tbody tr")) == len(paired)
        assert len(browser.find_elements(By.CSS_SELECTOR, ".chart svg")) >= 2

        headers = browser.find_elements(By.CSS_SELECTOR, "#table-quality thead th")
        value = [h.text for h in headers].index("value")
        before = [float(v) for v in column(browser, "quality", value)]
        headers[value].click()
        ascending = [float(v) for v in column(browser, "quality", value)]
        assert ascending == sorted(before) and ascending != before
        assert headers[value].get_attribute("aria-sort") == "ascending"
        headers[value].click()
        assert [float(v) for v in column(browser, "quality", value)] == sorted(before, reverse=True)

        # Drill-down: a task's failures open to the prompt, the model's response and the target.
        samples = [json.loads(line) for line in (runs[0] / "samples.jsonl").read_text().splitlines()]
        wrong = [s for s in samples if s["task"] == "mmlu_anatomy" and not s["scores"]["acc"]]
        details = browser.find_element(By.CSS_SELECTOR, "details.failures[data-task='mmlu_anatomy']")
        prompt_cell = details.find_element(By.CSS_SELECTOR, "tbody tr td:nth-child(2)")
        assert not prompt_cell.is_displayed()
        details.find_element(By.TAG_NAME, "summary").click()
        assert prompt_cell.is_displayed() and prompt_cell.text == wrong[0]["prompt"].strip()
        assert f"{len(wrong)} of 6 wrong" in details.find_element(By.TAG_NAME, "summary").text
        settings = browser.find_elements(By.CSS_SELECTOR, "#settings details")
        assert len(settings) == 2
        settings[1].find_element(By.TAG_NAME, "summary").click()
        shown = settings[1].find_element(By.TAG_NAME, "pre").text
        assert '"spec": "smollm2-135m:int8"' in shown and '"num_fewshot": 0' in shown and '"hardware"' in shown

        browser.execute_script("window.scrollTo(0, 0)")  # the comparison and its charts
        SCREENSHOTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(SCREENSHOTS / "report-chromium.png"))
        assert (SCREENSHOTS / "report-chromium.png").stat().st_size > 10_000
        assert [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"] == []
    finally:
        browser.quit()


def test_bad_input_is_one_line(tmp_path):
    not_a_run = harness("report", tmp_path)
    assert not_a_run.returncode == 2 and "is not a run folder" in not_a_run.stderr
    assert len(not_a_run.stderr.strip().splitlines()) == 1
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "samples.jsonl").write_text("")
    wrong_format = harness("report", tmp_path, "--format", "pdf")
    assert wrong_format.returncode == 2 and "--format" in wrong_format.stderr
