"""`ORPOTrainer`: a thin `transformers.Trainer` that wires data, engine and loss together.

Drop-in for ``trl.experimental.orpo.ORPOTrainer``: same constructor arguments (plus the old
``tokenizer=``), same logged metric names. What it overrides and why:
- ``compute_loss``: engine forward -> per-sequence stats -> objective (``orpo.losses``).
- ``_get_num_items_in_batch``: counts NLL tokens and pairs over all micro-batches of an optimizer
  step (and all processes), so the loss is exact under gradient accumulation: the step's NLL is
  the token mean over the whole step, the odds-ratio term the pair mean. (TRL averages per
  micro-batch means, which changes the loss with the accumulation split.)
- ``prediction_step`` / ``log``: evaluation returns the same metrics with the ``eval_`` prefix.
- ``_clip_grad_norm`` / ``_get_grad_norm``: float16 gradients (a float16 model, no scaler) get their
  norm reduced in float32; in float16 it overflows to inf once it passes 256.
- ``compute_loss`` / ``_clip_grad_norm`` / ``_get_grad_norm``: float16 weights trained without AMP (no
  ``fp16=True``, so no ``GradScaler``) get a dynamic loss scale of ours (``orpo.guard.LossScaler``, in
  ``on_nonfinite='skip'``, the float16 default): without it an overflowing step is skipped at the same
  size every time and the run stops after ``max_nonfinite_steps``; with it the step is skipped, the
  scale halves and the next step fits, as AMP's scaler does. bfloat16 has float32's range: no scaler.
- ``create_optimizer``: the same float16 weights without AMP are stepped through float32 master copies
  (``orpo.guard.Float32Masters``), so Adam's moments are float32: in float16 its second moment
  underflows to 0 and the steps blow the weights up (TRL's float16 test ends with every weight NaN).
- ``training_step`` / ``_get_grad_norm`` / ``_save`` / ``_save_checkpoint`` / ``train``: the
  reliability hooks (logic in ``orpo.guard`` and ``orpo.checkpoints``): a non-finite loss or gradient
  norm stops the run before the optimizer step (under float16 it skips the step, as AMP's GradScaler
  does, and stops after ``max_nonfinite_steps`` in a row), no save writes NaN weights, checkpoints are written
  to a staging folder and renamed when complete, ``resume_from_checkpoint=True`` takes the newest
  complete one, SIGINT / SIGTERM save a checkpoint and stop.
The objective (``args.method``) comes from the registry in ``orpo.losses``; objectives with a
reference model (DPO, IPO, hinge, KTO) get their reference log-probs from ``orpo.engine.refpass`` (``ref_model=``
is accepted as TRL's DPOTrainer accepts it).
Logged metrics are exact means over every pair (token, for ``nll_loss`` and ``logits/*``) since
the last log; with equal batch sizes they equal TRL's means of per-batch means.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType
from datasets import Dataset, DatasetDict
from transformers import PreTrainedModel, Trainer, TrainingArguments, enable_full_determinism, set_seed
from transformers.trainer_utils import rotate_checkpoints

from orpo import checkpoints
from orpo._log import notice
from orpo.config import KTOConfig, ORPOConfig
from orpo.data.pipeline import LENGTH_COLUMN, SOURCE_ROW_COLUMN, DataReport, prepare_dataset
from orpo.data.tokenize import describe_tokenization
from orpo.data.unpaired import LABEL_COLUMN
from orpo.engine import PAIR_COLUMNS, PROMPT_TAIL_COLUMNS, SequenceStats, build_engine
from orpo.engine.refpass import REF_COLUMNS, RefColumnsCollator, precompute, resolve_reference
from orpo.guard import Float32Masters, LossScaler, NonFiniteGuard, StopOnSignal, assert_finite
from orpo.losses import Knobs, PairLogps, get_objective
from orpo.models.load import ensure_pad_token, load_model, load_tokenizer, prepare_model


class ORPOTrainer(Trainer):
    """Train a causal LM with ORPO (or any objective of ``orpo.losses``, see ``ORPOConfig.method``).

    Datasets may be raw rows in any supported layout (they are normalised, rendered and tokenised
    here) or already hold the token columns. A custom ``data_collator`` must emit the batch layout
    of the engine in use (``orpo.engine``), since the loss reads it directly.
    """

    # compute_loss divides by the step's total counts itself (see module docstring).
    loss_is_scaled_for_ga = True
    # Hub tags of the trained model (model.model_tags, the model card), as TRL tags its trainers' models.
    _tag_names = ["orpo"]
    # The config built when args is None or a plain TrainingArguments.
    config_class = ORPOConfig

    def __init__(
        self,
        model: PreTrainedModel | torch.nn.Module | str | None = None,
        args: ORPOConfig | None = None,
        data_collator: Callable | None = None,
        train_dataset: Dataset | list | None = None,
        eval_dataset: Dataset | dict | list | None = None,
        processing_class=None,
        model_init: Callable[[], PreTrainedModel] | None = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
        preprocess_logits_for_metrics: Callable | None = None,
        peft_config=None,
        compute_metrics: Callable | None = None,
        tokenizer=None,
        data_columns: dict[str, str] | None = None,
        data_format: str | None = None,
        ref_model: PreTrainedModel | torch.nn.Module | str | None = None,
        **trainer_kwargs: Any,
    ):
        args = self._resolve_args(args, self.config_class)
        model, processing_class = self._setup_model(
            model, args, processing_class, tokenizer, model_init, peft_config
        )
        self._setup_objective(model, ref_model, args)
        self._setup_engine(model, processing_class, args)
        self._data_columns, self._data_format = data_columns, data_format
        train_dataset, eval_dataset = self._setup_data(train_dataset, eval_dataset, processing_class, args)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator or WithSourceRows(self._default_collator()),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            model_init=model_init,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
            **trainer_kwargs,
        )
        self._setup_reliability(args)
        if args.generate_during_eval:
            self._add_generations_callback()
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names)
        if self.reference is not None:
            self._setup_reference()

    def create_model_card(self, model_name: str | None = None, tags=None, **kwargs) -> None:
        """``Trainer.create_model_card`` with the "orpo" tag added."""
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        tags += [t for t in self._tag_names if t not in tags]
        super().create_model_card(model_name=model_name, tags=tags, **kwargs)

    # ---- construction helpers ----

    @staticmethod
    def _setup_model(model, args: ORPOConfig, processing_class, tokenizer, model_init, peft_config) -> tuple:
        """(the model, loaded when given by name and prepared per ``args`` / ``peft_config``; its tokenizer,
        loaded from the model's name when not given, with a pad token)."""
        if tokenizer is not None:
            if processing_class is not None:
                raise ValueError(
                    "pass the tokenizer once: `processing_class=` (new name) or `tokenizer=` (old name)"
                )
            notice("`tokenizer=` is the old name of `processing_class=`; accepted")
            processing_class = tokenizer
        if model is None and model_init is None:
            raise ValueError("pass a model (a name, a path or a module) or a model_init")
        # The adapter's random init (and a model_init's) comes from the seed, as TRL's does: torch seeds
        # a fresh process at random, so without this a LoRA run on a loaded model differs run to run.
        if args.full_determinism:
            enable_full_determinism(args.seed)
        else:
            set_seed(args.seed)
        if isinstance(model, str):
            model = load_model(model, args.model_init_kwargs, args.trust_remote_code)
        elif args.model_init_kwargs:
            raise ValueError("model_init_kwargs are for a model given by name; this model is already loaded")
        if model is None:
            model = model_init()
        if getattr(model.config, "is_encoder_decoder", False):
            raise ValueError("encoder-decoder models are not supported; orpo trains decoder-only causal LMs")
        if processing_class is None:
            processing_class = load_tokenizer(model.config._name_or_path, args.trust_remote_code)
        ensure_pad_token(processing_class, model)
        return prepare_model(model, args, peft_config), processing_class

    def _setup_objective(self, model, ref_model, args: ORPOConfig) -> None:
        """The objective of ``args.method``, its knobs, and the reference model when it needs one."""
        self.objective = get_objective(args.method)
        self.knobs = Knobs(
            beta=args.beta,
            simpo_gamma=args.simpo_gamma,
            label_smoothing=args.label_smoothing,
            desirable_weight=args.desirable_weight,
            undesirable_weight=args.undesirable_weight,
        )
        self.reference = None
        if self.objective.needs_reference:
            if isinstance(ref_model, str):
                ref_model = load_model(ref_model, args.model_init_kwargs, args.trust_remote_code)
            self.reference = resolve_reference(model, ref_model, args.precompute_ref_log_probs)
        elif ref_model is not None:
            notice(f"method={args.method!r} uses no reference model; ref_model is ignored")

    def _setup_engine(self, model, processing_class, args: ORPOConfig) -> None:
        """The engine (packed when the model allows it), and the per-log metric sums."""
        pad_id = args.padding_value if args.padding_value is not None else processing_class.pad_token_id
        self.engine, fallback = build_engine(args.engine, model, pad_id, args)
        if fallback:
            notice(f"using the padded engine: {fallback}")
        self.beta = args.beta
        self.aux_loss_coef = float(getattr(model.config, "router_aux_loss_coef", 0.0) or 0.0)
        # split -> metric -> [sum, count] since the last log
        self._stored_metrics: dict[str, dict[str, list[float]]] = defaultdict(
            lambda: defaultdict(lambda: [0.0, 0.0])
        )

    def _setup_data(self, train_dataset, eval_dataset, processing_class, args: ORPOConfig) -> tuple:
        """(train, eval) through the data pipeline (``_prepare``); an eval dict is prepared per key."""
        self.data_reports: list[DataReport] = []
        train_dataset = self._prepare(train_dataset, processing_class, args, "train")
        if isinstance(eval_dataset, (dict, DatasetDict)):
            eval_dataset = {
                k: self._prepare(v, processing_class, args, f"eval[{k}]") for k, v in eval_dataset.items()
            }
        else:
            eval_dataset = self._prepare(eval_dataset, processing_class, args, "eval")
        return train_dataset, eval_dataset

    def _setup_reliability(self, args: ORPOConfig) -> None:
        """Reliability (orpo.guard, orpo.checkpoints): non-finite checks, signals, atomic checkpoints.

        Under float16 an overflowing step is routine: skipped by default, through AMP's scaler if any,
        else through our own loss scale when the weights are float16 (``LossScaler``).
        """
        dtype = _weights_dtype(self.model)
        amp_scaler = getattr(self.accelerator, "scaler", None) is not None
        self.guard = NonFiniteGuard(
            args.resolved_on_nonfinite(dtype), args.max_nonfinite_steps, scaler_skips=amp_scaler
        )
        # In 'stop' mode the user asked that a non-finite step end the run: no scale to probe with.
        own_scale = dtype == torch.float16 and not amp_scaler and self.guard.action == "skip"
        self.loss_scaler = LossScaler() if own_scale and self._own_grad_norm() else None
        self.stop_on_signal = StopOnSignal()
        self.add_callback(self.stop_on_signal)
        self._staging_root: Path | None = None

    def _add_generations_callback(self) -> None:
        if self.eval_dataset is None:
            notice("generate_during_eval needs an eval set; no completions will be generated")
            return
        from orpo.evaluation.callback import GenerationsCallback

        self.add_callback(GenerationsCallback(self))

    def _default_collator(self):
        collator = self.engine.collator
        if self.objective.unpaired:
            collator = WithLabels(collator)
        if self.objective.needs_reference:
            collator = RefColumnsCollator(collator)
        return collator

    def _setup_reference(self) -> None:
        """Move a separate reference model to the device; precompute reference log-probs if asked."""
        ref = self.reference
        if ref.model is not self.model:
            ref.model.to(self.args.device)
        if ref.mode == "precomputed":
            self.train_dataset = self._with_reference(self.train_dataset)
            if isinstance(self.eval_dataset, dict):
                self.eval_dataset = {k: self._with_reference(v) for k, v in self.eval_dataset.items()}
            else:
                self.eval_dataset = self._with_reference(self.eval_dataset)

    def _with_reference(self, dataset):
        if dataset is None or self.reference is None or self.reference.mode != "precomputed":
            return dataset
        ref = self.reference
        if ref.model is self.model and not ref.disable_adapter and self.state.global_step > 0:
            raise ValueError(
                "precompute_ref_log_probs=True with no ref_model and no adapter: the reference is the initial "
                "model, which training has changed; pass this eval dataset to the constructor, or a ref_model"
            )
        size = self.args.precompute_ref_batch_size or self.args.per_device_eval_batch_size
        return precompute(
            self.reference, dataset, self.engine, self.args.device, size, self.autocast_smart_context_manager
        )

    @staticmethod
    def _resolve_args(
        args: TrainingArguments | None, config_class: type[ORPOConfig] = ORPOConfig
    ) -> ORPOConfig:
        if args is None:
            return config_class(output_dir=f"{config_class.__name__.removesuffix('Config').lower()}_output")
        if isinstance(args, ORPOConfig):
            return args
        if isinstance(args, TrainingArguments):
            notice(
                f"args is a TrainingArguments; converting to {config_class.__name__} with its defaults for the rest"
            )
            # to_dict() masks secrets (hub_token -> "<HUB_TOKEN>"); leave those unset.
            fields = {
                k: v
                for k, v in args.to_dict().items()
                if k in config_class.__dataclass_fields__ and not k.endswith("_token")
            }
            return config_class(**fields)
        raise ValueError(f"args must be an ORPOConfig, got {type(args).__name__}")

    def _prepare(self, data, tokenizer, args: ORPOConfig, name: str):
        if data is None:
            return None
        prepared, report = prepare_dataset(
            data, tokenizer, args, source_name=name, columns=self._data_columns, fmt=self._data_format
        )
        self.data_reports.append(report)
        if report.dropped:
            notice(report.summary())
        if report.unpairing():
            notice(report.unpairing())
        if name == "train" and report.one_sided():  # a small eval set may be one-sided by chance
            notice(report.one_sided())
        return prepared

    def _set_signature_columns_if_needed(self) -> None:
        # The model never sees dataset columns directly; keep the token columns and the pair length
        # (which `group_by_length` uses to batch similar lengths together).
        if self._signature_columns is None:
            self._signature_columns = [
                *PAIR_COLUMNS,
                *PROMPT_TAIL_COLUMNS,
                LENGTH_COLUMN,
                SOURCE_ROW_COLUMN,
                LABEL_COLUMN,
                *REF_COLUMNS,
            ]

    # ---- loss ----

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        """(2,) = [NLL tokens, pairs] over all micro-batches of this step and all processes."""
        if not batch_samples:
            return None
        counts = torch.zeros(2, dtype=torch.long)
        for batch in batch_samples:
            nll, pairs = self.engine.count_items(batch, self._nll_on_prompt(training=True))
            counts += torch.stack([torch.as_tensor(nll).cpu(), torch.as_tensor(pairs).cpu()])
        counts = counts.to(device)
        if self.args.world_size > 1:
            counts = self.accelerator.gather(counts.unsqueeze(0)).sum(0)
        return counts

    def _objective(
        self,
        stats: SequenceStats,
        totals: torch.Tensor | None,
        ref: tuple[torch.Tensor, torch.Tensor] | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss to minimise for this micro-batch and the per-pair / batch quantities to log.

        ``totals`` = [NLL tokens, pairs] of the whole optimizer step (training) or None (this batch).
        Reduction happens here and only here: sums divided by the step's counts. ``labels``: (B,) the
        desirable flags of unpaired examples (KTO), whose "pairs" are (completion, KL sample).
        """
        ref_chosen, ref_rejected = ref if ref is not None else (None, None)
        pair_logps = PairLogps(
            stats.chosen_sum_logps,
            stats.rejected_sum_logps,
            stats.chosen_lengths,
            stats.rejected_lengths,
            ref_chosen,
            ref_rejected,
            labels=labels,
        )
        point = self.objective.reference_point(pair_logps)
        if point is not None and self.accelerator.num_processes > 1:
            # KTO's KL estimate: the mean of every process's batch mean, as TRL gathers it.
            point = self.accelerator.gather(point.detach()[None]).mean()
        pair_logps = dataclasses.replace(pair_logps, reference_point=point)
        pair_loss, per_pair = self.objective.pair_losses(pair_logps, self.knobs)
        n_pairs = stats.chosen_lengths.shape[0]
        if totals is None:
            nll_den, pair_den, scale = stats.nll_tokens.clamp(min=1), n_pairs, 1.0
        else:
            nll_den, pair_den = totals[0].clamp(min=1), totals[1].clamp(min=1)
            # DDP averages gradients over processes; the totals are global, so undo that average.
            scale = float(self.accelerator.num_processes)
        nll_term = self.objective.nll_weight * stats.nll_sum / nll_den
        loss = nll_term + pair_loss.sum() / pair_den
        if stats.aux_loss is not None and self.aux_loss_coef:
            loss = loss + self.aux_loss_coef * stats.aux_loss * (n_pairs / pair_den)
        # Every metric as (sum, count): logged values are exact means over all pairs (or tokens)
        # since the last log, whatever the batch sizes. (TRL averages per-batch means, which only
        # agrees when every batch has the same size.)
        metrics = {name: (v.sum(), v.numel()) for name, v in per_pair.items()}
        if labels is None:
            logits = {"chosen": (stats.chosen_logits_sum, stats.chosen_lengths)}
            logits["rejected"] = (stats.rejected_logits_sum, stats.rejected_lengths)
        else:
            # Unpaired examples: the desirable completions are "chosen", the undesirable "rejected" (TRL's
            # KTO); the KL samples are not logged.
            desirable = labels.bool()
            logits = {
                "chosen": (stats.chosen_logits_sum[desirable], stats.chosen_lengths[desirable]),
                "rejected": (stats.chosen_logits_sum[~desirable], stats.chosen_lengths[~desirable]),
            }
        for side, (sums, lengths) in logits.items():
            metrics[f"logits/{side}"] = (sums.detach().sum(), lengths.sum())
        if labels is None:  # unpaired examples (KTO) have no chosen sequence, so no NLL to report
            # The batch's token-mean NLL weighted by its pairs, as transformers weights eval_loss, so
            # that eval_loss = eval_nll_loss + beta * L_OR holds over a whole evaluation.
            batch_nll = stats.nll_sum.detach() / stats.nll_tokens.clamp(min=1)
            metrics["nll_loss"] = (batch_nll * n_pairs, n_pairs)
        return loss * scale, metrics

    def _store(self, metrics: dict[str, tuple], split: str) -> None:
        """Add this batch's (sum, count) of every metric, summed over processes, to the running totals."""
        names = list(metrics)
        device = self.args.device

        def column(values) -> torch.Tensor:
            return torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])

        # (M, 2) on the device, one transfer to the host: no per-metric synchronisation.
        totals = torch.stack(
            [column(s for s, _ in metrics.values()), column(c for _, c in metrics.values())], 1
        )
        if self.accelerator.num_processes > 1:
            totals = self.accelerator.gather(totals[None]).sum(0)
        totals = totals.cpu()
        prefix = "eval_" if split == "eval" else ""
        for name, (value, count) in zip(names, totals.tolist()):
            running = self._stored_metrics[split][prefix + name]
            running[0] += value
            running[1] += count

    # ---- reliability hooks (logic in orpo.guard and orpo.checkpoints) ----

    def create_optimizer(self, model=None):
        """``Trainer``'s optimizer (or the one passed in), stepping float32 masters of float16 weights
        trained without AMP (``Float32Masters``). FSDP and DeepSpeed keep their own mixed precision."""
        optimizer = super().create_optimizer(model)
        if isinstance(optimizer, Float32Masters) or getattr(self.accelerator, "scaler", None) is not None:
            return optimizer
        trained = [p for group in optimizer.param_groups for p in group["params"]]
        if not self._own_grad_norm() or not any(p.dtype == torch.float16 for p in trained):
            return optimizer
        if optimizer.state:  # an optimizer passed in that has stepped: its moments are float16 already
            notice("the optimizer passed in has stepped already; its float16 state stays float16")
            return optimizer
        self.optimizer = Float32Masters(optimizer)
        return self.optimizer

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """``Trainer.train``; ``resume_from_checkpoint=True`` takes the newest complete checkpoint, and
        SIGINT / SIGTERM save a checkpoint and stop (``self.stop_on_signal.received`` says which).
        Says once which tokenisation rules built the data, and which checkpoint it resumes from."""
        notice(describe_tokenization(self.args.tokenization, self.args.chat_template_mode))
        resume = checkpoints.resolve_resume(Path(self.args.output_dir), resume_from_checkpoint)
        if resume is not None:
            notice(f"resuming from {resume} (step {checkpoints.checkpoint_step(Path(resume))})")
        with self.stop_on_signal.installed():
            return super().train(resume, trial, ignore_keys_for_eval, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        rows = inputs.pop(SOURCE_ROWS_KEY, None)
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.guard.check_loss(loss, self.state.global_step + 1, None if rows is None else rows.tolist())
        return loss

    def _clip_grad_norm(self, model):
        if self.loss_scaler is not None:
            return self.loss_scaler.unscale_(model.parameters(), self.args.max_grad_norm)
        grads = self._float16_grads(model)
        if grads is None:
            return super()._clip_grad_norm(model)
        norm = _float32_norm(grads)
        torch.nn.utils.clip_grads_with_norm_(
            [p for p in model.parameters() if p.grad is not None], self.args.max_grad_norm, norm
        )
        return norm

    def _get_grad_norm(self, model, grad_norm=None):
        if grad_norm is None and self.loss_scaler is not None:  # no clipping: unscale only
            grad_norm = self.loss_scaler.unscale_(model.parameters(), None)
        grads = self._float16_grads(model) if grad_norm is None else None
        if grads is not None:
            grad_norm = _float32_norm(grads)
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        skipped = self.guard.check_grad_norm(grad_norm, self.state.global_step + 1, model)
        if self.loss_scaler is not None:
            self.loss_scaler.update(skipped)
        return grad_norm

    def _float16_grads(self, model) -> list[torch.Tensor] | None:
        """The float16 gradients whose norm torch would compute in float16, else None.

        ``clip_grad_norm_`` reduces each gradient to a norm in the gradient's dtype and then squares
        those norms: in float16 the result is inf as soon as the norm passes 256 (256^2 > 65504), though
        every element is finite, and clipping by an inf norm zeroes the update. Float16 weights trained
        without a scaler (a float16 model) hit this; AMP's master gradients are float32, and FSDP and
        DeepSpeed compute their own norms, so those keep Trainer's path."""
        if getattr(self.accelerator, "scaler", None) is not None or not self._own_grad_norm():
            return None
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        return grads if any(g.dtype == torch.float16 for g in grads) else None

    def _own_grad_norm(self) -> bool:
        """Whether the gradients are whole on this process, so their norm (and any unscaling) is ours to
        compute: single process or DDP (all-reduced gradients, the same on every process). FSDP and
        DeepSpeed shard them and compute norms and scales themselves."""
        return self.accelerator.distributed_type in (
            DistributedType.NO,
            DistributedType.MULTI_CPU,
            DistributedType.MULTI_GPU,
        )

    def _get_output_dir(self, trial) -> str:
        # During a checkpoint save, Trainer writes under the staging folder (see _save_checkpoint).
        return str(self._staging_root) if self._staging_root is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """Trainer's checkpoint, written to ``.tmp-checkpoint-N/`` and renamed when complete."""
        assert_finite(self.model, self.state.global_step, "a checkpoint")
        run_dir = Path(super()._get_output_dir(trial))
        final = run_dir / f"{checkpoints.CHECKPOINT_PREFIX}{self.state.global_step}"
        staged_root = checkpoints.staging_dir(final)
        if self.args.should_save:
            shutil.rmtree(staged_root, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self._staging_root = staged_root
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        self.accelerator.wait_for_everyone()  # every process has written its RNG state
        if not self.args.should_save:
            return
        staged = staged_root / final.name
        best = self.state.best_model_checkpoint
        if best is not None and best.startswith(str(staged_root)):
            self.state.best_model_checkpoint = str(run_dir / Path(best).name)
            self.state.save_to_json(str(staged / "trainer_state.json"))
        checkpoints.publish(staged, final)
        staged_root.rmdir()
        rotate_checkpoints(
            output_dir=str(run_dir),
            save_total_limit=self.args.save_total_limit,
            best_model_checkpoint=self.state.best_model_checkpoint,
            use_mtime=True,
        )

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        # Every save (final model and checkpoints) refuses weights holding NaN or inf.
        assert_finite(self.model, self.state.global_step, f"the model to {output_dir}")
        super()._save(output_dir, state_dict)

    def _nll_on_prompt(self, training: bool) -> bool:
        """Whether the engine scores the prompt NLL. Objectives without an NLL term (SimPO, DPO, ...) do
        not pay for that head pass in training; evaluation always reports the configured NLL so that
        ``eval_nll_loss`` means the same for every method (in training, their logged ``nll_loss``
        covers the chosen response only). Unpaired examples (KTO) have no chosen sequence and no NLL."""
        reported = not training and not self.objective.unpaired
        return self.args.nll_on_prompt and (self.objective.nll_weight > 0 or reported)

    def _reference_logps(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.reference is None:
            return None
        # With an adapter the reference is the policy itself, unwrapped from DDP to disable the adapter.
        return self.reference.batch_logps(self.engine, self.accelerator.unwrap_model(model), inputs)

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        # Reference first: with an adapter it is the same module, run with the adapter disabled.
        ref = self._reference_logps(model, inputs)
        labels = inputs.pop(LABEL_COLUMN, None)
        stats = self.engine.forward(model, inputs, self._nll_on_prompt(model.training))
        loss, metrics = self._objective(stats, num_items_in_batch, ref, labels)
        if self.loss_scaler is not None and model.training and loss.requires_grad:
            # The backward pass starts from scale x d(loss) (a hook, so the logged loss stays the loss).
            loss.register_hook(self.loss_scaler.scale_grad)
        self._store(metrics, "train" if model.training else "eval")
        return (loss, metrics) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys=None):
        inputs.pop(SOURCE_ROWS_KEY, None)
        inputs = self._prepare_inputs(inputs)
        labels = inputs.pop(LABEL_COLUMN, None)
        with torch.no_grad(), self.compute_loss_context_manager():
            stats = self.engine.forward(model, inputs, self._nll_on_prompt(training=False))
            loss, metrics = self._objective(stats, None, self._reference_logps(model, inputs), labels)
        self._store(metrics, "eval")
        if prediction_loss_only:
            return loss.detach(), None, None
        logits = torch.tensor(
            [
                float(s) / max(float(c), 1.0)
                for s, c in (metrics["logits/chosen"], metrics["logits/rejected"])
            ],
            device=self.args.device,
        )
        return loss.detach(), logits, torch.zeros(2, device=self.args.device)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """``Trainer.evaluate``; an ``eval_dataset`` given here may be raw rows, like the constructor's."""
        if eval_dataset is not None and not isinstance(eval_dataset, str):
            if isinstance(eval_dataset, (dict, DatasetDict)):
                eval_dataset = {
                    k: self._prepare(v, self.processing_class, self.args, f"eval[{k}]")
                    for k, v in eval_dataset.items()
                }
            else:
                eval_dataset = self._prepare(eval_dataset, self.processing_class, self.args, "eval")
            if isinstance(eval_dataset, dict):
                eval_dataset = {k: self._with_reference(v) for k, v in eval_dataset.items()}
            else:
                eval_dataset = self._with_reference(eval_dataset)
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = "train" if "loss" in logs else "eval"
        prefix = "eval_" if split == "eval" else ""
        means = {
            name.removeprefix(prefix): value / count if count else float("nan")
            for name, (value, count) in self._stored_metrics.pop(split, {}).items()
        }
        means.update(self.objective.summary_metrics(means))
        logs.update({prefix + name: value for name, value in means.items()})
        super().log(logs, start_time)


SOURCE_ROWS_KEY = "source_rows"


def _float32_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """() float32 L2 norm of all ``grads``, each reduced in float32 (no float32 copy of a gradient)."""
    device = grads[0].device
    norms = [torch.linalg.vector_norm(g, dtype=torch.float32).to(device) for g in grads]
    return torch.linalg.vector_norm(torch.stack(norms))


def _weights_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """The dtype the model computes in: its own ``dtype`` (transformers, PEFT), else its first float
    parameter's. A float16 base with float32 LoRA adapters is float16 here: the forward overflows alike."""
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


class WithLabels:
    """The engine's collator, plus ``batch["label"]``: (B,) bool, the desirable flags of unpaired
    examples (KTO), in row order."""

    def __init__(self, collator: Callable):
        self.collator = collator

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if any(row.get(LABEL_COLUMN) is None for row in rows):
            raise ValueError(
                f"method=kto needs a boolean `{LABEL_COLUMN}` on every example; this tokenised dataset has none "
                "(pass raw rows, paired or prompt/completion/label, and the trainer builds the examples)"
            )
        labels = [bool(row.pop(LABEL_COLUMN)) for row in rows]
        batch = self.collator(rows)
        batch[LABEL_COLUMN] = torch.tensor(labels, dtype=torch.bool)
        return batch


class WithSourceRows:
    """The engine's collator, plus ``batch["source_rows"]``: the source row number of each pair (when
    the data carries them), so a failing step can name its rows. ``training_step`` removes it."""

    def __init__(self, collator: Callable):
        self.collator = collator

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        source_rows = [row.pop(SOURCE_ROW_COLUMN, None) for row in rows]
        batch = self.collator(rows)
        if all(r is not None for r in source_rows):
            batch[SOURCE_ROWS_KEY] = torch.tensor(source_rows, dtype=torch.long)
        return batch


class KTOTrainer(ORPOTrainer):
    """Drop-in for TRL's ``KTOTrainer``: ``ref_model`` is the second argument, as in TRL; ``args`` a
    ``KTOConfig`` (method "kto"). Rows are unpaired (``prompt, completion, label``) or pairs, which are
    split into desirable and undesirable examples as TRL splits them. Everything else is ORPOTrainer's."""

    _tag_names = ["orpo", "kto"]
    config_class = KTOConfig

    def __init__(
        self,
        model: PreTrainedModel | torch.nn.Module | str | None = None,
        ref_model: PreTrainedModel | torch.nn.Module | str | None = None,
        args: ORPOConfig | None = None,
        train_dataset: Dataset | list | None = None,
        eval_dataset: Dataset | dict | list | None = None,
        processing_class=None,
        data_collator: Callable | None = None,
        **kwargs: Any,
    ):
        args = self._resolve_args(args, KTOConfig)
        if args.method != "kto":
            raise ValueError(
                f"KTOTrainer trains method='kto', and args.method is {args.method!r}: use KTOConfig, or "
                "ORPOTrainer for the other methods"
            )
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            ref_model=ref_model,
            **kwargs,
        )
