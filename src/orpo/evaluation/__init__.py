"""Did training work? Generation, judges and the statistics that say whether a difference is noise.

- ``loading``: a run folder, a checkpoint, an adapter folder or a plain model -> model, tokenizer and
  the run's prompt rendering settings.
- ``generate``: the one generator (prompts rendered exactly as in training; batched; greedy or
  sampled; resumable JSON lines).
- ``judges/``: rule, reward-model, LLM (OpenAI-compatible API) and human judges, and their registry.
- ``stats``: win rate with ties as half, bootstrap interval, AlpacaEval 2's length-controlled win rate.
- ``callback``: ``generate_during_eval`` (completions of fixed eval prompts at each evaluation).
"""
