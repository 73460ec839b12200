"""``coinfer generate``: greedy text generation with one LLM split across the cluster's devices.

A thin shell over :mod:`coinfer.llm.runner`: plan the split on the cluster file (costs measured
on this machine once per model and cached), start one worker process per used device, stream
the tokens as the last stage produces them, then check them against the unsplit model's greedy
``generate`` in this process and print the timings beside the cost model's predictions.
Everything checkable before a worker starts (options, prompt, memory) is checked first.
"""

from __future__ import annotations

import json
import sys

import typer

from ..errors import InputError


def _slices_option(value: str | None) -> int | str | None:
    if value is None:
        return None
    if value.strip() == "auto":
        return "auto"
    try:
        k = int(value)
    except ValueError:
        raise InputError(
            f"--token-slices must be a positive integer or auto, got {value!r}"
        ) from None
    if k < 1:
        raise InputError(f"--token-slices must be a positive integer or auto, got {value!r}")
    return k


def register(app: typer.Typer) -> None:
    """Add ``generate`` to ``app``."""

    @app.command("generate")
    def generate_cmd(
        model: str = typer.Argument(
            ...,
            help="Decoder-only LM: zoo name (gpt2, gpt2_plain), module:factory or file.py:factory.",
        ),
        cluster: str | None = typer.Option(
            None, "--cluster", help="Cluster YAML (default: the embedded local testbed)."
        ),
        prompt: str | None = typer.Option(
            None,
            "--prompt",
            help="Prompt text; tokenised by GPT-2's tokenizer if its files are cached locally, "
            "else as UTF-8 bytes modulo the vocabulary.",
        ),
        prompt_ids: str | None = typer.Option(
            None, "--prompt-ids", help="Prompt token ids: 1,2,3."
        ),
        max_new_tokens: int = typer.Option(
            16, "--max-new-tokens", help="Tokens to generate (>= 1)."
        ),
        algo: str = typer.Option(
            "capability",
            "--algo",
            help="Layer split: capability (fastest decode for --sequences, within memory), "
            "memory (layers in proportion to memory) or even.",
        ),
        token_slices: str | None = typer.Option(
            None,
            "--token-slices",
            help="Cut the prompt into K chunks pipelined through the stages (auto: the number "
            "and sizes minimising the predicted time to first token). Default: one chunk.",
        ),
        sequences: int = typer.Option(
            1,
            "--sequences",
            help="Sequences generated together (copies of the prompt), as "
            "one micro-batch per stage interleaved in the pipeline.",
        ),
        devices: str | None = typer.Option(
            None, "--devices", help="Use only these devices, in this pipeline order: d0,d1."
        ),
        timeout: float = typer.Option(
            300.0, "--timeout", help="Bound in seconds on starting the workers and on the run."
        ),
        calibrate: bool = typer.Option(
            True,
            "--calibrate/--no-calibrate",
            help="Price the runtime's per-item overhead and each device's measured slow-down, "
            "probed once per model and cluster by short generations on the devices (cached); "
            "off: the in-process profile only.",
        ),
        gantt: str | None = typer.Option(
            None,
            "--gantt",
            help="Write the measured and the simulated timeline of the run, one above the "
            "other, to this PNG.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    ) -> None:
        """Generate greedily with MODEL split across the cluster's devices (one worker each)."""
        import torch

        from ..llm.decoder import load_causal_lm
        from ..llm.planning import check_fits, measured_costs, plan_generation
        from ..llm.runner import (
            encode_prompt,
            generate_on,
            measured_events,
            parse_prompt_ids,
            reference_tokens,
            report,
            start_workers,
        )  # fmt: skip
        from ..llm.simulate import simulate_plan
        from .run_cmds import _load_cluster

        if (prompt is None) == (prompt_ids is None):
            raise InputError("give exactly one of --prompt TEXT and --prompt-ids 1,2,3")
        if max_new_tokens < 1 or sequences < 1 or not timeout > 0:
            raise InputError("--max-new-tokens and --sequences must be >= 1, --timeout > 0")
        slices = _slices_option(token_slices)
        cl = _load_cluster(cluster)
        names = [d.strip() for d in devices.split(",") if d.strip()] if devices else None
        for name in names or ():
            cl.device(name)  # unknown names: one line listing the valid ones
        meta = load_causal_lm(model, meta=True)
        if prompt_ids is not None:
            parse_prompt_ids(prompt_ids, meta.vocab)
        n_prompt = len(prompt.encode()) if prompt is not None else len(prompt_ids.split(","))
        check_fits(
            meta, cl, prompt_tokens=n_prompt, new_tokens=max_new_tokens, sequences=sequences,
            devices=names,
        )  # fmt: skip
        parts = load_causal_lm(model)
        if prompt is not None:
            ids, tokenizer = encode_prompt(prompt, parts)
        else:
            ids, tokenizer = parse_prompt_ids(prompt_ids or "", parts.vocab), "ids"
        limit = parts.max_positions
        if limit is not None and len(ids) + max_new_tokens > limit:
            raise InputError(
                f"prompt ({len(ids)} tokens) + --max-new-tokens {max_new_tokens} exceed the "
                f"model's {limit} positions"
            )
        costs = measured_costs(model, parts)
        scales: dict[str, float] = {}
        if calibrate:
            from ..llm.overhead import with_measured_overhead

            costs, probe = with_measured_overhead(model, parts, costs, cl)
            scales = probe.speed_scales
        plan = plan_generation(
            parts, cl, costs, algo=algo, prompt_tokens=len(ids), new_tokens=max_new_tokens,
            sequences=sequences, devices=names, token_slices=slices, speed_scales=scales,
        )  # fmt: skip
        if not as_json:
            typer.echo(
                f"split ({plan.method}): "
                + ", ".join(
                    f"{d}:{n}" for d, n in zip(plan.devices, plan.layer_counts, strict=True)
                )
                + f" layers; prompt {len(ids)} tokens ({tokenizer}) in chunks {list(plan.slices)}",
                err=True,
            )

        def stream(group: int, step: int, row: list[int]) -> None:
            if not as_json and group == 0:
                sys.stdout.write(f"{row[0]} ")
                sys.stdout.flush()

        with start_workers(model, plan, cl, timeout_s=timeout) as gen:
            result = generate_on(gen, ids, plan, max_new_tokens, stream)
        # the reference runs after the workers are gone, so it does not disturb their timing
        ref = reference_tokens(parts, torch.tensor([ids]), max_new_tokens)[0].tolist()
        doc = report(plan, result, gen, ref)
        doc["tokenizer"] = tokenizer
        doc["item_overhead_s"] = costs.item_overhead_s
        doc["speed_scales"] = scales
        sim = simulate_plan(
            plan, costs, len(ids), max_new_tokens, kv_bytes=parts.kv_bytes_per_token_layer
        )
        doc["simulated"] = sim.to_dict()
        if gantt is not None:
            from ..report.plots import gantt_pair

            measured = measured_events(plan, result, max_new_tokens)
            doc["gantt"] = str(
                gantt_pair(
                    [("measured", measured), ("simulated", sim.events)], gantt,
                    devices=plan.devices,
                )
            )  # fmt: skip
        if as_json:
            typer.echo(json.dumps(doc, indent=2))
            return
        typer.echo("")
        rate = doc["tokens_per_s"]
        typer.echo(
            f"ttft {doc['ttft_s'] * 1e3:.1f} ms (predicted {plan.predicted_ttft_s * 1e3:.1f}); "
            f"decode {rate if rate is None else f'{rate:.1f}'} tokens/s (predicted "
            f"{plan.predicted_tokens_per_s:.1f}, simulated "
            f"{sim.decode_tokens_per_s or 0:.1f}); same tokens as the unsplit model: "
            f"{'yes' if doc['identical'] else 'NO'}"
        )
        if gantt is not None:
            typer.echo(f"measured vs simulated timeline: {doc['gantt']}")
        for m in doc["memory"]:
            typer.echo(
                f"  {m['device']}: {m['layers']} layers, weights {m['weights_bytes'] / 2**20:.1f} MiB"
                f" + KV {m['kv_cache_bytes'] / 2**20:.2f} MiB of {m['capacity_bytes'] / 2**20:.0f} MiB"
            )
