"""The code sandbox against hostile completions: each is contained, recorded as a failure, and the run goes on.

Every hostile completion completes HumanEval/0 (`has_close_elements`), so the same battery also goes through
`harness score-code` as a user would feed it. All programs of the battery run in one parallel sandbox call.
"""

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness.sandbox.process import Limits, Sandbox
from tasks.humaneval import program, read_problems

OUTSIDE = "/tmp/harness-sandbox-test-outside"  # must never be written by the programs
KEEP = "/tmp/harness-sandbox-test-keep"  # must never be deleted by them
CORRECT = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"

HOSTILE = {
    "infinite_loop": "    while True:\n        pass\n",
    "fork_bomb": "    import os\n    while True:\n        os.fork()\n",
    "fork_bomb_multiprocessing": ("    import multiprocessing\n    while True:\n"
                                  "        multiprocessing.Process(target=print).start()\n"),
    "allocate_20_gb": "    block = bytearray(20 * 1024 ** 3)\n    return True\n",
    "write_outside": f"    open({OUTSIDE!r}, 'w').write('x')\n" + CORRECT,
    "delete_outside": f"    import os\n    os.remove({KEEP!r})\n" + CORRECT,
    "os_system": f"    import os\n    os.system('touch {OUTSIDE}')\n" + CORRECT,
    "subprocess": f"    import subprocess\n    subprocess.run(['touch', {OUTSIDE!r}])\n" + CORRECT,
    "socket_to_localhost": ("    import socket\n    s = socket.create_connection(('127.0.0.1', PORT), timeout=1)\n"
                            "    s.sendall(b'escaped')\n" + CORRECT),
    "sys_exit_before_tests": "    return False\n\nimport sys\nsys.exit(0)\n",
    "os_exit_before_tests": "    return False\n\nimport os\nos._exit(0)\n",
    "kill_parent": "    return False\n\nimport os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
    "kill_process_group_of_parent": "    return False\n\nimport os, signal\nos.killpg(os.getpgid(os.getppid()), 9)\n",
    "override_builtins": ("    return False\n\nimport builtins\nbuiltins.AssertionError = type('Quiet', (Exception,), {})\n"
                          "builtins.__import__ = None\nbuiltins.print = None\n__builtins__ = {}\n"),
    "print_1_gb": "    import sys\n    line = 'x' * (1 << 20)\n    for _ in range(1024):\n        sys.stdout.write(line)\n",
    "hide_tests_in_a_string": "    return False\n'''\n",
    "ctypes_fork": "    import ctypes\n    ctypes.CDLL(None).fork()\n" + CORRECT,
}


@pytest.fixture(scope="module")
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    yield server
    server.close()


@pytest.fixture(scope="module")
def battery(listener):
    """Runs the correct completion and every hostile one, together, in one sandbox."""
    for path in (OUTSIDE,):
        if os.path.exists(path):
            os.remove(path)
    with open(KEEP, "w") as handle:
        handle.write("keep")
    problem = read_problems()["HumanEval/0"]
    port = listener.getsockname()[1]
    completions = {"correct": CORRECT, **{name: code.replace("PORT", str(port)) for name, code in HOSTILE.items()}}
    sandbox = Sandbox(Limits(timeout_s=3.0), workers=4)
    harness_rss = psutil.Process().memory_info().rss
    started = time.perf_counter()
    outcomes = sandbox.run([program(problem, code) for code in completions.values()])
    elapsed = time.perf_counter() - started
    sandbox.close()
    return {"outcomes": dict(zip(completions, outcomes)), "elapsed": elapsed, "rss_before": harness_rss,
            "completions": completions}


def test_a_correct_completion_passes_beside_the_hostile_ones(battery):
    assert battery["outcomes"]["correct"]["status"] == "passed"


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_completion_is_a_failure(battery, name):
    outcome = battery["outcomes"][name]
    assert outcome["passed"] is False and outcome["status"] != "passed", outcome


def test_the_machine_and_the_harness_are_unharmed(battery, listener):
    assert not os.path.exists(OUTSIDE), "a program wrote outside its directory"
    assert os.path.exists(KEEP), "a program deleted a file outside its directory"
    with pytest.raises(socket.timeout):
        listener.accept()  # no program reached the loopback listener
    # The harness is alive (this test runs), did not balloon, and the battery ran in parallel: the timeouts of
    # the infinite loop and the printing overlap instead of adding up.
    assert psutil.Process().memory_info().rss < battery["rss_before"] + (200 << 20)
    assert battery["elapsed"] < 15


def test_how_each_hostile_completion_was_stopped(battery):
    outcomes = battery["outcomes"]
    assert outcomes["infinite_loop"]["status"] == "timed_out"
    assert outcomes["allocate_20_gb"]["error_type"] == "MemoryError"
    assert outcomes["sys_exit_before_tests"]["error_type"] == "SystemExit"
    assert outcomes["os_exit_before_tests"]["status"] == "crashed"
    assert outcomes["hide_tests_in_a_string"]["error_type"] == "SyntaxError"
    for name in ("fork_bomb", "write_outside", "delete_outside", "os_system", "kill_parent", "ctypes_fork"):
        assert outcomes[name]["error_type"] == "PermissionError", (name, outcomes[name])
        assert "sandbox:" in outcomes[name]["stderr"]
    # Output is captured and truncated: a gigabyte of printing leaves a couple of kilobytes in the record.
    assert outcomes["print_1_gb"]["status"] == "error" and len(outcomes["print_1_gb"]["stdout"]) < 2200


def test_no_process_outlives_its_run(battery):
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if "harness-sandbox" in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []


def test_the_timeout_is_the_one_asked_for():
    sandbox = Sandbox(Limits(timeout_s=1.0), workers=1)
    started = time.perf_counter()
    outcome = sandbox.run([["import time\nwhile True:\n    time.sleep(0.05)\n"]])[0]
    assert outcome["status"] == "timed_out" and 1.0 <= time.perf_counter() - started < 2.5
    sandbox.close()


def test_the_working_directory_is_fresh_and_removed():
    sandbox = Sandbox(Limits(timeout_s=3.0), workers=2)
    code = "import os\nassert os.listdir('.') == []\nopen('scratch.txt', 'w').write(os.getcwd())\nprint(os.getcwd())"
    first, second = sandbox.run([[code], [code]])
    assert first["passed"] and second["passed"], (first, second)
    folders = {first["stdout"].strip(), second["stdout"].strip()}
    assert len(folders) == 2 and not any(os.path.exists(folder) for folder in folders)
    sandbox.close()


def test_the_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("HARNESS_TEST_SECRET", "hunter2")
    sandbox = Sandbox(Limits(timeout_s=3.0), workers=1)
    outcome = sandbox.run([["import os, sys\nassert 'HARNESS_TEST_SECRET' not in os.environ\n"
                            "assert sys.stdin.read() == ''\n"]])[0]
    assert outcome["passed"], outcome
    sandbox.close()


def test_the_battery_through_score_code(tmp_path, listener):
    """The same hostile completions, fed to `harness score-code` as a user would: every one fails, the correct one
    passes, and the harness process finishes normally (it was not killed)."""
    port = listener.getsockname()[1]
    samples = tmp_path / "samples.jsonl"
    names = ["correct", *sorted(HOSTILE)]
    codes = {"correct": CORRECT, **HOSTILE}
    samples.write_text("".join(json.dumps({"task_id": "HumanEval/0", "completion": codes[n].replace("PORT", str(port))})
                               + "\n" for n in names))
    with open(KEEP, "w") as handle:
        handle.write("keep")
    result = subprocess.run([sys.executable, "-m", "harness", "score-code", str(samples),
                             "--allow-code-execution"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"1 problems, {len(names)} samples" in result.stdout
    expected_pass_at_1 = 1 / len(names)
    assert f"pass@1: {expected_pass_at_1:.4f}" in result.stdout
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl_results.jsonl").read_text().splitlines()]
    assert [row["passed"] for row in rows] == [True] + [False] * len(HOSTILE)
    assert not os.path.exists(OUTSIDE) and os.path.exists(KEEP)
    with pytest.raises(socket.timeout):
        listener.accept()


@pytest.mark.skipif(os.geteuid() != 0, reason="own uids per program need root")
def test_the_operating_system_layers_hold_without_the_audit_hook(listener):
    """With the audit hook off, the process's own uid, its limits and its network namespace still contain it."""
    sandbox = Sandbox(Limits(timeout_s=3.0), workers=4, audit_hook=False)
    assert "uid" in sandbox.describe()["isolation"]
    port = listener.getsockname()[1]
    with open(KEEP, "w") as handle:
        handle.write("keep")
    os.chmod(KEEP, 0o644)
    programs = {
        "fork_bomb": "import os\nwhile True:\n    os.fork()\n",
        "overwrite_a_root_file": f"open({KEEP!r}, 'w').write('gone')\n",
        "kill_parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
        "socket": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'x')\n",
    }
    outcomes = dict(zip(programs, sandbox.run([[code] for code in programs.values()])))
    sandbox.close()
    assert outcomes["fork_bomb"]["error_type"] == "BlockingIOError", outcomes["fork_bomb"]  # its process limit
    assert outcomes["overwrite_a_root_file"]["error_type"] == "PermissionError"
    assert outcomes["kill_parent"]["error_type"] == "PermissionError"
    assert not outcomes["socket"]["passed"]
    assert open(KEEP).read() == "keep"
    with pytest.raises(socket.timeout):
        listener.accept()
    # Every process the fork bomb made is dead (a zombie until this container's init reaps it), none running.
    running = [p for p in psutil.process_iter(["uids", "status"])
               if p.info["uids"] and p.info["uids"].real >= 1_500_000_000 and p.info["status"] != "zombie"]
    assert running == []


def readable_by_others(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser") or not SYSTEM_PYTHON.exists()
                    or not readable_by_others(REPO), reason="needs root, runuser, a system Python and a repo "
                                                           "other users can read, to run the harness unprivileged")
def test_without_root_the_audit_hook_and_a_user_namespace_hold():
    """The same sandbox started by an unprivileged user (no own uids): the audit hook still refuses, and the
    network is cut by a user + network namespace where the kernel allows one."""
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
              "from harness.sandbox.process import Limits, Sandbox\n"
              "import json\n"
              "hooked = Sandbox(Limits(timeout_s=3.0), workers=2)\n"
              "bare = Sandbox(Limits(timeout_s=3.0), workers=1, audit_hook=False)\n"
              f"programs = [['assert 1 + 1 == 2'], [\"open({OUTSIDE!r}, 'w').write('x')\"], ['import sys; sys.exit(0)']]\n"
              "socket = [[\"import socket; socket.create_connection(('127.0.0.1', 9), timeout=1)\"]]\n"
              "print(json.dumps({'hooked': hooked.run(programs), 'bare': bare.run(socket),\n"
              "                  'isolation': hooked.describe()['isolation']}))\n")
    result = subprocess.run(["runuser", "-u", "nobody", "--", str(SYSTEM_PYTHON), "-c", script],
                            capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["isolation"].endswith("same user")
    assert [o["status"] for o in report["hooked"]] == ["passed", "error", "error"]
    assert report["hooked"][1]["error_type"] == "PermissionError" and not os.path.exists(OUTSIDE)
    assert report["bare"][0]["passed"] is False
    if report["isolation"].startswith("network namespace"):
        assert "Network is unreachable" in report["bare"][0]["stderr"]
