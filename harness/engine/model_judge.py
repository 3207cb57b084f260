"""The judge a run lends its judged tasks (harness/engine/judging.py): any model of the harness, the evaluated one by
default, reading each conversation through its own chat template.

Its requests are ordinary generation requests: through a CachingModel (harness/engine/cache.py) a judgment is
stored as soon as its chunk is done, so a run killed while judging resumes without asking again, and a run with
another judge or other answers asks only what changed. They are sent inside `working_on(scope)`, so the profiler
counts the judge's work apart from the tasks' own (systems.tasks["mt_bench_math:judge"]). An `openai:` judge gets
the messages themselves (its apply_chat_template keeps them for /v1/chat/completions).

`max_new_tokens`, the run's cap on generated tokens (--max-new-tokens), caps judgments too and is part of the
judge's identity. The judge runs where the tasks are scored: under torchrun, on rank 0 alone.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from tqdm import tqdm

from harness.engine.cache import CachingModel
from harness.engine.evaluator import commit_every
from harness.engine.model import LanguageModel, occurrences_in
from harness.engine.requests import GenerateRequest, LoglikelihoodRequest
from harness.errors import UserError


class ModelJudge:
    def __init__(self, model: LanguageModel, batch_size: int | None, seed: int, max_new_tokens: int | None):
        self.model = model
        self.batch_size = batch_size
        self.seed = seed
        self.max_new_tokens = max_new_tokens
        self.judgments: Counter = Counter()  # per scope
        self.truncated: Counter = Counter()  # judge prompts longer than the judge's window, cut from the left

    def identity(self) -> dict:
        template = self.model.chat_template
        return {"spec": self.model.spec, "fingerprint": self.model.fingerprint,
                "implementation": self.model.implementation, "dtype": str(self.model.dtype),
                "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None,
                "max_new_tokens": self.max_new_tokens}

    def __call__(self, conversations: list[list[dict[str, str]]], *, max_tokens: int, temperature: float,
                 scope: str) -> list[str]:
        if self.max_new_tokens is not None:
            max_tokens = min(max_tokens, self.max_new_tokens)
        requests = [GenerateRequest(self.model.apply_chat_template(messages), max_tokens=max_tokens,
                                    temperature=temperature) for messages in conversations]
        self.judgments[scope] += len(requests)
        self.truncated[scope] += sum(self.model.truncates(request) for request in requests)
        occurrences = occurrences_in(requests)
        step = commit_every(GenerateRequest)  # what a kill can lose at most, as for the tasks' own requests
        replies: list[str] = []
        with tqdm(total=len(requests), desc="judging", unit="req", dynamic_ncols=True) as bar, \
                self.model.working_on(scope):
            for start in range(0, len(requests), step):
                replies += self.model.generate_until(requests[start:start + step], batch_size=self.batch_size,
                                                     progress=bar.update, seed=self.seed,
                                                     occurrences=occurrences[start:start + step])
        return replies

    def likelihoods(self, conversations: list[list[dict[str, str]]], replies: list[str], *,
                    scope: str) -> list[list[float]]:
        if self.model.implementation == "openai-api":
            raise UserError(f"the judge {self.model.spec} is behind a server's chat completions, which give no "
                            "log-probabilities of a given reply; use --judge-scoring generate, or a local judge")
        contexts = [self.model.apply_chat_template(messages) for messages in conversations]
        requests = [LoglikelihoodRequest(context, reply) for context in contexts for reply in replies]
        self.judgments[scope] += len(conversations)
        self.truncated[scope] += sum(self.model.truncates(request) for request in requests[::len(replies)])
        step = commit_every(LoglikelihoodRequest)
        answers = []
        with tqdm(total=len(requests), desc="judging", unit="req", dynamic_ncols=True) as bar, \
                self.model.working_on(scope):
            for start in range(0, len(requests), step):
                answers += self.model.loglikelihood(requests[start:start + step], batch_size=self.batch_size,
                                                    progress=bar.update)
        logprobs = [answer.logprob for answer in answers]
        return [logprobs[start:start + len(replies)] for start in range(0, len(logprobs), len(replies))]

    def record(self) -> dict:
        """What the run record says about the judge: who it is, the work it did per scope and, through a response
        cache, how many of its answers were stored already (a resumed run's judge asks nothing twice)."""
        cache = {"hits": {scope: self.model.hits[scope] for scope in self.judgments},
                 "computed": {scope: self.model.computed[scope] for scope in self.judgments}} \
            if isinstance(self.model, CachingModel) else None
        return {**self.identity(), "judgments": dict(self.judgments), "truncated_prompts": dict(self.truncated),
                "response_cache": cache}
