"""Tiny models and locally trained tokenizers, for tests, the demo and benchmarks (no Hub access).

``build_tokenizer`` trains a tokenizer on a text corpus in a second or two: a byte-level BPE (the
GPT-2 / Llama-3 / Qwen family) or a SentencePiece-style BPE with a metaspace pre-tokenizer (the
Llama-2 / Mistral / Gemma family). Both carry a ChatML-style chat template; the Llama-shaped one
renders BOS as text at the start of the template, as Llama-3's does, so BOS handling is exercised.

``build_model`` makes a randomly initialised causal LM of a given architecture from a config.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

ARCHITECTURES = ("llama", "qwen2", "mistral", "gemma", "phi3", "qwen2_moe")
FAMILIES = ("bytelevel", "sentencepiece")

IM_START, IM_END = "<|im_start|>", "<|im_end|>"

# ChatML turns; no newline after <|im_end|> so an assistant turn ends exactly on EOS.
CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_DEFAULT_CORPUS = (
    "The quick brown fox jumps over the lazy dog. ORPO trains a language model on preference pairs. "
    "def add(a, b):\n    return a + b\n"
    "Question: what is two plus three? Answer: five.\n"
)


def build_tokenizer(
    corpus: Iterable[str] | None = None,
    vocab_size: int = 512,
    family: str = "bytelevel",
    with_bos: bool = True,
) -> PreTrainedTokenizerFast:
    """Train a small tokenizer on ``corpus`` with a ChatML chat template.

    EOS is ``<|im_end|>`` (ends every assistant turn), pad is ``<pad>``; BOS ``<s>`` when ``with_bos``
    (Llama style) and none otherwise (Qwen style).
    """
    if family not in FAMILIES:
        raise ValueError(f"family={family!r} is not one of {FAMILIES}")
    specials = ["<pad>", IM_START, IM_END] + (["<s>"] if with_bos else [])
    if family == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tok.normalizer = normalizers.Replace(" ", "\u2581")
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
        tok.decoder = decoders.Sequence(
            [
                decoders.Replace("\u2581", " "),
                decoders.ByteFallback(),
                decoders.Fuse(),
                decoders.Strip(" ", 1, 0),
            ]
        )
        specials.append("<unk>")
        # Byte-fallback tokens so any text is representable.
        alphabet = []
        specials += [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + len(specials),
        special_tokens=specials,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    texts = list(corpus) if corpus is not None else []
    tok.train_from_iterator(texts + [_DEFAULT_CORPUS], trainer=trainer)
    if with_bos:
        # Like Llama's tokenizers: plain `tokenizer(text)` prepends BOS, so code that also renders a
        # template with BOS as text is exercised against double BOS.
        bos_id = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>" if with_bos else None,
        eos_token=IM_END,
        pad_token="<pad>",
        unk_token="<unk>" if family == "sentencepiece" else None,
        additional_special_tokens=[IM_START],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast


def build_model(
    tokenizer: PreTrainedTokenizerFast,
    arch: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 2048,
    seed: int = 0,
    **overrides,
) -> PreTrainedModel:
    """A randomly initialised causal LM of ``arch`` sized to ``tokenizer`` (float32, eager-free SDPA)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch={arch!r} is not one of {ARCHITECTURES}")
    fields = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=arch in ("gemma", "qwen2"),
    )
    if arch == "gemma":
        fields["head_dim"] = hidden_size // num_heads
    if arch == "qwen2_moe":
        fields.update(
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=hidden_size,
            shared_expert_intermediate_size=hidden_size,
        )
    fields.update(overrides)
    config = AutoConfig.for_model(arch, **fields)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model
