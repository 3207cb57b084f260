"""The server's Prometheus metrics (GET /metrics, Prometheus' text format), through prometheus_client: requests by
endpoint and status, prompt and generated tokens, the queue's depth and the batch's size, and histograms of time to
first token, time per output token and end-to-end latency. Each server has a registry of its own, so that two apps
in one process (the tests) count apart."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds; from a few milliseconds (a small model's decode step on a GPU) to minutes (a long generation on a CPU).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)


class ServerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("harness_requests", "HTTP requests answered", ["endpoint", "status"],
                                registry=self.registry)
        self.prompt_tokens = Counter("harness_prompt_tokens", "Prompt tokens of the sequences generated",
                                     registry=self.registry)
        self.generation_tokens = Counter("harness_generation_tokens", "Tokens generated", registry=self.registry)
        self.queue_depth = Gauge("harness_queue_depth", "Sequences waiting for a place in the batch",
                                 registry=self.registry)
        self.batch_size = Gauge("harness_batch_size", "Sequences decoding together", registry=self.registry)
        self.step_batch_size = Histogram("harness_step_batch_size", "Sequences in the batch at each model step",
                                         buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.time_to_first_token = Histogram("harness_time_to_first_token_seconds",
                                             "From a sequence's arrival to its first token", buckets=LATENCY_BUCKETS,
                                             registry=self.registry)
        self.time_per_output_token = Histogram("harness_time_per_output_token_seconds",
                                               "A sequence's time after its first token, per later token",
                                               buckets=LATENCY_BUCKETS, registry=self.registry)
        self.latency = Histogram("harness_e2e_latency_seconds", "From a sequence's arrival to its last token",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)

    def finished(self, ticket, now: float) -> None:
        """Counts a sequence that ended (the engine's Ticket), whatever the reason."""
        tokens = len(ticket.sequence.tokens) + (ticket.sequence.finish == "eos")  # as `usage` counts them
        self.prompt_tokens.inc(len(ticket.prompt_tokens))
        self.generation_tokens.inc(tokens)
        self.latency.observe(now - ticket.submitted)
        if tokens > 1 and ticket.first_token_at is not None:
            self.time_per_output_token.observe((now - ticket.first_token_at) / (tokens - 1))

    def text(self) -> bytes:
        return generate_latest(self.registry)
