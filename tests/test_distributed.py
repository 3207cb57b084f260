"""`torchrun --nproc-per-node 2 -m harness run ...` on CPU (gloo): two ranks share the work, rank 0 writes one run
record, and its samples and results equal a single-process run's exactly."""

import os
import subprocess
import sys

from harness.record.run_folder import read_run

pytestmark = __import__("pytest").mark.slow  # torchrun: two processes, each with the real model
# MMLU's 12 loglikelihoods and one GSM8K generation (a generation on one thread costs more than all of MMLU's).
COMMAND = ["-m", "harness", "run", "--model", "smollm2-135m", "--tasks", "mmlu_anatomy,gsm8k", "--limit",
           "mmlu_anatomy=3,gsm8k=1"]


def test_two_ranks_give_the_single_process_results_exactly(tmp_path):
    # Chunks of 4 requests, dealt to the ranks in turn: MMLU's three to ranks 0, 1, 0, GSM8K's to rank 1.
    env = {**os.environ, "HARNESS_COMMIT_EVERY": "4"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    parallel = subprocess.run([*torchrun, *COMMAND, "--output", str(tmp_path / "parallel")], env=env,
                              capture_output=True, text=True, timeout=600)
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    env["HARNESS_CACHE_DB"] = str(tmp_path / "single-process-cache.sqlite")  # nothing reused from the first run
    single = subprocess.run([sys.executable, *COMMAND, "--output", str(tmp_path / "single")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]

    record, samples = read_run(tmp_path / "parallel")
    expected_record, expected_samples = read_run(tmp_path / "single")
    assert samples == expected_samples  # prompts, responses (every log-probability), scores
    assert record["results"] == expected_record["results"]
    assert record["settings"]["data_parallel"] == {"world_size": 2}
    # Rank 0 computed only its share; rank 1 the rest (both wrote the one cache).
    computed = sum(record["settings"]["response_cache"]["computed"].values())
    assert computed == 2 * 4  # MMLU's first and third chunks
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["parallel", "single"]
