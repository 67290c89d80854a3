"""``reward:MODEL`` judge: a local sequence-classification reward model scores every completion.

The reward of a completion is the model's first logit on the prompt and completion rendered as a
user turn and an assistant turn of the reward model's chat template (plain ``prompt\\n\\ncompletion``
when it has none), as reward models are trained. B wins an item when its reward is higher; equal
rewards tie. Per model: the mean reward with a bootstrap 95% interval.
"""

from __future__ import annotations

import numpy as np

from orpo.evaluation.judges.base import Item, Verdict
from orpo.evaluation.stats import bootstrap_interval

MAX_TOKENS = 4096  # cap for tokenizers that declare no usable model_max_length


class RewardJudge:
    kind = "reward"

    def __init__(self, model: str, batch_size: int = 8):
        if batch_size < 1:
            raise ValueError(f"--batch-size {batch_size} must be >= 1")
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from orpo.models.load import ensure_pad_token, load_cause, missing_local_path

        self.name, self.batch_size = model, batch_size
        missing = missing_local_path(model)
        if missing is not None:
            raise ValueError(f"reward:{model}: {missing}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForSequenceClassification.from_pretrained(model).eval()
        except OSError as err:
            raise ValueError(
                f"reward:{model}: cannot load a sequence-classification model: {load_cause(model, err)}"
            ) from err
        ensure_pad_token(self.tokenizer, self.model)
        self.tokenizer.padding_side = "right"
        positions = getattr(self.model.config, "max_position_embeddings", None) or MAX_TOKENS
        self.max_length = min(self.tokenizer.model_max_length or MAX_TOKENS, positions, MAX_TOKENS)
        self.rewards: dict[str, list[float]] = {"A": [], "B": []}

    def text(self, prompt: str, completion: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return f"{prompt}\n\n{completion}"

    def score(self, texts: list[str]) -> list[float]:
        """Rewards of rendered texts, in batches (right-padded; the model reads its last real token)."""
        import torch

        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=False,
            )
            with torch.no_grad():
                logits = self.model(**batch).logits  # (b, num_labels)
            out.extend(logits[:, 0].float().tolist())
        return out

    def judge(self, items: list[Item]) -> list[Verdict]:
        texts = [self.text(i.prompt, c) for i in items for c in (i.a, i.b)]
        rewards = self.score(texts)
        verdicts = []
        for k, item in enumerate(items):
            ra, rb = rewards[2 * k], rewards[2 * k + 1]
            self.rewards["A"].append(ra)
            self.rewards["B"].append(rb)
            winner = "B" if rb > ra else "A" if ra > rb else "tie"
            verdicts.append(Verdict(item.id, winner, {"reward_a": ra, "reward_b": rb}))
        return verdicts

    def per_model(self) -> dict[str, dict[str, dict[str, float]]]:
        out = {}
        for model, values in self.rewards.items():
            low, high = bootstrap_interval(np.array(values))
            out[model] = {"reward": {"mean": float(np.mean(values)), "ci_low": low, "ci_high": high}}
        return out

    def settings(self) -> dict:
        return {"kind": "reward", "model": self.name, "max_length": self.max_length}
