"""Tasks that ask again once they have answers (Task.follow_up, harness/engine/evaluator.py): a second turn reads the
model's first answer, through the chat template as a conversation; every document's follow-ups go out together;
a repeated run answers both turns from the response cache."""

import shutil
from dataclasses import dataclass

from harness.engine.cache import CachingModel, ResponseCache
from harness.engine.evaluator import PromptFormat, evaluate
from harness.engine.prompts import Prompt
from harness.engine.requests import GenerateRequest
from harness.engine.task import Doc, Metric, Task
from harness.models.registry import load_model
from tests.tiny import make_tiny_llama_folder

QUESTIONS = ["Name a colour.", "Name a fruit.", "Name a city."]
AGAIN = "Another one?"


@dataclass
class TwoTurns(Task):
    """Each document: a question, then, once answered, a second question in the same conversation."""

    def docs(self):
        return [Doc(str(i), {"question": q}) for i, q in enumerate(QUESTIONS)]

    def requests(self, doc):
        return [GenerateRequest(Prompt(doc.fields["question"]), stop=(), max_tokens=4)]

    def follow_up(self, doc, responses):
        if len(responses) > 1:
            return []
        return [GenerateRequest(Prompt(AGAIN, shots=((doc.fields["question"], responses[0]),), conversation=True),
                                stop=(), max_tokens=4)]

    def score(self, doc, responses):
        return {"turns": float(len(responses))}

    def target(self, doc):
        return None


def test_a_second_turn_reads_the_first_answer_as_a_conversation(tmp_path, smollm2_folder):
    folder = make_tiny_llama_folder(tmp_path / "tiny", smollm2_folder, max_positions=256)
    shutil.copy(smollm2_folder / "chat_template.jinja", folder)  # SmolLM2's chat template, for the conversation
    model = load_model(f"hf:{folder}")
    task = TwoTurns(name="two_turns", metrics=[Metric("turns")])
    # Few-shot examples collapsed into one turn must not collapse a conversation.
    chat = PromptFormat(chat_template=True, fewshot_as_multiturn=False)
    cached = CachingModel(model, ResponseCache(tmp_path / "cache.sqlite"), chat.describe(model))
    evaluation = evaluate(cached, [task], prompt_format=chat)
    assert evaluation.results["two_turns"]["turns"] == 2.0
    assert sum(cached.computed.values()) == 6 and not sum(cached.hits.values())
    for sample, question in zip(evaluation.samples, QUESTIONS):
        first, second = sample["response"]
        conversation = [{"role": "user", "content": question}, {"role": "assistant", "content": first},
                        {"role": "user", "content": AGAIN}]
        expected = GenerateRequest(model.apply_chat_template(conversation), stop=(), max_tokens=4)
        assert sample["request_keys"][1] == expected.key  # the second turn sent, as the template writes it
        assert model.generate_until([expected]) == [second]
    # Asked again, the same run answers both turns from the cache: the second turns are the same requests.
    again = CachingModel(model, ResponseCache(tmp_path / "cache.sqlite"), chat.describe(model))
    assert evaluate(again, [task], prompt_format=chat).samples == evaluation.samples
    assert sum(again.hits.values()) == 6 and not sum(again.computed.values())
