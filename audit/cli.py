"""`fedscene audit`: the ledgers' accounting audit, and (`--empirical`) the canary audit."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fedscene.common.algorithms import describe, federated_names, reference_name
from fedscene.common.config import load_config
from fedscene.common.console import console
from fedscene.common.errors import FedsceneError


def _audit(args: argparse.Namespace) -> int:
    if args.empirical:
        return _audit_empirical(args)
    from fedscene.audit.coordinator_record import check_against
    from fedscene.audit.ledger_report import terminal_table, write_report
    from fedscene.audit.ledgers import audit, to_json

    if args.scene or args.set:
        raise FedsceneError("fedscene audit: --scene and --set belong to --empirical; add it, "
                            "or drop them to audit ledgers")
    if not args.paths:
        raise FedsceneError("fedscene audit: name at least one state directory, run "
                            "directory or ledger (or use --empirical)")
    results = audit(args.paths, near=args.near, jobs=args.jobs)
    for record in args.coordinator:
        if not check_against(results, Path(record)):
            raise FedsceneError(f"--coordinator {record}: names none of the audited ledgers' "
                                f"scenes ({', '.join(sorted({r.scene for r in results}))})")
    if args.json:
        print(to_json(results))
    else:
        console.print(terminal_table(results))
        for result in results:
            for reason in result.reasons:
                console.print(f"[bold red]{result.verdict}[/] {result.scene}: {reason}",
                              soft_wrap=True)
        meanings = {(r.unit, r.per_purchase, r.per_shopper) for r in results if r.per_purchase}
        for unit, purchase, shopper in sorted(meanings, key=str)[:10]:
            console.print(f"unit {unit}: one purchase: {purchase}; one shopper: {shopper}",
                          soft_wrap=True)
    if args.report:
        write_report(results, Path(args.report))
        if not args.json:
            console.print(f"report written to {args.report}")
    return 0 if all(r.passed for r in results) else 1


def _audit_empirical(args: argparse.Namespace) -> int:
    import json

    from fedscene.audit.empirical import CONSISTENT, run_empirical_audit
    from fedscene.audit.empirical_report import summary_line, terminal_table, write_report

    if len(args.paths) > 1:
        raise FedsceneError(f"fedscene audit --empirical takes one config (TOML), got "
                            f"{len(args.paths)} paths: {' '.join(args.paths)}")
    if not args.scene:
        raise FedsceneError("fedscene audit --empirical: --scene NAME is required (a scene "
                            "of the config's data)")
    if not 0.5 <= args.confidence < 1.0:
        raise FedsceneError(f"--confidence {args.confidence}: give a value in [0.5, 1)")
    if args.canaries < 2:
        raise FedsceneError(f"--canaries {args.canaries}: give at least 2 (1000 is usual)")
    config = load_config(args.paths[0] if args.paths else args.main_job_config, args.set)
    result = run_empirical_audit(config, args.scene, canaries=args.canaries,
                                 confidence=args.confidence, algorithm=args.algorithm,
                                 examples=args.examples)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(terminal_table(result))
        console.print(summary_line(result), soft_wrap=True)
    if args.report:
        write_report(result, Path(args.report))
        if not args.json:
            console.print(f"report written to {args.report}")
    return 0 if result.verdict == CONSISTENT else 1


def register(commands: argparse._SubParsersAction, main_job_config: Path) -> None:
    """Add this job's commands to `fedscene`; `--empirical` without a config audits
    `main_job_config` (the dispatcher's, so that auditing does not depend on simulating)."""
    audit = commands.add_parser(
        "audit", help="verify privacy ledgers and recompute epsilon, or (--empirical) bound "
                      "what a scene's training leaks; exit 0 only if all pass")
    audit.add_argument("paths", nargs="*", metavar="STATE_DIR_OR_LEDGER",
                       help="scene state directories, run directories or ledger files; with "
                            "--empirical, the TOML config (omit for the main job's)")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.add_argument("--report", metavar="FILE", help="write a Markdown (.md) or HTML "
                       "(.html) report with a plot of epsilon over rounds")
    audit.add_argument("--near", type=float, default=0.9,
                       help="fraction of the budget from which a scene is 'near budget'")
    audit.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                       help="ledgers audited in parallel")
    audit.add_argument("--coordinator", action="append", default=[], metavar="FEDERATION_JSON",
                       help="the coordinator's federation.json: each scene's ledger must hold "
                            "every ledger head its replies reported, in order (a rewritten "
                            "ledger fails as 'rewritten'); repeat for several campaigns")
    empirical = audit.add_argument_group(
        "empirical audit", "train one scene with canary shoppers and bound epsilon from "
                           "below (Steinke, Nasr & Jagielski 2023)")
    empirical.add_argument("--empirical", action="store_true",
                           help="run the one-run canary audit of a scene's training")
    empirical.add_argument("--scene", help="the scene to audit")
    empirical.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                           help="override a config value, e.g. privacy.epsilon=1")
    empirical.add_argument("--canaries", type=int, default=1000,
                           help="canary shoppers per adversary (each included w.p. 1/2)")
    empirical.add_argument("--confidence", type=float, default=0.95,
                           help="confidence of the lower bound")
    empirical.add_argument("--algorithm", default=reference_name(),
                           choices=federated_names(),
                           help="the training algorithm audited ("
                                + describe(federated_names()) + ")")
    empirical.add_argument("--examples", type=int, default=None,
                           help="training examples of a canary shopper (default: the "
                                "scene's 90th-percentile shopper's)")
    audit.set_defaults(run=_audit, main_job_config=main_job_config)
