"""A prompt in parts, so that one task prompt can be rendered as plain text or through a model's chat template.

Tasks build a `Prompt`; the evaluator renders it, because only the evaluator knows whether the user asked for a
chat template. Both renderings follow lm-evaluation-harness 0.4.13 (`Task.fewshot_context`, `build_qa_turn`,
`multiturn_to_singleturn`), so that scores are comparable with the field's:

  plain text   [system prompt + delimiter +] description, then each example's `question + target_delimiter +
               answer + fewshot_delimiter`, then the question
  chat         messages: a system message (the system prompt and the description) when there is one, each
               example as a user turn (the question) and an assistant turn (the answer), then the question as
               the last user turn; or, single-turn, every example and the question collapsed into one user turn.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prompt:
    question: str  # the document's own text, which the model answers
    shots: tuple[tuple[str, str], ...] = ()  # few-shot examples: (question, answer)
    description: str = ""  # the task's instruction, before the examples
    target_delimiter: str = " "  # between a question and its answer
    fewshot_delimiter: str = "\n\n"  # after each example
    # The shots are earlier turns of this conversation (a second turn after the model's first answer), not
    # few-shot examples: through a chat template each is always its own turn, whatever --fewshot-as-multiturn says.
    conversation: bool = False

    def system(self, system_prompt: str | None) -> str:
        return delimit(system_prompt or "", self.description, self.fewshot_delimiter)

    def text(self, system_prompt: str | None = None) -> str:
        examples = "".join(q + self.target_delimiter + a + self.fewshot_delimiter for q, a in self.shots)
        return self.system(system_prompt) + examples + self.question

    def messages(self, system_prompt: str | None = None, fewshot_as_multiturn: bool = True) -> list[dict[str, str]]:
        system = self.system(system_prompt)
        messages = [{"role": "system", "content": system}] if system else []
        if fewshot_as_multiturn or self.conversation:
            for question, answer in self.shots:
                messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            return messages + [{"role": "user", "content": self.question}]
        examples = "".join(q + self.target_delimiter + a + self.fewshot_delimiter for q, a in self.shots)
        return messages + [{"role": "user", "content": examples + self.question}]


def delimit(prefix: str, suffix: str, delimiter: str) -> str:
    """prefix + suffix, with the delimiter between them unless either already has whitespace at the join
    (lm-eval's maybe_delimit)."""
    if not prefix or not suffix:
        return prefix or suffix
    if prefix[-1].isspace() or suffix[0].isspace():
        return prefix + suffix
    return prefix + delimiter + suffix
