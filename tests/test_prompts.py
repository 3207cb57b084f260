"""Prompts in parts: the plain rendering, the chat messages, and the real SmolLM2 chat template as lm-eval
applies it."""

from pathlib import Path

from harness.engine.evaluator import PromptFormat, render
from harness.engine.prompts import Prompt, delimit
from harness.engine.requests import GenerateRequest, LoglikelihoodRequest

import tasks

GOLDEN = Path(__file__).parent / "golden"
PROMPT = Prompt("Q3?", shots=(("Q1?", "A1"), ("Q2?", "A2")), description="About things.")


def test_plain_text_is_description_examples_then_question():
    assert PROMPT.text() == "About things.Q1? A1\n\nQ2? A2\n\nQ3?"
    assert Prompt("Q?", description="About things.\n\n").text() == "About things.\n\nQ?"
    # A system prompt joins the description with the few-shot delimiter (lm-eval's maybe_delimit).
    assert PROMPT.text("Be brief.") == "Be brief.\n\nAbout things.Q1? A1\n\nQ2? A2\n\nQ3?"
    assert delimit("a ", "b", "\n\n") == "a b" and delimit("", "b", "\n\n") == "b"


def test_chat_messages_multiturn_and_single_turn():
    assert PROMPT.messages("Be brief.") == [
        {"role": "system", "content": "Be brief.\n\nAbout things."},
        {"role": "user", "content": "Q1?"}, {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2?"}, {"role": "assistant", "content": "A2"},
        {"role": "user", "content": "Q3?"},
    ]
    assert Prompt("Q3?", shots=(("Q1?", "A1"),)).messages(fewshot_as_multiturn=False) == [
        {"role": "user", "content": "Q1? A1\n\nQ3?"}]


def test_gsm8k_chat_prompt_equals_lm_eval_byte_for_byte(smollm2):
    # lm-eval 0.4.13 --apply_chat_template (few-shot as multiturn) on the same model and data, doc 0.
    expected = (GOLDEN / "gsm8k_chat_doc0.txt").read_text(encoding="utf-8")
    task = tasks.build("gsm8k")
    (request,) = task.requests(task.docs()[0])
    rendered = render(request, smollm2, PromptFormat(chat_template=True))
    assert rendered.context == expected
    # SmolLM2's template supplies its own system prompt when there is none, as lm-eval leaves it to do.
    assert rendered.context.startswith("<|im_start|>system\n") and rendered.context.endswith("<|im_start|>assistant\n")


def test_chat_template_drops_the_leading_space_of_a_choice(smollm2):
    request = LoglikelihoodRequest(Prompt("Is water wet?\nAnswer:"), " yes")
    plain = render(request, smollm2, PromptFormat())
    chat = render(request, smollm2, PromptFormat(chat_template=True, system_prompt="Answer yes or no."))
    assert (plain.context, plain.continuation) == ("Is water wet?\nAnswer:", " yes")
    assert chat.continuation == "yes"  # the answer starts the assistant's turn (lm-eval's rule)
    assert chat.context.startswith("<|im_start|>system\nAnswer yes or no.<|im_end|>\n<|im_start|>user\nIs water")
    # A request whose context is already text passes through unchanged.
    raw = GenerateRequest("raw text")
    assert render(raw, smollm2, PromptFormat(chat_template=True)) is raw
