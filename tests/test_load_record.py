"""A load run's record: its folder (load.json vouching for load.csv and requests.jsonl), its rows in the results
store, and its table and charts in `harness report`, from a real `harness load` against a real HTTP server on
loopback that streams a fixed answer (what is recorded does not depend on which server answered)."""


import pandas as pd
import pytest

from harness.cli import main
from harness.errors import UserError
from harness.record.load_folder import read_load
from harness.record.store import ResultsStore
from tests.test_load import ScriptedServer, chunk, stream

USAGE = {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}}


def answer(handler):
    stream(handler, [chunk("a"), chunk("b"), chunk("c"), USAGE])


@pytest.fixture(scope="module")
def load_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("load")
    server = ScriptedServer(answer)
    try:
        code = main(["load", "--url", server.url, "--model", "scripted", "--prompts", "gsm8k", "--rate", "40,20",
                     "--requests", "6", "--arrival", "constant", "--slo", "e2e<=10s", "--output",
                     str(folder / "run"), "--results-db", str(folder / "results.sqlite")])
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0
    return folder / "run", folder / "results.sqlite"


def test_the_store_holds_every_point_as_the_folder_records_it(load_run):
    folder, database = load_run
    record = read_load(folder)
    assert record["model"] == "scripted" and record["created"] and [p["requested_rate"] for p in record["points"]] == [40, 20]
    store = ResultsStore(database)
    try:
        stored = store.load_points(model="scripted")
        assert [(p["requested_rate"], p["completed"], p["total_output_tokens"]) for p in stored] == \
            [(40, 6, 18), (20, 6, 18)]
        for point, kept in zip(record["points"], stored):
            assert kept["request_throughput"] == point["request_throughput"]
            assert kept["ttft_p99_s"] == point["ttft_p99_s"] and kept["kept_schedule"] == point["kept_schedule"]
        store.record_load(folder)  # recorded again: replaced, not doubled
        assert len(store.load_points()) == 2 and store.load_points(model="another") == []
    finally:
        store.close()


def test_a_changed_requests_file_is_refused_in_one_line(load_run, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("load.json", "load.csv", "requests.jsonl"):
        (folder / name).write_bytes((load_run[0] / name).read_bytes())
    with open(folder / "requests.jsonl", "a") as handle:
        handle.write("{}\n")
    with pytest.raises(UserError, match="requests.jsonl is damaged or was changed"):
        read_load(folder)
    (folder / "load.json").write_text('{"points": []}')
    with pytest.raises(UserError, match="is not a load record"):
        read_load(folder)


def test_the_report_tables_and_charts_a_load_run(load_run, tmp_path, capsys):
    folder, _ = load_run
    assert main(["report", str(folder), "--output", str(tmp_path / "report")]) == 0
    table = pd.read_csv(tmp_path / "report" / "load.csv")
    points = sorted(read_load(folder)["points"], key=lambda p: p["requested_rate"])  # by offered load
    assert list(table["requested rate"]) == [20, 40] and list(table["completed"]) == [6, 6]
    assert list(table["TTFT p99 ms"]) == pytest.approx([p["ttft_p99_s"] * 1000 for p in points])
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("<svg") == 4  # TTFT, e2e, output tokens/s and requests/s against the rate
    assert "Time to first token against rate" in page and "Failures" not in page
    assert "harness load --url" in page  # the load run's settings
    assert "## Serving under load" in (tmp_path / "report" / "report.md").read_text()
