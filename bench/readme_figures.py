"""The README's tables of figures, rendered from `bench/results/*.json`: never typed by hand.

Each table sits between `<!-- figures: NAME -->` and `<!-- /figures -->` in the README, NAME
naming its renderer here. `python bench/readme_figures.py` rewrites them from the last
results; `--check` only says which differ (the test tier runs it), so a benchmark rerun whose
figures did not reach the README fails there.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
#: Each framework's `bench/frameworks.py` results, by the name the README gives it.
FRAMEWORK_RESULTS = {
    "OpenAI Agents SDK": "frameworks",
    "LangGraph": "frameworks_langgraph",
    "Pydantic AI": "frameworks_pydantic-ai",
    "kernos Agent": "frameworks_kernos",
}
_BLOCK = re.compile(
    r"(<!-- figures: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /figures -->)", re.S
)


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((RESULTS / f"{name}.json").read_text())
    return loaded


def _where_it_went(held: dict[str, Any]) -> str:
    """An honest run's wait for its workflow tasks, and the machine's CPU in the burst."""
    if "crowded_phases_ms" not in held:
        return ""
    waits = held["crowded_phases_ms"]["task_wait"], held["alone_phases_ms"]["task_wait"]
    crowded, alone = held["crowded_cpu_s"], held["alone_cpu_s"]

    def cpu(part: str) -> str:
        return f"{crowded.get(part, 0):.1f} s ({alone.get(part, 0):.1f})"

    return (
        f"; an honest run's workflow tasks waited {waits[0]:.0f} ms for a host ({waits[1]:.0f} "
        f"alone); CPU in the burst: Temporal {cpu('temporal server')}, kernel, host and client "
        f"(one process) {cpu('this process')}, pools {cpu('pool children')}"
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _s(ms: float) -> str:
    return f"{ms / 1000:.1f} s"


def pools() -> str:
    """`bench/pools.py`: what a pool costs, and what a greedy neighbour costs an honest tenant."""
    result = _load("pools")
    cold, memory = result["cold_start"], result["idle_pool_memory"]
    burner, crowd = result["hostile_neighbour"], result["crowd"]
    rows = [
        [
            "a run in a pool with no process yet, over the same run in a warm pool",
            f"+{cold['extra_ms_p50']:.0f} ms p50, +{cold['extra_ms_p99']:.0f} ms p99",
        ],
        [
            "memory of an idle pool's process (its cgroup's count)",
            f"{memory['mib_p50']:.0f} MiB p50, {memory['mib_max']:.0f} MiB at most, "
            f"over {memory['pools']} pools",
        ],
        [
            "an honest tenant's burst of runs, next to another tenant's runs burning CPU in "
            "workflow code",
            f"**{burner['wall_ratio']:.2f}x** the wall time alone "
            f"({_s(burner['crowded_wall_ms'])} against {_s(burner['alone_wall_ms'])}), "
            f"{burner['p99_ratio']:.2f}x the p99",
        ],
    ]
    for variant, threaded in result.get("threaded_neighbour", {}).items():
        rows.append(
            [
                f"the same burst next to a pool whose four threads hash on every core, {variant}",
                f"**{threaded['wall_ratio']:.2f}x** the wall time alone "
                f"({_s(threaded['crowded_wall_ms'])} against {_s(threaded['alone_wall_ms'])})",
            ]
        )
    for host, held in result["holding_neighbour"].items():
        rows.append(
            [
                f"the same burst next to runs that block their workflow tasks, {host}",
                f"**{held['wall_ratio']:.2f}x** the wall time alone "
                f"({_s(held['crowded_wall_ms'])} against {_s(held['alone_wall_ms'])}); "
                f"tasks turned or given back: {held['neighbour_turned_back']} of the "
                f"neighbour's, {held['honest_turned_back']} of the honest tenant's"
                + _where_it_went(held),
            ]
        )
    rows.append(
        [
            f"{crowd['runs']:,} runs open at once over {crowd['tenants']} tenants, each waiting "
            "60 s then making one syscall",
            f"{crowd['pools']} pools ({crowd['pools_memory_gib']:.1f} GiB), submitted in "
            f"{crowd['submit_s']:.0f} s; **{crowd['extra_ms_p50'] / 1000:.0f} s p50, "
            f"{crowd['extra_ms_p99'] / 1000:.0f} s p99 beyond each run's wait**; of "
            f"{crowd['surveyed']} runs' histories: the first task done "
            f"{crowd['first_task_s_p50']:.0f} s p50 after the run's start, "
            f"{crowd['tasks_timed_out']} tasks timed out ({crowd['tasks_timed_out_running']} "
            f"on a host, {crowd['tasks_timed_out_waiting']} on a sticky queue)",
        ]
    )
    return _table(["", "figure (goal for a neighbour: ≤ 1.2x)"], rows)


def syscall_overhead() -> str:
    """`bench/syscall_overhead.py`: one more syscall in a run, kernel against bare Temporal."""
    result = _load("syscall_overhead")
    rows = []
    for label, row in (
        ("sequential, runs 1 s apart", result),
        ("sequential, back to back", result["back_to_back"]),
        (f"{result['parallel']['runs']} runs in parallel (wall time per syscall)",
         result["parallel"]),
    ):  # fmt: skip
        rows.append(
            [
                label,
                f"{row['kernel_ms']:.1f}",
                f"{row['kernel_in_process_ms']:.1f}",
                f"{row['raw_temporal_ms']:.1f}",
                f"{row['ratio']:.2f}",
                f"{row['raw_eager_ms']:.1f}",
                f"{row['ratio_to_eager']:.2f}",
            ]
        )
    whole = result["run_with_one_syscall"]
    rows.append(
        [
            "a whole run with one syscall, submission to result",
            f"{whole['kernel_ms']:.1f}",
            f"{whole['kernel_in_process_ms']:.1f}",
            f"{whole['raw_ms']:.1f}",
            f"{whole['kernel_ms'] / whole['raw_ms']:.2f}",
            f"{whole['raw_eager_ms']:.1f}",
            f"{whole['kernel_ms'] / whole['raw_eager_ms']:.2f}",
        ]
    )
    header = [
        "ms",
        "kernel (agent code confined)",
        "kernel, agent code in process",
        "raw Temporal, activity on its own worker and queue",
        "ratio",
        "raw, activity on the workflow's worker (eager)",
        "ratio",
    ]
    return _table(header, rows)


def cli_startup() -> str:
    """`bench/cli_startup.py`: how quickly the `kernos` command answers."""
    result = _load("cli_startup")
    rows = [
        ["`kernos --help`", f"{result['help_s']:.3f}"],
        ["`kernos ps`, against a running kernel", f"{result['ps_s']:.3f}"],
        ["Python starting and doing nothing", f"{result['python_s']:.3f}"],
        ["Python importing what every command imported before", f"{result['eager_imports_s']:.3f}"],
    ]
    return _table(["median of fresh processes", "seconds"], rows)


def llm_throughput() -> str:
    """`bench/llm_throughput.py`: the local model's tokens per second, direct and through kernos."""
    result = _load("llm_throughput")
    tokens = result["tokens_per_s"]
    rows = [
        ["llama-server directly", f"{tokens['direct']['1']:.1f}", f"{tokens['direct']['4']:.1f}"],
        [
            "through kernos, one agent run per request",
            f"{tokens['kernel']['1']:.1f}",
            f"{tokens['kernel']['4']:.1f}",
        ],
        [
            "kernos over direct",
            f"{result['kernel_over_direct']['1']:.0%}",
            f"{result['kernel_over_direct']['4']:.0%}",
        ],
    ]
    return _table(["tokens/s", "1 request at a time", "4 at once"], rows)


def memory() -> str:
    """`bench/memory.py`: scoped vector search over 100,000 paragraphs."""
    result = _load("memory")
    goal = result["goal"]
    p99_met = "met" if result["search_p99_ms"] < goal["search_p99_ms"] else "**not met**"
    recall_met = "met" if result["recall_at_10"] >= goal["recall_at_10"] else "**not met**"
    rows = [
        [
            "scoped search, p50 / p99",
            f"**{result['search_p50_ms']:.1f} / {result['search_p99_ms']:.1f} ms** "
            f"({result['search_path']} ranking)",
            f"p99 < {goal['search_p99_ms']} ms: {p99_met}",
        ],
        [
            "recall@10 against exact search",
            f"**{result['recall_at_10']}**",
            f"≥ {goal['recall_at_10']}: {recall_met}",
        ],
        [
            f"the same queries with the HNSW plan forced (iterative scan, `ef_search` "
            f"{result['ef_search']})",
            f"recall {result['hnsw_forced_recall_at_10']}, p50 / p99 "
            f"{result['hnsw_forced_p50_ms']:.1f} / {result['hnsw_forced_p99_ms']:.1f} ms",
            "",
        ],
        [
            "a query's embedding (all-MiniLM-L6-v2, CPU)",
            f"{result['query_embedding_p50_ms']:.1f} ms p50",
            "",
        ],
        [
            "inserts through the syscall's transaction (quota check, LRU)",
            f"{result['insert_per_s']:.0f} items/s",
            "",
        ],
        [
            f"HNSW build over {result['items']:,} (in `maintenance_work_mem`)",
            f"{result['index_build_s']:.1f} s",
            "",
        ],
    ]
    return _table(["figure", "value", "goal"], rows)


def storage() -> str:
    """`bench/storage.py`: file operations through the store, several at once."""
    result = _load("storage")
    rows = [
        [
            f"{what}, {result['concurrency']} at once over {result['namespaces']} namespaces",
            f"**{result[key]:,.0f}**/s",
        ]
        for what, key in (
            ("new files", "write_new_per_s"),
            ("new versions", "write_version_per_s"),
            ("reads", "read_per_s"),
            ("rollbacks", "rollback_per_s"),
        )
    ]
    return _table([f"files of {result['file_bytes']:,} bytes", "operations"], rows)


def access() -> str:
    """`bench/access.py`: Casbin decisions, the claims check, seals, and the audit's rows."""
    result = _load("access")
    rows = [
        [
            f"Casbin decisions/s, packaged policy ({result['rules_default_policy']} rules)",
            f"{result['decisions_per_s_default_policy']:,} fresh; "
            f"{result['decisions_per_s_default_policy_remembered'] / 1e6:.1f} M remembered",
        ],
        [
            f"Casbin decisions/s, {result['rules_large_policy']:,} rules (50 tenants, roles, "
            "deny and approval rules)",
            f"**{result['decisions_per_s_1000_rules']:,}** fresh; "
            f"**{result['decisions_per_s_1000_rules_remembered'] / 1e6:.1f} M** remembered",
        ],
        [
            "the check of a syscall's claims against the syscall table and the run's record",
            f"{result['claims_check_us']:.1f} µs",
        ],
        [
            "sealing an `llm.chat` result of 20 messages (kernel worker) / checking it (agent "
            "side)",
            f"{result['result_seal_us']:.0f} / {result['result_check_us']:.0f} µs",
        ],
        [
            "the decision's audit row (liveness, budget, hash-chain append in one statement), "
            "p50 / p99",
            f"{result['decision_row_p50_ms']:.2f} / {result['decision_row_p99_ms']:.2f} ms",
        ],
        [
            "decision row + result row per syscall, p50 / p99",
            f"**{result['per_syscall_p50_ms']:.2f} / {result['per_syscall_p99_ms']:.2f} ms**",
        ],
        [
            "syscalls/s, 8 at once over 8 tenants (8 chains)",
            f"{result['syscalls_per_s_8_at_once_8_tenants']:,.0f}",
        ],
        [
            "syscalls/s, 8 at once in one tenant (one chain: its decisions committed in groups)",
            f"{result['syscalls_per_s_8_at_once_1_tenant']:,.0f}, p99 "
            f"{result['one_tenant_p99_ms']:.1f} ms",
        ],
    ]
    return _table(["figure", "value"], rows)


def fairness() -> str:
    """`bench/fairness.py`: turnaround per tenant under each policy."""
    result = _load("fairness")
    rows = []
    for policy, measured in result["policies"].items():
        heavy, light = measured["turnaround"]["heavy"], measured["turnaround"]["light"]
        rows.append(
            [
                policy,
                f"{measured['jain']:.3f}",
                f"{heavy['mean_s']:.1f}",
                f"{heavy['p99_s']:.1f}",
                f"{light['mean_s']:.1f}",
                f"{light['p99_s']:.1f}",
            ]
        )
    header = ["policy", "Jain", "heavy mean", "heavy p99", "light mean", "light p99"]
    return _table(header, rows)


def scaling() -> str:
    """`bench/scaling.py`: runs open at once, agent code confined and in process."""
    result = _load("scaling")
    rows = [
        [
            f"{row['agents']:,}",
            "confined" if row["isolation"] != "in_process" else "in process",
            f"{row['throughput']:.1f}",
            f"{row['kernel_added_p50_ms']:,.0f}",
            f"{row['kernel_added_p99_ms']:,.0f}",
            f"{row['admission_p50_ms']:,.0f}",
            f"{row['admission_p99_ms']:,.0f}",
        ]
        for row in [*result["rows"], *result.get("in_process_rows", [])]
    ]
    header = [
        "runs", "agent code", "tokens/s", "added p50", "added p99", "admission p50",
        "admission p99",
    ]  # fmt: skip
    return _table(header, rows)


def run_cost() -> str:
    """`bench/run_cost.py`: a run's phases, kernos against Temporal's OpenAI Agents plugin."""
    result = _load("run_cost")
    backends = [backend for backend in ("sim", "llama") if backend in result]
    sides = ["plugin, 1 calls", "kernos, 1 calls", "plugin, 10 calls", "kernos, 10 calls"]
    columns = [(backend, side) for backend in backends for side in sides]

    def phases(backend: str, side: str) -> dict[str, float]:
        # The model call is one phase on both sides, whatever its activity is called.
        found: dict[str, float] = {}
        for name, value in result[backend][side].items():
            for activity in ("invoke_model_activity", "llm.chat"):
                name = name.replace(f"{activity}:", "model call (plugin: invoke_model_activity; "
                                    "kernos: llm.chat):")  # fmt: skip
            found[name] = found.get(name, 0.0) + value
        return found

    table = {column: phases(*column) for column in columns}
    names: list[str] = []
    for column in columns:
        names += [name for name in table[column] if name not in names]
    rows = [
        [name, *(f"{table[column].get(name, 0.0):.1f}" for column in columns)] for name in names
    ]
    for label, key in (("one call: kernos / plugin", "one_call_ratio"),):
        rows.append([f"**{label}** (goal ≤ 1.10)", *(
            f"**{result[backend][key]:.2f}x**" if side == "kernos, 1 calls" else ""
            for backend, side in columns
        )])  # fmt: skip
    rows.append(["**each further call: kernos / plugin** (goal ≤ 1.10)", *(
        f"**{result[backend]['further_call_ratio']:.2f}x** "
        f"({result[backend]['further_call_ms']['kernos']:.0f} / "
        f"{result[backend]['further_call_ms']['plugin']:.0f} ms)"
        if side == "kernos, 10 calls" else ""
        for backend, side in columns
    )])  # fmt: skip
    if any("runs_per_second" in result[backend] for backend in backends):
        rows.append(["**one-call runs per second at saturation** (goal ≥ the plugin's)", *(
            _rate(result[backend]["runs_per_second"], side)
            if "runs_per_second" in result[backend] and side.endswith("1 calls") else ""
            for backend, side in columns
        )])  # fmt: skip
    header = ["p50, ms", *(f"{backend}: {side}" for backend, side in columns)]
    return _table(header, rows)


def _rate(rates: dict[str, float], side: str) -> str:
    """One side's runs per second (`at_once` in flight); kernos's judged against the plugin's."""
    if side.startswith("plugin"):
        return f"{rates['plugin']:.1f} ({rates['at_once']:.0f} at once)"
    return f"**{rates['kernos']:.1f}**: {_met(rates['kernos'] >= rates['plugin'])}"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def scheduling() -> str:
    """The scheduling benchmarks' headline figures against their goals (last runs)."""
    throughput, agents = _load("throughput"), _load("agents_vs_direct")
    fair, scaled = _load("fairness"), _load("scaling")
    saturation, overload = throughput["saturation"], throughput["overload_4x"]
    unequal = agents["unequal_instances"]
    without = agents["direct"]["seconds"] / agents["kernel_without_affinity"]["seconds"]
    first, last = scaled["p99_growth_between"]
    rows = [
        [
            "`throughput.py`: 2 instances x 8 slots at saturation, 64-token answers",
            f"kernel / direct tokens/s **{throughput['ratio']:.3f}** "
            f"({saturation['kernel']['tokens_per_s']:.0f} vs "
            f"{saturation['direct']['tokens_per_s']:.0f})",
            "≥ 0.95",
            _met(throughput["ratio"] >= 0.95),
        ],
        [
            f"same, 4x overload ({overload['clients']} clients, servers queue ≤ "
            f"{overload['max_queued_per_instance']}, clients give up after "
            f"{overload['client_timeout_s']:.0f} s)",
            f"failed requests: direct **{overload['direct']['failed']} of "
            f"{overload['direct']['requests']}**, kernel **{overload['kernel']['failed']}**; p99 "
            f"{overload['kernel']['p99_s']:.1f} s vs {overload['direct']['p99_s']:.1f} s",
            "kernel loses none",
            _met(overload["kernel"]["failed"] == 0),
        ],
        [
            f"`agents_vs_direct.py`: {agents['workload']}, 2 equal instances",
            f"kernel / direct **{agents['ratio']:.2f}** with `affinity_s = "
            f"{agents['affinity_s']:g}` ({agents['kernel']['seconds']:.0f} vs "
            f"{agents['direct']['seconds']:.0f} s); {without:.2f} without affinity",
            "≥ 1.5",
            _met(agents["ratio"] >= 1.5),
        ],
        [
            f"same, instances of {unequal['slots'][0]} and {unequal['slots'][1]} slots",
            f"**{unequal['ratio']:.2f}**",
            "",
            "",
        ],
        [
            "`fairness.py`: two tenants at 10:1, `fair`",
            f"Jain's index over token shares **{fair['jain']:.3f}** "
            f"(fifo {fair['policies']['fifo']['jain']:.2f})",
            "≥ 0.95",
            _met(fair["jain"] >= 0.95),
        ],
        [
            f"`scaling.py`: {first:,} → {last:,} concurrent runs, agent code confined",
            f"kernel-added p99 grows **{scaled['p99_growth']:.2f}x**",
            "within 2x",
            _met(scaled["p99_growth"] <= 2.0),
        ],
    ]
    return _table(["benchmark", "figure (last run)", "goal", ""], rows)


def _framework_table(result: dict[str, Any]) -> str:
    """A framework's ways on each setting of servers, against the framework alone."""
    settings = {f"{n} simulated": ways for n, ways in result["settings"].items()}
    if "llama" in result:
        settings["llama-server"] = result["llama"]["ways"]
    rows = []
    for servers, ways in settings.items():
        direct = ways["direct"]["tasks_per_s"]
        for way, figures in ways.items():
            ratio = figures["tasks_per_s"] / direct
            added = figures.get("added_ms_per_model_call")
            rows.append(
                [
                    servers,
                    way,
                    f"{figures['tasks_per_s']:.1f}",
                    f"{ratio:.2f}x",
                    f"{figures['p50_s']:.2f}",
                    f"{figures['p99_s']:.2f}",
                    "" if added is None else f"{added:.0f}",
                ]
            )
    header = ["servers", "way", "tasks/s", "of direct", "p50 s", "p99 s", "+ms per model call"]
    return _table(header, rows)


def frameworks() -> str:
    """`bench/frameworks.py`: an SDK agent directly, by Temporal's plugin, on kernos."""
    result = _load("frameworks")
    one, four = result["settings"].get("1"), result["settings"].get("4")
    goals = []
    if one is not None:
        share = one["kernos"]["tasks_per_s"] / one["direct"]["tasks_per_s"]
        goals.append(f"kernos on one instance ≥ 0.95x direct: {share:.3f}x, {_met(share >= 0.95)}")
    if four is not None:
        share = four["kernos"]["tasks_per_s"] / four["direct"]["tasks_per_s"]
        goals.append(f"on four ≥ 1.5x direct: {share:.2f}x, {_met(share >= 1.5)}")
        kernos, plugin = (four[w]["added_ms_per_model_call"] for w in ("kernos", "plugin"))
        goals.append(
            f"ms added per model call ≤ 1.10x the plugin's (4 instances): {kernos:.0f} against "
            f"{plugin:.0f}, {_met(kernos <= 1.10 * plugin)}"
        )
    return _framework_table(result) + "\nGoals: " + "; ".join(goals) + ".\n"


def frameworks_langgraph() -> str:
    """`bench/frameworks.py --framework langgraph`: a LangGraph graph directly and on kernos."""
    return _framework_table(_load("frameworks_langgraph"))


def frameworks_pydantic_ai() -> str:
    """`bench/frameworks.py --framework pydantic-ai`: directly, by Pydantic AI's Temporal
    capability, on kernos."""
    return _framework_table(_load("frameworks_pydantic-ai"))


def frameworks_kernos() -> str:
    """`bench/frameworks.py --framework kernos`: the loop on the `openai` client alone, and a
    `kernos.Agent`."""
    return _framework_table(_load("frameworks_kernos"))


def frameworks_side_by_side() -> str:
    """Each framework directly and on kernos, per setting of servers: the seed's comparison."""
    rows = []
    for name, file in FRAMEWORK_RESULTS.items():
        result = _load(file)
        settings = {f"{n} simulated": ways for n, ways in result["settings"].items()}
        if "llama" in result:
            settings["llama-server"] = result["llama"]["ways"]
        for servers, ways in settings.items():
            direct, kernos = ways["direct"], ways["kernos"]
            rows.append(
                [
                    name,
                    servers,
                    f"{direct['tasks_per_s']:.1f} / {kernos['tasks_per_s']:.1f}",
                    f"{kernos['tasks_per_s'] / direct['tasks_per_s']:.2f}x",
                    f"{direct['p50_s']:.2f} / {kernos['p50_s']:.2f}",
                    f"{direct['p99_s']:.2f} / {kernos['p99_s']:.2f}",
                ]
            )
    header = ["framework", "servers", "tasks/s direct / kernos", "of direct",
              "p50 s direct / kernos", "p99 s direct / kernos"]  # fmt: skip
    return _table(header, rows)


RENDERERS: dict[str, Callable[[], str]] = {
    "frameworks": frameworks,
    "frameworks_langgraph": frameworks_langgraph,
    "frameworks_pydantic_ai": frameworks_pydantic_ai,
    "frameworks_kernos": frameworks_kernos,
    "frameworks_side_by_side": frameworks_side_by_side,
    "pools": pools,
    "syscall_overhead": syscall_overhead,
    "cli_startup": cli_startup,
    "llm_throughput": llm_throughput,
    "memory": memory,
    "storage": storage,
    "access": access,
    "fairness": fairness,
    "scaling": scaling,
    "run_cost": run_cost,
    "scheduling": scheduling,
}


def rendered(readme: str) -> str:
    """`readme` with every figures block rendered afresh (ValueError for an unknown name)."""

    def block(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in RENDERERS:
            raise ValueError(f"the README names figures {name!r}; known: {', '.join(RENDERERS)}")
        return match[1] + RENDERERS[name]() + match[4]

    return _BLOCK.sub(block, readme)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say which tables differ")
    parser.add_argument("--readme", type=Path, default=README, help="the README to render")
    args = parser.parse_args()
    readme = args.readme.read_text()
    try:
        fresh = rendered(readme)
    except (ValueError, OSError, KeyError) as exc:
        print(f"cannot render the README's figures: {exc!r}", file=sys.stderr)
        return 2
    if not args.check:
        args.readme.write_text(fresh)
        return 0
    stale = [
        match["name"]
        for match, new in zip(_BLOCK.finditer(readme), _BLOCK.finditer(fresh), strict=True)
        if match["body"] != new["body"]
    ]
    if stale:
        print(
            f"README figures out of date: {', '.join(stale)}; run python bench/readme_figures.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
