"""AuditAnchor: the audit chains' heads, recorded in Temporal's history, outside PostgreSQL.

Kernel workers signal it with the heads they read from the database; its history (the carried
heads in each execution's input, then every signal) is what `kernos audit verify` compares the
database against. It runs on the kernel's own task queue, in kernel workers, and does no I/O.
"""

from __future__ import annotations

from temporalio import workflow

from kernos.workflows.long_lived import until_history_is_long

with workflow.unsafe.imports_passed_through():
    from kernos.kernel.audit_chain import AnchoredHeads, ChainHead

#: Signals one execution takes before it continues as new, carrying the latest heads.
SIGNALS_PER_EXECUTION = 1000


@workflow.defn(name="AuditAnchor")
class AuditAnchor:
    """Keeps the furthest head seen of each chain; continues as new to bound its history."""

    @workflow.init
    def __init__(self, carried: AnchoredHeads) -> None:
        self._heads: dict[str, ChainHead] = {head.chain: head for head in carried.heads}
        self._signals = 0

    @workflow.run
    async def run(self, carried: AnchoredHeads) -> None:
        """Wait for heads; hand them to a fresh execution when the history grows."""
        await until_history_is_long(lambda: self._signals, SIGNALS_PER_EXECUTION)
        workflow.continue_as_new(AnchoredHeads(heads=sorted(self._heads.values(), key=_chain)))

    @workflow.signal
    def anchor(self, heads: AnchoredHeads) -> None:
        """Record heads read from the database; a chain's head only moves forward."""
        self._signals += 1
        for head in heads.heads:
            known = self._heads.get(head.chain)
            if known is None or head.seq > known.seq:
                self._heads[head.chain] = head

    @workflow.query
    def heads(self) -> AnchoredHeads:
        """The furthest head of each chain anchored so far."""
        return AnchoredHeads(heads=sorted(self._heads.values(), key=_chain))


def _chain(head: ChainHead) -> str:
    return head.chain
