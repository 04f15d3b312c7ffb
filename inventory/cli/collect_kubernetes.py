"""``planb collect kubernetes``: its options, and the collector they build (``collectors.kubernetes``)."""
from __future__ import annotations

import click

from collectors import kubernetes as source
from inventory.cli import CLIError
from inventory.cli.collect import execute


@click.command("kubernetes")
@click.option("--kubeconfig", default=None, metavar="FILE",
              help="Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).")
@click.option("--context", "contexts", multiple=True, metavar="NAME",
              help="Kubeconfig context = one cluster (repeatable; default: the current context, or the "
                   "cluster this pod runs in).")
@click.option("--cluster-name", default=None, metavar="NAME",
              help="Name of the cluster in natural keys (default: the cluster its context names); "
                   "required in a pod (CronJob), where no kubeconfig names it.")
@click.option("--page-size", type=click.IntRange(1, 10_000), default=source.DEFAULT_PAGE_SIZE,
              show_default=True, help="Objects per list request (limit/continue paging).")
@click.option("--no-services", is_flag=True,
              help="Leave Services out (when an estate file names every business service).")
def command(kubeconfig: str | None, contexts: tuple[str, ...], cluster_name: str | None, page_size: int,
            no_services: bool) -> None:
    """Collect nodes, pods, workloads, disruption budgets and Services from Kubernetes clusters.

    One scope per cluster (kubernetes:<cluster>).  Inside a pod with neither --kubeconfig
    nor --context, the pod's service account reads the cluster it runs in.  Exit status 0
    when every cluster was read completely, 3 when some were not (those kept their earlier
    data and retired nothing), 1 when none was.
    """
    if cluster_name is not None:
        checked = source.cluster_name_from(cluster_name)
        if checked != cluster_name.strip():
            raise CLIError(f"--cluster-name {cluster_name!r}: use letters, digits, '.', '_' and '-' "
                           f"(for example {checked!r})")
    if not kubeconfig and not contexts and source.in_cluster():
        if not cluster_name:
            raise CLIError("running in a pod: name this cluster with --cluster-name (natural keys "
                           "carry it, and no kubeconfig names it here)")
        targets = [source.in_cluster_target(cluster_name)]
    else:
        try:
            targets = source.kubeconfig_targets(kubeconfig, contexts, cluster_name)
        except source.KubeconfigError as exc:
            raise CLIError(f"kubeconfig: {exc}") from exc
    execute(source.KubernetesCollector(targets, page_size=page_size, services=not no_services))
