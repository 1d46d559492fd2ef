"""``kubetune-operator``: run the StudyJob operator (kopf) in one namespace or cluster-wide.

Environment (the Helm chart sets these): ``KUBETUNE_TRIAL_IMAGE`` and
``KUBETUNE_TRAINER_IMAGE_CPU`` (the flags' defaults), ``KUBETUNE_NAMESPACE`` (when no
scope flag is given), and the spec defaults of :class:`kubetune_operator.spec.Defaults`:
``KUBETUNE_STORAGE_SECRET``, ``KUBETUNE_STORAGE_SECRET_KEY``, ``KUBETUNE_RESULTS_PVC``,
``KUBETUNE_TRIAL_DEFAULTS``; ``KUBETUNE_MAX_JOBS_PER_STUDYJOB`` (the cap's default).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from kubetune.cli.common import ArgumentParser, add_version_flag
from kubetune_operator.names import MAX_JOBS, WORKERS
from kubetune_operator.runtime import DEFAULT_TRIAL_IMAGE

PROG = "kubetune-operator"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Run kubetune's StudyJob operator: one Kubernetes Job per Optuna trial.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", dest="namespaces", action="append", default=[], metavar="NS",
        help="serve StudyJobs in this namespace (repeatable; default: $KUBETUNE_NAMESPACE)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="serve every namespace")
    parser.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz", metavar="URL",
        help="health endpoint for probes (default: %(default)s; '' turns it off)",
    )
    parser.add_argument(
        "--trial-image", default=DEFAULT_TRIAL_IMAGE, metavar="IMAGE",
        help="trainer image when spec.trials.image is unset (default: $KUBETUNE_TRIAL_IMAGE or %(default)s)",
    )
    parser.add_argument(
        "--cpu-image", default=os.environ.get("KUBETUNE_TRAINER_IMAGE_CPU") or None, metavar="IMAGE",
        help="image of the visualisation Job, which needs no GPU "
             "(default: $KUBETUNE_TRAINER_IMAGE_CPU, else --trial-image)",
    )
    parser.add_argument(
        "--resync-seconds", type=float, default=60.0, metavar="S",
        help="safety-net reconcile interval; events drive everything else (default: %(default)s)",
    )
    parser.add_argument(
        "--posting-level", choices=LEVELS, default="WARNING",
        help="operator log lines at this level and above also become Kubernetes events "
             "(default: %(default)s)",
    )
    parser.add_argument(
        "--workers", type=int, default=WORKERS, metavar="N", help="handler threads (default: %(default)s)"
    )
    parser.add_argument(
        "--max-jobs-per-studyjob", type=int, default=os.environ.get("KUBETUNE_MAX_JOBS_PER_STUDYJOB") or MAX_JOBS, metavar="N",
        help="trial Jobs one StudyJob may run at once, whatever its spec.trials.parallelism "
             "(default: $KUBETUNE_MAX_JOBS_PER_STUDYJOB or %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    add_version_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kubetune-operator``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    namespaces = args.namespaces or ([os.environ["KUBETUNE_NAMESPACE"]]
                                     if os.environ.get("KUBETUNE_NAMESPACE") else [])
    if not namespaces and not args.all_namespaces:
        parser.error("pass --namespace NS (repeatable) or --all-namespaces")
    if args.resync_seconds <= 0 or args.workers < 1 or args.max_jobs_per_studyjob < 1:
        parser.error("--resync-seconds must be greater than 0, --workers and --max-jobs-per-studyjob at least 1")
    from kubetune_operator.spec import Defaults

    try:
        defaults = Defaults.from_environment()
    except ValueError as exc:
        parser.error(str(exc).splitlines()[0])
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    import kopf

    from kubetune_operator import handlers
    from kubetune_operator.kube import Kube
    from kubetune_operator.runtime import Options, Runtime
    from kubetune_operator.settings import configure

    runtime = Runtime(Kube.from_environment(), Options(
        trial_image=args.trial_image, cpu_image=args.cpu_image, resync_seconds=args.resync_seconds,
        defaults=defaults, workers=args.workers, max_jobs=args.max_jobs_per_studyjob))
    registry = kopf.get_default_registry()  # keeps kopf's own login handlers
    handlers.register(registry, runtime)
    settings = configure(kopf.OperatorSettings(), posting_level=getattr(logging, args.posting_level),
                         workers=args.workers)
    kopf.run(
        registry=registry,
        settings=settings,
        standalone=True,
        clusterwide=args.all_namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
