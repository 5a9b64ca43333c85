"""`approval.ask`, on the kernel queue: the agent's own tool waits for a human's approval.

The waiting and the deciding are the interceptor's (an approval row, `kernos approve`, the
audit); an attempt reaches this activity only once a human has approved, so nothing is left to
do here but answer: the tool runs inside the run.
"""

from __future__ import annotations

from temporalio import activity

from kernos.kernel.syscall_table import APPROVAL_ASK
from kernos.kernel.syscalls import ApprovalAsk, ApprovalGiven


@activity.defn(name=APPROVAL_ASK.name)
async def ask(request: ApprovalAsk) -> ApprovalGiven:
    """Approved: the run may go on with its tool (the answer is sealed, as every syscall's)."""
    return ApprovalGiven(tool=request.tool, call_id=request.call_id)
