"""``neural-memory reproduce``: run every experiment and write ``DIR/report.md`` with the claims table."""

from __future__ import annotations

import argparse
import time

from neural_memory.commands._experiment_args import add_common_options, check_text, context

DESCRIPTION = """\
Run the experiments of the reproduction in order (titans-ablation, memory-depth, recall, miras-variants,
lm), then write DIR/report.md: the claims table (for each claim of the papers: the paper's reference and
numbers, our measurement with its 95 % confidence interval, and a verdict decided by a rule in code:
reproduced / not reproduced at this scale / not tested) and each experiment's table and plot. Experiments
and models that do not exist yet are listed as not tested. Running again with the same --out resumes."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="run all experiments and write a report with the papers' claims and verdicts",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_options(parser, default_scale="tiny")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from neural_memory.experiments import PLANNED, experiment_names, get_experiment
    from neural_memory.experiments.base import run_experiment
    from neural_memory.experiments.report import claims_of, claims_table, text_table, write_report

    ctx = context(args, "reproduce")
    check_text(ctx, "reproduce")
    names = experiment_names()
    started = time.perf_counter()
    documents = []
    disable = None if ctx.progress is None else not ctx.progress
    try:
        with tqdm(names, desc="reproduce", unit="experiment", disable=disable) as bar:
            for name in bar:
                bar.set_postfix_str(name, refresh=True)
                documents.append(run_experiment(get_experiment(name), ctx))
    except KeyboardInterrupt:
        print(f"\ninterrupted; resume with: neural-memory reproduce --scale {ctx.scale.name} --out {ctx.out}")
        return 130
    seconds = time.perf_counter() - started
    report = write_report(ctx.out, documents, PLANNED, scale=ctx.scale.to_dict(), seconds=seconds)
    print(text_table(claims_table(claims_of(documents, PLANNED))))
    print(f"\n{len(documents)} experiments in {seconds:.0f} s; report: {report}")
    return 0
