"""The shape every collector produces, and the small interface they share.

A collector only *reads* its source and yields one ``ScopeBatch`` per
fine-grained scope (provider/account/region/resource type, a subscription, a
host, an osquery host).  ``collectors.ingest`` writes the batches in groups of
many scopes per transaction: upserts keyed on natural keys, and — only for a
batch that is ``complete`` — retirement of the assets of that scope it did not
contain.
Collectors never import Flask and never commit.
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

ProgressFn = Callable[[str], None]


@dataclass
class AssetRecord:
    """One asset as a source sees it.  ``None`` means "this source does not say"."""

    natural_key: str
    name: str
    kind: str
    provider: str | None = None
    account: str | None = None
    region: str | None = None
    zone: str | None = None
    hostname: str | None = None
    cloud_instance_id: str | None = None
    os_family: str | None = None
    os_name: str | None = None
    os_version: str | None = None
    environment: str | None = None
    criticality: str | None = None
    owner: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    min_up: int | None = None


@dataclass
class SoftwareRecord:
    """Installed software as found on an asset; attribution maps it to a vendor/product."""

    asset_key: str
    name: str
    publisher: str | None = None
    # The *product's* version as installed, or None when the source does not know it.
    # Never a wrapper's version (an Azure extension handler, the image a VM was built
    # from): those go in ``attributes``, so a version range never compares them.
    version: str | None = None
    # Kind of raw string for attribution: "package", "publisher", "extension", "ami-owner", "image"...
    origin: str = "package"
    # Source facts about this installation (handler_version, image_version, digest, purl...).
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class DependencyRecord:
    dependent_key: str
    dependency_key: str
    kind: str = "runs-on"
    strength: str = "hard"


@dataclass
class ScopeBatch:
    """Everything one scope returned.

    ``complete`` is True only when the source answered for the *whole* scope;
    an incomplete batch is upserted but retires nothing.

    ``retire`` is False for one page of a scope read page by page (Fleet's host list): the page
    is complete for what it holds (its assets' software and dependencies are replaced), but the
    scope's other assets are not gone; the scope's last batch, listing every asset, retires.

    A failure *below* the scope keeps the batch complete (its assets were all listed, so
    they are applied and retired as usual) and names what could not be read, with the
    reason in ``error``; ingest then reports the scope as partial:

    * ``software_unread``: natural keys of assets whose installed software could not be
      read (SSM inventory or VM extensions failing).  Their stored software is left
      exactly as it was (records the batch does carry for them are upserted, nothing is
      removed), and what the source reads from inside the machine (OS facts, hostname)
      only fills empty values.
    * ``members_unread``: natural keys of group assets whose member listing failed (a
      scale set's instances).  Their stored members are kept as they were: not retired,
      their software and member edges untouched.
    """

    scope_key: str
    assets: list[AssetRecord] = field(default_factory=list)
    software: list[SoftwareRecord] = field(default_factory=list)
    dependencies: list[DependencyRecord] = field(default_factory=list)
    complete: bool = True
    error: str | None = None
    retire: bool = True
    software_unread: list[str] = field(default_factory=list)
    members_unread: list[str] = field(default_factory=list)
    # A digest of everything the collector read for this scope, when it can give one
    # cheaply (osquery: the host's results): the same digest from the same collector means
    # the same records, so ingest fingerprints the scope from it instead of its records.
    digest: str | None = None
    # Records not built yet: the collector was told (``Collector.unchanged``) that the
    # scope's digest is the one last applied in full, so it probably need not be written.
    # ``build()`` fills assets, software, dependencies, ``complete`` and ``error``.
    deferred: Callable[[ScopeBatch], None] | None = None
    # The collector vouches that no text of the batch holds a character ingest would clean
    # (control characters, lone surrogates: ``collectors.ingest.clean_batch``), so ingest
    # need not search it.  False (the default): ingest searches.
    clean: bool = False

    def build(self) -> None:
        """Build deferred records (see ``deferred``); nothing to do otherwise."""
        if self.deferred is not None:
            fill, self.deferred = self.deferred, None
            fill(self)


class Collector(Protocol):
    """What ``planb collect`` needs from a source."""

    #: registry name, e.g. "aws"
    name: str

    def describe_scope(self) -> str:
        """A one-line summary of what this run covers (stored on the CollectionRun)."""

    def collect(self, progress: ProgressFn) -> Iterator[ScopeBatch]:
        """Yield one batch per fine-grained scope; never raise for one scope's failure."""

    # Optional (looked up with getattr, so not part of the protocol):
    #   concurrency: int
    # How many scopes it may read at once (``--concurrency``); collected concurrently, the
    # batches are still yielded one at a time, in scope order, to the one writer.
    #   def planned_scopes(self) -> list[str] | None
    # The scope keys this run will yield, when known before reading the source.
    # ``collectors.ingest.run_collection`` locks them up front, so a run that
    # overlaps another refuses to start instead of reading the source first.
    #   unchanged: Callable[[str, str], bool] | None
    # A collector that gives ``ScopeBatch.digest`` may declare this attribute (None);
    # ingest sets it before ``collect`` to a test ``unchanged(scope_key, digest)``: True
    # when that digest is the one the scope's last full comparison applied.  The
    # collector may then yield the batch with its records deferred (``ScopeBatch.deferred``)
    # and ingest builds them only if the scope's rows turn out to need a comparison.


def collect_concurrently(tasks: Sequence[Callable[[], ScopeBatch]], concurrency: int,
                         name: str = "planb-scope") -> Iterator[ScopeBatch]:
    """Run independent scope tasks ``concurrency`` at a time and yield their batches in the
    order of ``tasks`` (so a scope that references another's assets still comes after it).
    Each task keeps its own deadline; the batches still go one at a time to the writer."""
    if concurrency <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield task()
        return
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=name)
    try:
        futures: list[Future[ScopeBatch]] = [executor.submit(task) for task in tasks]
        for future in futures:
            yield future.result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
