"""``neural-memory generate CHECKPOINT --prompt TEXT``: sample bytes from a trained model, streaming.

The prompt is run once; then every new byte is fed alone with the carried state (see
:func:`neural_memory.models.generate`). The output is the prompt followed by the continuation, decoded as
UTF-8 with invalid bytes replaced.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="sample text from a checkpoint written by `neural-memory train`",
        description="Sample bytes from a trained model: the prompt is run once, then one byte per step "
        "with the carried state. Prints the prompt and the continuation (UTF-8, invalid bytes replaced).",
    )
    parser.add_argument("checkpoint", type=Path, help="a checkpoint file or a run directory (--out of train)")
    parser.add_argument("--prompt", required=True, help="text to continue (at least one byte)")
    parser.add_argument("--max-new-tokens", type=int, default=200, metavar="N", help="bytes to sample (200)")
    parser.add_argument("--temperature", type=float, default=0.8, metavar="T", help="0 = greedy (0.8)")
    parser.add_argument("--top-k", type=int, default=None, metavar="K", help="sample among the K most likely")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="sampling seed (0)")
    parser.set_defaults(run=run)


def _fail(message: str) -> SystemExit:
    return SystemExit(f"neural-memory generate: error: {message}")


def run(args: argparse.Namespace) -> int:
    import torch

    from neural_memory.models import generate
    from neural_memory.training import load_model

    prompt_bytes = args.prompt.encode("utf-8")
    if not prompt_bytes:
        raise _fail("--prompt must hold at least one byte")
    try:
        model, _ = load_model(args.checkpoint)
    except (FileNotFoundError, ValueError) as error:
        raise _fail(str(error)) from error
    model.eval()
    prompt = torch.tensor([list(prompt_bytes)], dtype=torch.long)
    generator = torch.Generator().manual_seed(args.seed)
    try:
        new_tokens, _ = generate(
            model,
            prompt,
            args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            generator=generator,
        )
    except (ValueError, TypeError) as error:
        raise _fail(str(error)) from error
    print(args.prompt + bytes(new_tokens[0].tolist()).decode("utf-8", errors="replace"))
    return 0
