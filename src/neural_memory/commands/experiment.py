"""``neural-memory experiment NAME``: run one experiment of the reproduction, write NAME.json and NAME.png."""

from __future__ import annotations

import argparse

from neural_memory.commands._experiment_args import add_common_options, check_text, context, fail

DESCRIPTION = """\
Run one experiment: train and evaluate its models with the project's training loop, write OUT/NAME.json
(metrics with 95 % confidence intervals, config, timings, the claims and their verdicts) and OUT/NAME.png,
and print its table and claims. Finished training runs (OUT/runs/) and a finished NAME.json with the same
scale, seeds and text are reused, so running the same command again resumes an interrupted experiment."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="run one experiment of the reproduction (JSON, plot, table)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="experiment name (see the list printed for a bad name)")
    add_common_options(parser, default_scale="tiny")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from neural_memory.experiments import experiment_names, get_experiment
    from neural_memory.experiments.base import run_experiment
    from neural_memory.experiments.report import claims_of, claims_table, text_table

    if args.name not in experiment_names():
        raise fail(
            "experiment", f"unknown experiment {args.name!r}; choose from {', '.join(experiment_names())}"
        )
    ctx = context(args, "experiment")
    check_text(ctx, "experiment")
    experiment = get_experiment(args.name)
    document = run_experiment(experiment, ctx)
    print(f"{experiment.name} (mirrors {experiment.mirrors}), scale {ctx.scale.name}, out {ctx.out}")
    print(text_table(document["table"]))
    print()
    print(text_table(claims_table(claims_of([document], []))))
    return 0
