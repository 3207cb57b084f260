"""The code sandbox (harness/sandbox/) against hostile programs: each is contained and recorded as not passed,
the harness lives on, and nothing outside the program's scratch is read or changed.

The hostile battery (tests/sandbox_battery.py: 79 completions of HumanEval/0 in five families) runs in three
configurations, each as one parallel sandbox run: as the current user (root in CI) with the audit hook off, so that
the kernel's walls hold alone; as an unprivileged user, where bubblewrap builds the walls without root; and through
`harness score-code`, with the hook on as in every real run. The attacks aim at real targets set up here, outside
the sandbox: secrets in the environment, in a fake HOME's ~/.ssh and in $HARNESS_HOME's response cache, files in a
folder anyone may write, TCP, UDP and Unix listeners, a victim process of the sandbox's own uid, and the harness's
own pid. Afterwards every listener is silent, every file as it was, the victim running, no process left behind and
no secret in any output.
"""

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import psutil
import pytest

from harness.sandbox.process import Limits, Sandbox
from harness.sandbox.walls import SANDBOX_UID
from tasks.humaneval import program, read_problems
from tests import sandbox_battery as battery
from tests.sandbox_battery import CORRECT, HARNESS_PID, NAMES, TASK_ID, WRONG

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
TIMEOUT_S = 3.0
WORKERS = 4
IS_ROOT = os.geteuid() == 0
HEAVY_MODULES = ("torch", "numpy", "transformers", "tqdm")



# ---------------------------------------------------------------------------------------------------------------
# The targets


@dataclass
class Stage:
    targets: battery.Targets  # victim_pid is 0 here: each configuration starts its own victim
    token: str  # inside every secret planted here
    listeners: dict[str, socket.socket]
    contents: dict[str, bytes | str]  # what the outside folder holds, and must hold afterwards


def outside_contents(folder: Path) -> dict[str, bytes | str]:
    return {entry.name: "socket" if stat.S_ISSOCK(entry.lstat().st_mode) else entry.read_bytes()
            for entry in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def stage():
    """The targets, readable (or writable) by any user where the attack needs it: the walls alone keep the sandbox
    from them, not file permissions. The harness's environment holds the secrets while the module runs."""
    token = secrets.token_hex(16)
    root = Path(tempfile.mkdtemp(prefix="harness-sandbox-targets-"))
    root.chmod(0o755)
    home = root / "home"
    (home / ".ssh").mkdir(parents=True)
    ssh_key = home / ".ssh" / "id_rsa"
    ssh_key.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\nssh-{token}\n-----END OPENSSH PRIVATE KEY-----\n")
    harness_home = root / "harness-home"
    (harness_home / "cache").mkdir(parents=True)
    cache = harness_home / "cache" / "responses.sqlite"
    with closing(sqlite3.connect(cache)) as db:
        db.execute("create table responses (key text, response text)")
        db.execute("insert into responses values (?, ?)", ("a prompt", f"cache-{token}"))
        db.commit()
    outside = root / "outside"
    outside.mkdir()
    (outside / "untouched.txt").write_text("original contents")
    (outside / "keep.txt").write_text("keep me")
    for path in (home, home / ".ssh", harness_home, harness_home / "cache"):
        path.chmod(0o755)
    for path in (ssh_key, cache):
        path.chmod(0o644)
    outside.chmod(0o777)
    for path in outside.iterdir():
        path.chmod(0o666)

    listeners = {"tcp 127.0.0.1": socket.create_server(("127.0.0.1", 0))}
    try:
        listeners["tcp ::1"] = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pass  # no IPv6 here: the program's connection to port 0 fails anyway
    listeners["udp 127.0.0.1"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listeners["udp 127.0.0.1"].bind(("127.0.0.1", 0))
    unix_path = str(outside / "listener.sock")
    listeners["unix path"] = socket.socket(socket.AF_UNIX)
    listeners["unix path"].bind(unix_path)
    os.chmod(unix_path, 0o777)
    unix_abstract = f"\0harness-sandbox-test-{secrets.token_hex(8)}"  # not the token: it is in the programs' text
    listeners["unix abstract"] = socket.socket(socket.AF_UNIX)
    listeners["unix abstract"].bind(unix_abstract)
    for name, listener in listeners.items():
        if not name.startswith("udp"):
            listener.listen()
        listener.setblocking(False)

    port = {name: listener.getsockname()[1] for name, listener in listeners.items() if name.startswith(("tcp", "udp"))}
    targets = battery.Targets(
        ssh_key=str(ssh_key), harness_home=str(harness_home), cache=str(cache), outside_dir=str(outside),
        outside_file=str(outside / "untouched.txt"), keep_file=str(outside / "keep.txt"),
        forbidden=str(outside / "forbidden"), project_file=str(REPO / "pyproject.toml"),
        tcp4_port=port["tcp 127.0.0.1"], tcp6_port=port.get("tcp ::1", 0), udp_port=port["udp 127.0.0.1"],
        unix_path=unix_path, unix_abstract=unix_abstract, victim_pid=0, scratch_token=f"scratch-{secrets.token_hex(8)}")
    environment = {"HARNESS_TEST_SECRET": f"env-{token}", "OPENAI_API_KEY": f"sk-{token}", "HOME": str(home),
                   "HARNESS_HOME": str(harness_home)}
    assert set(battery.SECRET_NAMES) <= set(environment)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        yield Stage(targets, token, listeners, outside_contents(outside))
    for listener in listeners.values():
        listener.close()
    shutil.rmtree(root, ignore_errors=True)


@contextmanager
def victim_process(uid: int):
    """A process of the sandbox's own uid, outside it, started with the secrets in its environment (so that they
    are in its /proc/PID/environ, which that uid may read; this process set them after it started): the walls
    alone keep the programs from signalling, tracing or reading it."""
    as_user = {"user": uid, "group": uid, "extra_groups": []} if IS_ROOT and uid != os.getuid() else {}
    victim = subprocess.Popen(["sleep", "1000"], env=dict(os.environ), cwd="/", **as_user)
    try:
        yield victim
    finally:
        try:
            os.kill(victim.pid, signal.SIGCONT)  # stopped by an escape: let it die
        except ProcessLookupError:
            pass
        victim.kill()
        victim.wait()


# ---------------------------------------------------------------------------------------------------------------
# What a run must leave behind


def reached(name: str, listener: socket.socket) -> bool:
    """Whether anything reached the listener since it was last asked (what arrived is drained)."""
    arrived = False
    while True:
        try:
            if name.startswith("udp"):
                listener.recvfrom(1024)
            else:
                listener.accept()[0].close()
        except BlockingIOError:
            return arrived
        arrived = True


def leftover_processes(since: float, uids: set[int], spare: set[int]) -> list[str]:
    """Processes a battery left behind: started since `since`, of a sandbox's uid or running bubblewrap or the
    candidate runner, and either below this process or orphaned (not part of another harness's live sandbox, as
    when the whole test suite runs in parallel)."""
    found = []
    for process in psutil.process_iter(["pid", "uids", "cmdline", "status", "create_time"]):
        info = process.info
        if info["pid"] in spare or info["status"] == psutil.STATUS_ZOMBIE or (info["create_time"] or 0) < since - 1:
            continue
        command = " ".join(info["cmdline"] or [])
        if not (info["uids"] and info["uids"].real in uids or "bwrap" in command or "/runner/candidate.py" in command):
            continue
        try:
            chain = [process, *process.parents()]
            names = [member.name() for member in chain]
            # The outermost bubblewrap (or the process itself, outside any) was reparented to init: its harness is
            # gone.
            orphaned = chain[max((i for i, name in enumerate(names) if name == "bwrap"), default=0)].ppid() in (0, 1)
        except psutil.Error:
            continue  # gone meanwhile
        if orphaned or os.getpid() in {member.pid for member in chain}:
            found.append(f"{info['pid']} ({info['status']}, uid {info['uids'].real}): {command[:120]}")
    return found


def breaches(stage: Stage, outcomes: dict[str, dict], harness_output: str, victim: subprocess.Popen, since: float,
             uids: set[int]) -> list[str]:
    """Every sign that a program got out, as sentences; the targets are restored for the next configuration."""
    found = [f"{name}: a secret in its output" for name, outcome in outcomes.items()
             if stage.token in outcome["stdout"] + outcome["stderr"]]
    found += [f"{name}: another program's scratch in its output" for name, outcome in outcomes.items()
              if name != "scratch_writer" and stage.targets.scratch_token in outcome["stdout"] + outcome["stderr"]]
    if stage.token in harness_output:
        found.append("a secret in the harness's output")
    found += [f"the {name} listener was reached" for name, listener in stage.listeners.items()
              if reached(name, listener)]
    outside = Path(stage.targets.outside_dir)
    contents = outside_contents(outside)
    if contents != stage.contents:
        found.append(f"the outside folder changed: {sorted(contents)} holding {contents}")
        for name in set(contents) - set(stage.contents):
            (outside / name).unlink()
        for name, data in stage.contents.items():
            if data != "socket":
                (outside / name).write_bytes(data)
    try:
        state = psutil.Process(victim.pid).status()
    except psutil.NoSuchProcess:
        state = "gone"
    if victim.poll() is not None or state not in (psutil.STATUS_SLEEPING, psutil.STATUS_RUNNING):
        found.append(f"the victim process was signalled ({state}, exit code {victim.returncode})")
    leftovers = leftover_processes(since, uids, spare={victim.pid})
    for _ in range(20):  # the kernel tears a PID namespace down asynchronously
        if not leftovers:
            break
        time.sleep(0.25)
        leftovers = leftover_processes(since, uids, spare={victim.pid})
    found += [f"a process left behind: {leftover}" for leftover in leftovers]
    return found


# ---------------------------------------------------------------------------------------------------------------
# The battery in each configuration


def battery_completions(stage: Stage, victim_pid: int) -> dict[str, str]:
    """The hostile completions, then a correct and a plainly wrong one (the sandbox does not just fail everything)."""
    hostile = battery.hostile_completions(replace(stage.targets, victim_pid=victim_pid))
    return {**hostile, "correct": CORRECT, "wrong": WRONG}


def run_in_process(stage: Stage, audit_hook: bool) -> dict:
    problem = read_problems()[TASK_ID]
    uids = {SANDBOX_UID} if IS_ROOT else set()
    with victim_process(SANDBOX_UID if IS_ROOT else os.getuid()) as victim:
        completions = battery_completions(stage, victim.pid)
        programs = [program(problem, code.replace(HARNESS_PID, str(os.getpid()))) for code in completions.values()]
        since, harness_memory = time.time(), psutil.Process().memory_info().rss
        sandbox = Sandbox(Limits(timeout_s=TIMEOUT_S), workers=WORKERS, audit_hook=audit_hook)
        try:
            outcomes = dict(zip(completions, sandbox.run(programs)))
        finally:
            sandbox.close()
        found = breaches(stage, outcomes, "", victim, since, uids)
    return {"outcomes": outcomes, "breaches": found, "isolation": sandbox.isolation,
            "harness_growth": psutil.Process().memory_info().rss - harness_memory}


@pytest.fixture(scope="module")
def bare_battery(stage):
    """As the current user (root in CI: bubblewrap then runs as an unused uid), with the audit hook off."""
    return run_in_process(stage, audit_hook=False)


def nobody() -> int:
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return 65534


def unprivileged_prefix() -> list[str] | None:
    uid = nobody()
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "-m", "--"]  # -m keeps the environment, and with it the secrets
    return None


UNPRIVILEGED_SKIP = (None if IS_ROOT and unprivileged_prefix() and SYSTEM_PYTHON.exists() else
                     "running the sandbox as an unprivileged user needs root, setpriv or runuser, and "
                     f"{SYSTEM_PYTHON} (the venv's interpreter may sit where that user cannot read)")

# Run by the unprivileged user's system Python: a copy of the harness package, the job as JSON; prints the outcomes.
UNPRIVILEGED_HARNESS = """
import json, os, sys
folder = sys.argv[1]
sys.path.insert(0, folder)
from harness.engine.programs import Program
from harness.sandbox.process import Limits, Sandbox

with open(os.path.join(folder, "job.json")) as handle:
    job = json.load(handle)
sandbox = Sandbox(Limits(timeout_s=job["timeout_s"]), workers=job["workers"], audit_hook=False)
programs = [Program(p["code"].replace(job["placeholder"], str(os.getpid())), p["entry_point"], p["tests"],
                    p["context"]) for p in job["programs"]]
try:
    outcomes = sandbox.run(programs)
finally:
    sandbox.close()
heavy = sorted(name for name in sys.modules if name.split(".")[0] in job["heavy"])
print(json.dumps({"outcomes": outcomes, "isolation": sandbox.isolation, "uid": os.getuid(), "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def unprivileged_battery(stage):
    """The battery run by a harness that is not root: the system's Python as `nobody`, importing a copy of the
    harness package (the standard library and pyseccomp are all the sandbox needs) from a folder it can read."""
    if UNPRIVILEGED_SKIP:
        pytest.skip(UNPRIVILEGED_SKIP)
    import pyseccomp

    folder = Path(tempfile.mkdtemp(prefix="harness-sandbox-unprivileged-"))
    try:
        shutil.copytree(REPO / "harness", folder / "harness", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(pyseccomp.__file__, folder / "pyseccomp.py")
        problem = read_problems()[TASK_ID]
        with victim_process(nobody()) as victim:
            completions = battery_completions(stage, victim.pid)
            job = {"timeout_s": TIMEOUT_S, "workers": WORKERS, "placeholder": HARNESS_PID, "heavy": HEAVY_MODULES,
                   "programs": [vars(program(problem, code)) for code in completions.values()]}
            (folder / "job.json").write_text(json.dumps(job))
            for path in [folder, *folder.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
            since = time.time()
            result = subprocess.run(
                [*unprivileged_prefix(), str(SYSTEM_PYTHON), "-I", "-B", "-c", UNPRIVILEGED_HARNESS, str(folder)],
                capture_output=True, text=True, timeout=300, cwd=folder, env=dict(os.environ, TMPDIR="/tmp"))
            assert result.returncode == 0, result.stderr[-3000:]  # alive: nothing killed it
            report = json.loads(result.stdout)
            outcomes = dict(zip(completions, report.pop("outcomes")))
            report["breaches"] = breaches(stage, outcomes, result.stdout + result.stderr, victim, since, {nobody()})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {**report, "outcomes": outcomes}


# ---------------------------------------------------------------------------------------------------------------
# The hostile battery, as the current user without the audit hook


def test_the_battery_covers_every_family():
    families = Counter(battery.family_of(name) for name in NAMES)
    assert len(NAMES) >= 30 and all(count >= 5 for count in families.values()), families


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_without_the_audit_hook_no_hostile_program_passes(bare_battery, name):
    outcome = bare_battery["outcomes"][name]
    assert outcome["status"] != "passed" and outcome["passed"] is False, outcome


@pytest.mark.slow
def test_without_the_audit_hook_the_machine_and_the_harness_are_unharmed(bare_battery):
    assert bare_battery["breaches"] == []
    outcomes = bare_battery["outcomes"]
    assert outcomes["correct"]["status"] == "passed", outcomes["correct"]
    assert outcomes["wrong"]["status"] == "failed"
    assert all(o["isolation"].startswith("bubblewrap") for o in outcomes.values())
    # Output is kept to a couple of kilobytes per program, however much it printed; the harness did not balloon.
    assert all(len(o["stdout"]) < 2100 and len(o["stderr"]) < 2100 for o in outcomes.values())
    assert bare_battery["harness_growth"] < 200 << 20


@pytest.mark.slow
def test_how_the_walls_stopped_each_kind_of_attack(bare_battery):
    """Not only that each failed, but that the wall meant for it is what stopped it (kernel-independent cases)."""
    status = {name: (o["status"], o["error_type"]) for name, o in bare_battery["outcomes"].items()}
    assert status["rebind_exec"] == ("failed", "AssertionError")  # passed in the old design (issue 21)
    for name in ("busy_loop_in_the_call", "sleep_in_the_call", "busy_loop_at_load", "correct_after_the_deadline"):
        assert status[name][0] == "timed_out", (name, status[name])
    assert status["sys_exit_at_load"] == status["sys_exit_in_the_call"] == ("error", "SystemExit")
    assert status["os_exit_at_load"][0] == status["os_exit_in_the_call"][0] == "crashed"
    for name in ("eq_always_true_object", "return_a_huge_value", "return_deep_nesting",
                 "fake_verdict_on_every_descriptor"):
        assert status[name] == ("error", "NotPlainData"), (name, status[name])
    assert status["eq_always_true_int"] == ("failed", "AssertionError")  # crossed as a plain 1
    assert status["allocate_20_gb"] == ("error", "MemoryError")  # the address-space limit
    assert status["fork_bomb"] == ("error", "BlockingIOError")  # the process limit
    assert status["fill_the_scratch"] == status["one_huge_file"] == ("error", "OSError")  # scratch size, file size
    for name in ("tcp_to_loopback", "udp_to_loopback", "internet"):
        assert status[name] == ("error", "PermissionError"), (name, status[name])  # seccomp: no socket but Unix
    for name in ("write_outside", "delete_outside", "mmap_outside_file", "unix_socket_by_path", "read_harness_home"):
        assert status[name] == ("error", "FileNotFoundError"), (name, status[name])  # not in its view at all
    for name in ("kill_the_harness", "kill_the_victim", "pidfd_kill_the_victim", "pidfd_kill_the_harness"):
        assert status[name] == ("error", "ProcessLookupError"), (name, status[name])  # not in its PID namespace


# ---------------------------------------------------------------------------------------------------------------
# The same run by an unprivileged user


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_as_an_unprivileged_user_no_hostile_program_passes(unprivileged_battery, name):
    outcome = unprivileged_battery["outcomes"][name]
    assert outcome["status"] != "passed" and outcome["passed"] is False, outcome


@pytest.mark.slow
def test_as_an_unprivileged_user_the_walls_are_built_and_hold(unprivileged_battery):
    assert unprivileged_battery["uid"] == nobody()
    assert unprivileged_battery["isolation"].startswith("bubblewrap"), unprivileged_battery["isolation"]
    assert unprivileged_battery["heavy"] == []  # the sandbox needs no torch or numpy
    assert unprivileged_battery["breaches"] == []
    outcomes = unprivileged_battery["outcomes"]
    assert outcomes["correct"]["status"] == "passed" and outcomes["wrong"]["status"] == "failed"
    assert outcomes["kill_the_harness"]["error_type"] == "ProcessLookupError"


# ---------------------------------------------------------------------------------------------------------------
# The battery through `harness score-code`, as a user would feed it


@pytest.mark.slow
def test_the_battery_through_score_code(stage, bare_battery, tmp_path):
    """Every hostile completion fails, the correct one passes, and the harness finishes normally: the battery as a
    user would feed it, with the audit hook on, as every real run has it (an extra layer must not change what the
    walls keep)."""
    uids = {SANDBOX_UID} if IS_ROOT else set()
    with victim_process(SANDBOX_UID if IS_ROOT else os.getuid()) as victim:
        completions = {name: code.replace(HARNESS_PID, str(os.getpid()))  # the harness's parent: this process
                       for name, code in battery_completions(stage, victim.pid).items()}
        samples = tmp_path / "samples.jsonl"
        samples.write_text("".join(json.dumps({"task_id": TASK_ID, "completion": code}) + "\n"
                                   for code in completions.values()))
        since = time.time()
        result = subprocess.run([sys.executable, "-m", "harness", "score-code", str(samples), "--allow-code-execution",
                                 "--code-timeout", str(TIMEOUT_S), "--code-workers", str(WORKERS)],
                                capture_output=True, text=True, timeout=300, cwd=REPO)
        assert result.returncode == 0, result.stderr[-3000:]
        found = breaches(stage, {}, result.stdout + result.stderr, victim, since, uids)
    assert found == []
    assert f"1 problems, {len(completions)} samples (" in result.stdout
    assert f"pass@1: {1 / len(completions):.4f}" in result.stdout
    assert "isolation: bubblewrap" in result.stdout
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl_results.jsonl").read_text().splitlines()]
    assert [row["passed"] for row in rows] == [name == "correct" for name in completions]
    results = dict(zip(completions, (row["result"] for row in rows)))
    assert results["busy_loop_in_the_call"] == "timed_out" and results["os_exit_at_load"] == "crashed"
    # The hook is on here (it refuses a shell and ctypes) and was off in the bare run, where the walls stopped them.
    for name in ("shell_out", "new_namespaces_mounts_chroot"):
        assert results[name] == "error: PermissionError", (name, results[name])
        assert bare_battery["outcomes"][name]["error_type"] != "PermissionError"
