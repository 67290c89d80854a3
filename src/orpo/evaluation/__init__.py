"""Did training work? Generation, judges and the statistics that say whether a difference is noise.

- ``generate``: the one generator (prompts rendered exactly as in training; batched; greedy or
  sampled; resumable JSON lines).
- ``judges/``: rule, reward-model, LLM (OpenAI-compatible API) and human judges, and their registry.
- ``stats``: win rate with ties as half, bootstrap interval, AlpacaEval 2's length-controlled win rate.
- ``callback``: ``generate_during_eval`` (completions of fixed eval prompts at each evaluation).

Models are loaded by ``orpo.run.loading`` (run folder, checkpoint, adapter folder or plain model), the
loader every command shares.
"""
