"""`ORPOConfig`: every knob of an ORPO run, as a `transformers.TrainingArguments` subclass.

Each field is documented once, here, in its ``metadata["help"]``; the CLI help and the YAML
reference are generated from these strings. Defaults equal TRL's experimental ``ORPOConfig``
(learning_rate 1e-6, logging_steps 10, gradient checkpointing on, bf16 on unless fp16) so a TRL
script behaves the same after changing its import.

Every value is checked in ``__post_init__`` (``MINIMUMS``, the choices of the string fields, the
checks across fields) before transformers reads it, so a Python script, a YAML recipe and a
``key=value`` override of ``orpo train`` get the same one-line error naming the field.

Old names that tutorials still use are accepted with a one-line notice (``_map_legacy_names``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainingArguments

from orpo._log import notice
from orpo.losses import OBJECTIVES, get_objective

ENGINES = ("auto", "packed", "padded")
# Old engine names, still accepted: "reference" was the padded engine's name before the word was
# kept for the reference model of DPO/IPO/hinge.
ENGINE_ALIASES = {"reference": "padded"}
TEMPLATE_MODES = ("auto", "always", "never")
TOKENIZATIONS = ("trl", "orpo")
TRUNCATION_SIDES = ("left", "right")
NONFINITE_ACTIONS = ("stop", "skip")


@dataclass(frozen=True)
class Minimum:
    """The smallest valid value of a numeric field, and why when the number alone does not say it."""

    low: float | int
    why: str = ""


# field -> its smallest valid value. The TrainingArguments fields are ranges transformers leaves
# unchecked (a negative learning rate or a batch of 0 would fail mid-run, or train wrong); checked here,
# so a Python script, a YAML recipe and a `key=value` override get the same one-line error.
MINIMUMS: dict[str, Minimum] = {
    "learning_rate": Minimum(0.0),
    "num_train_epochs": Minimum(0.0),
    "per_device_train_batch_size": Minimum(1),
    "per_device_eval_batch_size": Minimum(1),
    "gradient_accumulation_steps": Minimum(1),
    "max_grad_norm": Minimum(0.0, "0: no clipping"),
    "weight_decay": Minimum(0.0),
    "warmup_steps": Minimum(0.0, "a step count, or a fraction of the steps when < 1"),
    "min_response_tokens": Minimum(1, "an empty response has no log-prob"),
    "generate_during_eval_prompts": Minimum(1),
    "generate_during_eval_max_new_tokens": Minimum(1),
    "logit_chunk_size": Minimum(1),
    "max_nonfinite_steps": Minimum(1),
}


@dataclass
class ORPOConfig(TrainingArguments):
    """Configuration of an ORPO run: `TrainingArguments` plus the fields below."""

    # ---- TrainingArguments fields whose defaults follow TRL's ORPOConfig ----
    learning_rate: float = field(
        default=1e-6, metadata={"help": "Peak learning rate of AdamW (TRL default 1e-6)."}
    )
    logging_steps: float = field(default=10, metadata={"help": "Log metrics every N optimizer steps."})
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bf16 mixed precision (autocast). Defaults to True unless fp16 is set; works on CPU."
        },
    )

    # ---- ORPO objective ----
    beta: float = field(
        default=0.1,
        metadata={
            "help": "Weight of the odds-ratio term: L = L_NLL + beta * L_OR. The paper's lambda "
            "(aliases: orpo_alpha, lambda_). Its meaning depends on `method`: "
            + "; ".join(f"{o.name}: {o.beta_means}" for o in OBJECTIVES.values())
            + " (DPO: 0.1 typical; SimPO: 2 to 10)."
        },
    )
    nll_on_prompt: bool = field(
        default=True,
        metadata={
            "help": "NLL term covers prompt + chosen response (paper's code, TRL) when true; the chosen "
            "response only (paper's equation, LLaMA-Factory) when false."
        },
    )
    method: str = field(
        default="orpo",
        metadata={
            "help": f"Objective on the same engine, for comparisons: one of {', '.join(OBJECTIVES)} "
            "(`orpo compare --list-methods` describes each)."
        },
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "method=dpo: assumed probability that a preference label is flipped (conservative DPO); "
            "0 is plain DPO. In [0, 0.5)."
        },
    )
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata={
            "help": "Methods with a reference model (dpo, ipo, hinge, kto): compute the reference log-probs in one "
            "no-grad pass before training, cached on disk by the reference model's and the data's "
            "fingerprint (in $ORPO_CACHE_DIR, default ~/.cache/orpo), so training holds one model. "
            "Otherwise the reference runs every step: the adapter-disabled base model when training an "
            "adapter, else `ref_model` (trainer argument), else a frozen copy of the initial model."
        },
    )
    precompute_ref_batch_size: int | None = field(
        default=None,
        metadata={"help": "Pairs per batch of the reference pass (None: per_device_eval_batch_size)."},
    )
    simpo_gamma: float = field(
        default=0.5, metadata={"help": "SimPO target reward margin gamma (method=simpo only)."}
    )
    desirable_weight: float = field(
        default=1.0,
        metadata={
            "help": "method=kto: weight of the desirable examples' losses (TRL's name); raise the rarer "
            "kind's weight so that desirable_weight * n_desirable / (undesirable_weight * n_undesirable) "
            "is in [1, 4/3] (KTO paper). > 0."
        },
    )
    undesirable_weight: float = field(
        default=1.0, metadata={"help": "method=kto: weight of the undesirable examples' losses. > 0."}
    )
    # ---- Sequence lengths ----
    max_length: int | None = field(
        default=1024,
        metadata={"help": "Maximum tokens of prompt + response (per sequence). Longer pairs are truncated."},
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Maximum prompt tokens; longer prompts lose tokens from the side set by "
            "prompt_truncation_side (default: keep the end). None: only max_length applies."
        },
    )
    max_completion_length: int | None = field(
        default=None,
        metadata={"help": "Maximum response tokens (chosen and rejected each); None: no own limit."},
    )
    prompt_truncation_side: str = field(
        default="left",
        metadata={
            "help": "'left' drops the start of long prompts (keeps the question); 'right' keeps the start."
        },
    )
    min_response_tokens: int = field(
        default=1,
        metadata={
            "help": "A pair whose chosen or rejected response keeps fewer tokens than this after truncation "
            "is dropped and counted (never trained on an emptied response)."
        },
    )
    # ---- Data ----
    tokenization: str = field(
        default="trl",
        metadata={
            "help": "How rows become tokens. 'trl' (default in Python, the drop-in promise): exactly TRL "
            "1.16's input ids and labels: string rows raw, BOS prepended whenever the tokenizer has one, "
            "prompt + response tokenised together and split at the boundary. 'orpo' (set by the embedded "
            "default recipe of `orpo train`): string rows wrapped in the chat template when the tokenizer has one "
            "(chat_template_mode), BOS only as the tokenizer adds it, no token straddling the boundary, "
            "EOS exactly once."
        },
    )
    chat_template_mode: str | None = field(
        default=None,
        metadata={
            "help": "tokenization 'orpo' only: how string rows are rendered: 'auto' (default) wraps them as a "
            "user turn when the tokenizer has a chat template, 'always' requires a template, 'never' uses the "
            "raw text. Conversational rows always use the template. With tokenization 'trl' it is 'never'."
        },
    )
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Processes for dataset preprocessing (None: in-process)."}
    )
    # ---- Engine ----
    engine: str = field(
        default="auto",
        metadata={
            "help": "'packed': prompt computed once, pairs packed without padding, output head only where the "
            "loss needs it. 'padded': chosen and rejected padded in one batch, full logits (slow, simple; the "
            "oracle the packed engine is tested against; 'reference' is its old name). "
            "'auto': packed when the model supports it, else padded with a logged reason."
        },
    )
    max_tokens_per_batch: int | None = field(
        default=None,
        metadata={
            "help": "Packed engine: pack pairs into rows of at most this many tokens. None: one pair per "
            "row (per_device_train_batch_size counts pairs)."
        },
    )
    logit_chunk_size: int = field(
        default=1024,
        metadata={
            "help": "Packed engine: positions per chunk of the output head (bounds [chunk x vocab] memory)."
        },
    )
    packed_attention: str = field(
        default="segments",
        metadata={
            "help": "Packed engine: 'segments' runs each pair's attention through causal kernels (memory "
            "linear in length; FlashAttention varlen on CUDA when the model is loaded with flash_attention_2/3); "
            "'mask' builds a dense [rows x 1 x L x L] mask for the model's own sdpa/eager attention (an A/B "
            "reference; memory grows with L^2)."
        },
    )
    # ---- Model ----
    disable_dropout: bool = field(default=True, metadata={"help": "Set every dropout probability to 0."})
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments for AutoModelForCausalLM.from_pretrained when model is a name."},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow models and tokenizers that ship custom code."}
    )
    padding_value: int | None = field(
        default=None, metadata={"help": "Pad token id (None: the tokenizer's, else its EOS)."}
    )
    generate_during_eval: bool = field(
        default=False,
        metadata={
            "help": "With an eval set: at each evaluation, greedy completions of the first "
            "generate_during_eval_prompts eval prompts go to OUTPUT_DIR/generations.jsonl, TensorBoard "
            "(when enabled) and report.html. `orpo generate` does it at scale."
        },
    )
    generate_during_eval_prompts: int = field(
        default=4, metadata={"help": "How many eval prompts generate_during_eval completes (the first ones)."}
    )
    generate_during_eval_max_new_tokens: int = field(
        default=64, metadata={"help": "Completion length cap of generate_during_eval."}
    )
    is_encoder_decoder: bool | None = field(
        default=None,
        metadata={"help": "Accepted for TRL compatibility; only decoder-only models are supported."},
    )

    # ---- Reliability (orpo.guard) ----
    on_nonfinite: str | None = field(
        default=None,
        metadata={
            "help": "A non-finite loss or gradient norm: 'stop' ends the run with an error naming the step "
            "and the batch's rows, before the weights change; 'skip' drops that optimizer step (as AMP's "
            "GradScaler does, through the scaler when there is one), counts it, and stops after "
            "max_nonfinite_steps in a row. Unset: 'skip' under float16 (fp16=True or float16 weights, where "
            "an overflowing step is routine), else 'stop' (bf16, float32)."
        },
    )
    max_nonfinite_steps: int = field(
        default=3, metadata={"help": "on_nonfinite='skip': stop after this many non-finite steps in a row."}
    )

    # ---- Old names (tutorials); mapped in __post_init__ with a notice ----
    evaluation_strategy: str | None = field(default=None, metadata={"help": "Old name of eval_strategy."})
    warmup_ratio: float | None = field(
        default=None, metadata={"help": "Old name: warmup as a fraction of steps (now warmup_steps < 1)."}
    )
    orpo_alpha: float | None = field(default=None, metadata={"help": "Alias of beta (the paper's code)."})
    lambda_: float | None = field(default=None, metadata={"help": "Alias of beta (the paper's lambda)."})
    overwrite_output_dir: bool | None = field(
        default=None,
        metadata={
            "help": "`orpo train` into an output_dir that holds another run: true moves the old run aside "
            "(renamed to <output_dir>.old-<time>, never deleted); otherwise the run is refused."
        },
    )
    logging_dir: str | None = field(
        default=None, metadata={"help": "Removed in transformers 5; accepted and ignored."}
    )
    group_by_length: bool | None = field(
        default=None, metadata={"help": "Old name: true means train_sampling_strategy='group_by_length'."}
    )

    _VALID_DICT_FIELDS = TrainingArguments._VALID_DICT_FIELDS + ["model_init_kwargs"]

    def __post_init__(self) -> None:
        self._map_legacy_names()
        self._check_fields()
        # TRL's default: bf16 unless fp16.
        if self.bf16 is None:
            self.bf16 = not self.fp16
        # TRL's default: gradient checkpointing on. transformers 5 renamed it activation_checkpointing;
        # set the new name only when the user set neither, so an explicit False is kept.
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            self.activation_checkpointing = True
        self._check_device_options()
        super().__post_init__()
        # DeepSpeed clips gradients itself, at its config's gradient_clipping. transformers fills that
        # key from max_grad_norm (just now, in super().__post_init__) only when the config has it as
        # "auto"; a config without it gets Accelerate's 1.0 whatever max_grad_norm says (max_grad_norm=0,
        # "no clipping", still clipped at 1). So a missing key takes max_grad_norm, as "auto" would.
        deepspeed = getattr(self, "hf_deepspeed_config", None)
        if deepspeed is not None and "gradient_clipping" not in deepspeed.config:
            deepspeed.config["gradient_clipping"] = self.max_grad_norm

    def _map_legacy_names(self) -> None:
        if self.evaluation_strategy is not None:
            notice(
                f"`evaluation_strategy` is the old name of `eval_strategy`; using eval_strategy={self.evaluation_strategy!r}"
            )
            self.eval_strategy = self.evaluation_strategy
            self.evaluation_strategy = None
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
            notice(
                f"`warmup_ratio` is the old name of a fractional `warmup_steps`; using warmup_steps={self.warmup_ratio}"
            )
            if self.warmup_ratio > 0:
                self.warmup_steps = self.warmup_ratio
            self.warmup_ratio = None
        for alias in ("orpo_alpha", "lambda_"):
            value = getattr(self, alias)
            if value is not None:
                notice(f"`{alias}` is another name of `beta`; using beta={value}")
                self.beta = value
                setattr(self, alias, None)
        if self.group_by_length is not None:
            if self.group_by_length:
                notice(
                    "`group_by_length` is the old name of train_sampling_strategy='group_by_length'; accepted"
                )
                self.train_sampling_strategy = "group_by_length"
            self.group_by_length = None
        for removed in ("logging_dir",):
            if getattr(self, removed) is not None:
                notice(f"`{removed}` was removed in transformers 5 and is ignored")
                setattr(self, removed, None)

    def _check_fields(self) -> None:
        """Every range and choice of the fields, then the checks across fields: one ValueError naming the
        field, the value and the fix, before ``TrainingArguments.__post_init__`` reads any of them."""
        self._check_minimums()
        self._check_objective()
        self._check_choices()
        self._check_lengths()
        self._check_combinations()

    def _check_minimums(self) -> None:
        for name, minimum in MINIMUMS.items():
            value = getattr(self, name)
            if value is None:  # left to transformers: some read None as "off" (max_grad_norm)
                continue
            if not isinstance(value, numbers.Real) or math.isnan(value):
                raise ValueError(f"{name}={value!r} is not a number; give one >= {minimum.low}")
            if value < minimum.low:
                why = f" ({minimum.why})" if minimum.why else ""
                raise ValueError(f"{name}={value!r} must be >= {minimum.low}{why}")

    def _check_objective(self) -> None:
        if not math.isfinite(self.beta) or self.beta < 0:
            raise ValueError(f"beta={self.beta} must be a finite number >= 0 (the paper uses 0.1 to 0.5)")
        get_objective(self.method)  # raises on an unknown method, listing the registered ones
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing={self.label_smoothing} must be in [0, 0.5) (0: plain DPO)")
        for name in ("desirable_weight", "undesirable_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value!r} must be a number > 0 (1.0: KTO's default)")

    def _check_choices(self) -> None:
        """The string fields, each one of its choices (old names mapped to the new ones first)."""
        if self.engine in ENGINE_ALIASES:
            notice(
                f"engine={self.engine!r} is the old name of engine={ENGINE_ALIASES[self.engine]!r}; accepted"
            )
            self.engine = ENGINE_ALIASES[self.engine]
        if self.engine not in ENGINES:
            raise ValueError(f"engine={self.engine!r} is not one of {ENGINES}")
        if self.tokenization not in TOKENIZATIONS:
            raise ValueError(
                f"tokenization={self.tokenization!r} is not one of {TOKENIZATIONS} ('trl': TRL's exact tokens, "
                "'orpo': chat templates for string rows, BOS as the tokenizer adds it)"
            )
        if self.chat_template_mode is None:
            self.chat_template_mode = "never" if self.tokenization == "trl" else "auto"
        if self.chat_template_mode not in TEMPLATE_MODES:
            raise ValueError(f"chat_template_mode={self.chat_template_mode!r} is not one of {TEMPLATE_MODES}")
        if self.prompt_truncation_side not in TRUNCATION_SIDES:
            raise ValueError(
                f"prompt_truncation_side={self.prompt_truncation_side!r} is not 'left' or 'right'"
            )
        if self.packed_attention not in ("segments", "mask"):
            raise ValueError(f"packed_attention={self.packed_attention!r} must be 'segments' or 'mask'")
        if self.on_nonfinite is not None and self.on_nonfinite not in NONFINITE_ACTIONS:
            raise ValueError(f"on_nonfinite={self.on_nonfinite!r} is not one of {NONFINITE_ACTIONS}")

    def _check_lengths(self) -> None:
        for name in ("max_length", "max_prompt_length", "max_completion_length", "max_tokens_per_batch"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value!r} must be a positive integer or None")

    def _check_combinations(self) -> None:
        """Checks across fields: each names every field it reads, so the recipe can say where each was set."""
        if get_objective(self.method).unpaired and self.per_device_train_batch_size < 2:
            raise ValueError(
                f"method={self.method!r} needs per_device_train_batch_size >= 2, got "
                f"{self.per_device_train_batch_size}: each example's KL sample takes another example's completion "
                "from its batch (with 1, the KL term equals the example's own reward)"
            )
        if self.tokenization == "trl" and self.chat_template_mode != "never":
            raise ValueError(
                f"chat_template_mode={self.chat_template_mode!r} templates string rows, which TRL does not; "
                "set tokenization='orpo' to use it (tokenization='trl' renders string rows raw)"
            )
        if self.max_length is not None and self.max_prompt_length is not None:
            if self.max_prompt_length + self.min_response_tokens > self.max_length:
                raise ValueError(
                    f"max_prompt_length={self.max_prompt_length} leaves no room for a response within "
                    f"max_length={self.max_length}; lower max_prompt_length or raise max_length"
                )
        if self.is_encoder_decoder:
            raise ValueError("is_encoder_decoder=True: orpo trains decoder-only causal LMs only")

    def resolved_on_nonfinite(self, model_dtype: torch.dtype | None) -> str:
        """``on_nonfinite`` as set, else its default for this run: 'skip' under float16 (``fp16=True`` or
        ``model_dtype`` float16: overflow is expected there and AMP's GradScaler skips such steps), else 'stop'."""
        if self.on_nonfinite is not None:
            return self.on_nonfinite
        return "skip" if self.fp16 or model_dtype == torch.float16 else "stop"

    def _check_device_options(self) -> None:
        has_cuda = torch.cuda.is_available()
        if self.fp16 and not has_cuda:
            raise ValueError("fp16=True needs a CUDA GPU; on CPU use bf16=True (autocast) or bf16=False")
        if not has_cuda and not self.use_cpu:
            # transformers refuses bf16 without a GPU unless use_cpu is set; on a CPU-only machine the
            # CPU is the device anyway, and bf16 autocast works there.
            self.use_cpu = True
        if not has_cuda and isinstance(self.optim, str) and ("paged" in self.optim or "8bit" in self.optim):
            notice(f"optim={self.optim!r} needs a CUDA GPU; using adamw_torch on this CPU machine")
            self.optim = "adamw_torch"
        if not has_cuda and self.tf32:
            raise ValueError("tf32=True needs an Ampere or newer NVIDIA GPU; remove it on CPU")


@dataclass
class KTOConfig(ORPOConfig):
    """TRL's ``KTOConfig`` for ``KTOTrainer``: an ``ORPOConfig`` whose ``method`` is ``"kto"``. The fields a
    KTO script sets (``beta``, ``desirable_weight``, ``undesirable_weight``, ``max_length``,
    ``learning_rate``, ...) have TRL 1.16's KTOConfig defaults, which are ORPOConfig's; ``method`` stays
    "kto" (another objective is an ``ORPOConfig(method=...)``)."""

    method: str = field(default="kto", metadata={"help": "The objective: kto (see ORPOConfig.method)."})
    loss_type: str = field(
        default="kto",
        metadata={
            "help": "TRL's KTO loss variant: 'kto' (the paper's). 'apo_zero_unpaired' is not supported."
        },
    )

    def __post_init__(self):
        if self.loss_type != "kto":
            raise ValueError(
                f"loss_type={self.loss_type!r}: only 'kto' (the paper's loss) is supported; "
                "TRL's 'apo_zero_unpaired' is not"
            )
        if self.method != "kto":
            raise ValueError(
                f"method={self.method!r}: a KTOConfig trains method='kto'; use ORPOConfig(method={self.method!r})"
            )
        super().__post_init__()
