"""Split decoder-only LLMs across heterogeneous devices (PipeLLM, issue 13): the core.

Why a package of its own: an LLM is not a DAG of pieces run once per request like the CNNs
the rest of coinfer splits — each stage keeps a KV cache, prefill can be cut along the token
dimension, and decode is one token at a time. The pieces here are in-process and pure:

- :mod:`.decoder` — a uniform view (``DecoderParts``) of GPT-2 / Llama / Qwen2 models;
- :mod:`.stage` — one stage (layers ``[a, b)``) with its own KV cache per sequence group;
- :mod:`.pipeline` — the reference pipeline: token-sliced prefill and greedy decode;
- :mod:`.cost` — the prefill/decode time and memory model, the chunked-prefill makespan and
  decode rates; :mod:`.slices` — chunk boundaries that minimise the makespan;
  :mod:`.measure` — the cost coefficients measured on this machine;
- :mod:`.split` — layer-to-device splits: capability (optimal), memory-proportional, even.
- the runtime of ``coinfer generate``: :mod:`.planning` (a plan on a cluster file),
  :mod:`.distributed` (the coordinator), :mod:`.worker` and :mod:`.stagejob` (one process per
  device and what it does per job), :mod:`.runner` (prompt, reference, report).

Nothing is re-exported here so that the torch-free modules (``cost``, ``slices``, ``split``)
import without torch, like the rest of coinfer's planning side. See docs/llm.md.
"""
