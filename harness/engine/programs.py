"""What a task asks of the code sandbox: a program to run and the tests that judge it.

The sandbox (harness/sandbox/process.py) runs `code`, which is untrusted, inside its walls; `context` and `tests`
are trusted (they come with the task's data) and run in a judge process outside, where `tests` calls the
sandboxed `entry_point` as `candidate` and receives plain values back. Without tests, the program passes when
loading it raises nothing. The runner a task is lent returns one outcome dict per program, with at least "status"
(passed, failed, error, timed_out, crashed) and "passed".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Program:
    code: str
    entry_point: str = ""
    tests: str = ""
    context: str = ""


ProgramRunner = Callable[[list[Program]], list[dict]]
