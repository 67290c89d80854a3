"""Stop a run that has stopped learning anything true: non-finite losses and gradients, and signals.

``NonFiniteGuard`` is consulted by ``ORPOTrainer`` twice per optimizer step: after each micro-batch's
loss (``check_loss``) and after the gradient norm is computed, before the optimizer steps
(``check_grad_norm``). Why our own check: ``Trainer``'s ``logging_nan_inf_filter`` replaces a NaN
loss by the running mean, so a diverged run logs plausible losses, saves NaN weights and exits 0.

- ``on_nonfinite='stop'`` raises ``NonFiniteError`` before ``optimizer.step()``: the weights never
  hold the non-finite update, so nothing non-finite is saved.
- ``'skip'`` drops the step, counts it (``skipped_steps``), and raises after ``max_nonfinite_steps``
  in a row. Without a gradient scaler the gradients are dropped (``grad = None``: torch optimizers
  leave such parameters, and their moments, untouched). With one (``fp16=True`` on a GPU: AMP's
  ``GradScaler``) the scaler has already seen the inf / NaN while unscaling for the norm, so its
  ``step`` skips the update and its ``update`` lowers the scale; the guard only counts.

Under float16 (``fp16=True`` or float16 weights) an overflowing step is routine, so ``skip`` is the
default there (``ORPOConfig.resolved_on_nonfinite``); bf16 and float32 default to ``stop``.

``LossScaler``: float16 weights trained without AMP have no ``GradScaler``, so a step that overflows
would be skipped again and again at the same size and the run would stop. The trainer gives such runs
(in ``skip`` mode) a dynamic loss scale of its own with GradScaler's rules: the loss's gradient is
scaled, the gradients are unscaled before clipping, an overflowing step is skipped (the guard counts
it, as above) and halves the scale, and a run of finite steps doubles it. bfloat16 has float32's
range and needs none.

``Float32Masters``: the same float16 weights (without AMP) are stepped through float32 master copies,
so the optimizer's moments are float32: Adam's second moment in float16 underflows to 0 and its steps
blow the weights up, a loss scale or not. A dropped step (``grad = None``) leaves the masters untouched.

``assert_finite`` refuses to save a model holding a NaN or inf parameter (the final save and every
checkpoint). ``StopOnSignal`` turns SIGINT / SIGTERM into "save a checkpoint, then stop".
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from transformers import TrainerCallback

MAX_ROWS_SHOWN = 8


class NonFiniteError(ValueError):
    """Training produced a NaN or inf loss or gradient norm (or weights); the run cannot continue."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


def _rows(rows: list[int] | None) -> str:
    if not rows:
        return ""
    shown = ", ".join(str(r) for r in rows[:MAX_ROWS_SHOWN]) + (" ..." if len(rows) > MAX_ROWS_SHOWN else "")
    return f" (batch: train rows {shown})"


ADVICE = "Lower learning_rate, set max_grad_norm (e.g. 1.0), or check the data rows"
# on_nonfinite=skip is suggested only where it is off: a run in skip mode that gave up has it on.
STOP_ADVICE = (
    "Lower learning_rate, set max_grad_norm (e.g. 1.0), check the data rows, or set on_nonfinite=skip"
)


class NonFiniteGuard:
    """Per-run state of the non-finite checks; see the module docstring."""

    def __init__(self, action: str = "stop", max_in_a_row: int = 3, scaler_skips: bool = False):
        """``scaler_skips``: a gradient scaler steps the optimizer and skips non-finite steps itself."""
        self.action = action
        self.max_in_a_row = max_in_a_row
        self.scaler_skips = scaler_skips
        self.skipped_steps: list[int] = []  # optimizer steps dropped (1-based), in order
        self.in_a_row = 0
        self._bad_loss: tuple[float, list[int]] | None = None  # first bad micro-batch of this step
        self._step_rows: list[int] = []

    def check_loss(self, loss: torch.Tensor, step: int, rows: list[int] | None) -> None:
        """After a micro-batch's backward; ``step`` is the optimizer step being computed (1-based)."""
        self._step_rows.extend(rows or [])
        value = float(loss.detach().float().item())
        if math.isfinite(value):
            return
        if self.action == "stop":
            raise NonFiniteError(
                f"step {step}: the loss is {value}{_rows(rows)}; stopped before the weights changed. "
                f"{STOP_ADVICE}",
                step,
            )
        if self._bad_loss is None:
            self._bad_loss = (value, list(rows or []))

    def check_grad_norm(
        self, grad_norm: float | torch.Tensor | None, step: int, model: torch.nn.Module
    ) -> bool:
        """Before ``optimizer.step()``. Returns True when the step must be dropped (``skip``)."""
        norm = float(grad_norm) if grad_norm is not None else 0.0
        rows, self._step_rows = self._step_rows, []
        bad_loss, self._bad_loss = self._bad_loss, None
        if math.isfinite(norm) and bad_loss is None:
            self.in_a_row = 0
            return False
        what = f"the loss is {bad_loss[0]}" if bad_loss is not None else f"the gradient norm is {norm}"
        if self.action == "stop":
            raise NonFiniteError(
                f"step {step}: {what}{_rows(rows)}; stopped before the weights changed. {STOP_ADVICE}",
                step,
            )
        self.skipped_steps.append(step)
        self.in_a_row += 1
        if not self.scaler_skips:  # else the scaler's step skips the update and lowers the scale
            for param in model.parameters():
                param.grad = None
        if self.in_a_row >= self.max_in_a_row:
            raise NonFiniteError(
                f"step {step}: {self.in_a_row} non-finite steps in a row (last: {what}{_rows(rows)}); "
                f"stopped (max_nonfinite_steps={self.max_in_a_row}). {ADVICE}",
                step,
            )
        return True

    @property
    def skipped(self) -> int:
        """Optimizer steps dropped in total."""
        return len(self.skipped_steps)


@dataclass
class LossScaler:
    """A dynamic loss scale for float16 weights trained without AMP: torch's ``GradScaler`` rules, kept here.

    Use: ``scale_grad`` as a hook on the loss (the gradient flowing back is ``scale`` times the
    loss's; the loss value itself is untouched), then ``unscale_`` before the optimizer step (it
    clips too), then ``update`` with whether the step was skipped.

    ``scale`` starts at 1, not GradScaler's 2**16: the gradients are float16 themselves and are
    unscaled back into float16, so a large scale buys little against underflow, while starting high
    would overflow (and skip) the first steps of every run; at 1, a run that never overflows trains
    exactly as without a scaler. Scales stay powers of two, so scaling and unscaling are exact.
    """

    scale: float = 1.0
    growth_interval: int = 2000  # finite steps in a row before the scale doubles (GradScaler's default)
    backoff_factor: float = 0.5
    growth_factor: float = 2.0
    finite_in_a_row: int = 0

    def scale_grad(self, grad: torch.Tensor) -> torch.Tensor:
        """The loss's backward hook: scale the gradient entering the backward pass."""
        return grad * self.scale

    def unscale_(self, parameters: Iterable[torch.nn.Parameter], max_norm: float | None) -> torch.Tensor:
        """Unscale the gradients in place and clip them to ``max_norm`` (None or 0: no clipping).

        Returns their true L2 norm (float32, before clipping), or a non-finite value when any scaled
        gradient overflowed or an unscaled one does not fit in its dtype: the step must be skipped.
        Unscaling and clipping are one multiplication, so a gradient that only fits once clipped is
        never written unclipped (in float16 it would overflow)."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return torch.zeros(())
        device = grads[0].device
        scaled = torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32).to(device) for g in grads])
        norm = torch.linalg.vector_norm(scaled) / self.scale
        if not torch.isfinite(norm):
            return norm
        factor = torch.full((), 1.0 / self.scale, dtype=torch.float32, device=device)
        if max_norm:  # torch's clip coefficient, on the true norm
            factor = factor * torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        if self.scale != 1.0 or bool(factor < 1.0):
            for grad in grads:
                grad.mul_(factor)
            if not all(torch.isfinite(g).all() for g in grads):
                return torch.full((), float("inf"), device=device)
        return norm

    def update(self, skipped: bool) -> None:
        """After the step: back off when it was skipped, grow after ``growth_interval`` finite steps."""
        if skipped:
            self.scale *= self.backoff_factor
            self.finite_in_a_row = 0
            return
        self.finite_in_a_row += 1
        if self.finite_in_a_row >= self.growth_interval:
            self.scale *= self.growth_factor
            self.finite_in_a_row = 0


MASTERS_KEY = "float32_masters"  # the masters' values in the optimizer's state dict (checkpoints)


class Float32Masters(torch.optim.Optimizer):
    """An optimizer that steps float32 master copies of the float16 parameters it was given.

    For float16 weights trained without AMP (``orpo.trainer`` wraps its optimizer in this): the
    optimizer's state is kept in its parameters' dtype, and Adam's second moment in float16 underflows
    to 0 for gradients below about 5e-3 (0.001 x g^2 is under float16's smallest value, 6e-8) while the
    first moment does not, so ``lr x m / (sqrt(v) + eps)`` takes steps of lr / eps x m and the weights
    blow up. Here the wrapped optimizer holds float32 masters in place of the float16 parameters (other
    parameters pass through as themselves), so its moments are float32; AMP keeps float32 weights for
    the same reason.

    ``step``: each float16 gradient (unscaled and clipped already, see ``LossScaler``) is upcast into
    its master's ``.grad``, the wrapped optimizer steps, and the float16 weights are written from the
    masters. A parameter whose ``.grad`` is None (a step the guard dropped) leaves its master, and its
    moments, untouched. Cost: 4 bytes per float16 parameter for the master, 4 more per moment.

    The masters are taken from the weights at the first ``step``, so weights loaded after this is built
    are the ones trained. ``state_dict`` holds them (``MASTERS_KEY``) once taken, so a resumed run
    continues from the exact float32 values; a state without them (a checkpoint written before this
    existed) takes them again from the weights.

    Like accelerate's ``AcceleratedOptimizer``, a wrapper that is an ``Optimizer`` without running its
    ``__init__``: ``param_groups``, ``state`` and ``defaults`` are the wrapped optimizer's, so a learning
    rate scheduler drives the same groups.
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        if optimizer.state:
            raise ValueError(
                "Float32Masters needs an optimizer that has not stepped yet (its moments would be "
                "float16); wrap it before training"
            )
        self.optimizer = optimizer
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (float16 parameter, float32 master)
        self.masters_taken = False
        for group in optimizer.param_groups:
            group["params"] = [self._master_of(p) for p in group["params"]]

    def _master_of(self, param: torch.Tensor) -> torch.Tensor:
        if param.dtype != torch.float16:
            return param
        master = param.detach().to(torch.float32, copy=True).requires_grad_(param.requires_grad)
        self.pairs.append((param, master))
        return master

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, groups: list[dict]) -> None:
        self.optimizer.param_groups = groups

    @property
    def state(self):
        return self.optimizer.state

    @state.setter
    def state(self, state) -> None:
        self.optimizer.state = state

    @property
    def defaults(self) -> dict:
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, defaults: dict) -> None:
        self.optimizer.defaults = defaults

    def add_param_group(self, param_group: dict) -> None:
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        self.optimizer.add_param_group({**param_group, "params": [self._master_of(p) for p in params]})

    @torch.no_grad()
    def _take_masters(self) -> None:
        for param, master in self.pairs:
            master.copy_(param)
        self.masters_taken = True

    def step(self, closure=None):
        """Gradients into the masters (float32), the wrapped optimizer's step, masters into the weights."""
        loss = None
        if closure is not None:  # evaluated here, once: the wrapped optimizer sees the masters' gradients
            with torch.enable_grad():
                loss = closure()
        if not self.masters_taken:
            self._take_masters()
        for param, master in self.pairs:
            master.grad = None if param.grad is None else param.grad.detach().to(torch.float32)
        self.optimizer.step()
        with torch.no_grad():
            for param, master in self.pairs:
                param.copy_(master)  # the float16 weights are the masters, rounded
                master.grad = None  # a float32 copy of every gradient is only needed during the step
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)
        for param, _ in self.pairs:
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.zero_()

    def state_dict(self) -> dict:
        state = self.optimizer.state_dict()
        if self.masters_taken:
            state[MASTERS_KEY] = [master for _, master in self.pairs]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        masters = state_dict.pop(MASTERS_KEY, None)
        if masters is not None and len(masters) != len(self.pairs):
            raise ValueError(
                f"the optimizer state holds {len(masters)} float32 master copies and this model trains "
                f"{len(self.pairs)} float16 parameters; resume with the model and trainable parameters "
                "that wrote it"
            )
        self.optimizer.load_state_dict(state_dict)
        if masters is None:
            self.masters_taken = False  # taken again from the weights at the next step
            return
        with torch.no_grad():
            for (_, master), saved in zip(self.pairs, masters):
                master.copy_(saved)
        self.masters_taken = True

    def __repr__(self) -> str:
        return f"Float32Masters({self.optimizer!r})"


def nonfinite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the parameters holding a NaN or inf."""
    return [name for name, p in model.named_parameters() if not torch.isfinite(p.detach()).all()]


def assert_finite(model: torch.nn.Module, step: int, where: str) -> None:
    bad = nonfinite_parameters(model)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFiniteError(
            f"step {step}: refusing to save {where}: parameter(s) {shown} hold NaN or inf. {ADVICE}", step
        )


class StopOnSignal(TrainerCallback):
    """SIGINT / SIGTERM during ``train()``: finish the current step, save a checkpoint, stop.

    A second signal of the same kind interrupts at once (the previous handler runs).
    """

    def __init__(self):
        self.received: int | None = None

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self.received is not None:
                prior = previous[signum]
                if callable(prior):
                    prior(signum, frame)
                raise KeyboardInterrupt
            self.received = signum

        for sig in previous:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, prior in previous.items():
                signal.signal(sig, prior)

    def on_step_end(self, args, state, control, **kwargs):
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True
        return control
