"""PNG plots of the benchmark results, for the README's Performance section.

Reads bench/results/*.json (whichever exist) and writes bench/results/*.png.
Run: `python bench/plots.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from readme_figures import FRAMEWORK_RESULTS

RESULTS = Path(__file__).parent / "results"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def save(figure: Any, name: str) -> None:
    path = RESULTS / f"{name}.png"
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"wrote {path}")


def calibration(data: dict[str, Any]) -> None:
    figure, axes = plt.subplots(figsize=(5, 3.2))
    batches = [int(b) for b in data["measured_tokens_per_s"]]
    axes.plot(batches, list(data["measured_tokens_per_s"].values()), "o-", label="llama-server")
    axes.plot(batches, list(data["simulated_tokens_per_s"].values()), "s--", label="simulator")
    axes.set(xlabel="parallel streams", ylabel="output tokens/s", title="Simulator vs real server")
    axes.legend()
    save(figure, "calibration")


def throughput(data: dict[str, Any]) -> None:
    figure, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, key, title in ((axes[0], "saturation", "At saturation"),
                           (axes[1], "overload_4x", "4x overload")):  # fmt: skip
        phase = data[key]
        ax.bar(
            ["direct", "kernos"], [phase["direct"]["tokens_per_s"], phase["kernel"]["tokens_per_s"]]
        )
        ax.set(ylabel="output tokens/s", title=title)
        for i, way in enumerate(("direct", "kernel")):
            ax.annotate(f"{phase[way]['failed']} failed", (i, phase[way]["tokens_per_s"] / 2),
                        ha="center", color="white")  # fmt: skip
    save(figure, "throughput")


def agents(data: dict[str, Any]) -> None:
    figure, axes = plt.subplots(figsize=(6, 3.2))
    labels = ["direct", "kernos\n(no affinity)", "kernos", "direct\n8+2 slots", "kernos\n8+2 slots"]
    unequal = data["unequal_instances"]
    values = [data["direct"]["tokens_per_s"], data["kernel_without_affinity"]["tokens_per_s"],
              data["kernel"]["tokens_per_s"], unequal["direct"]["tokens_per_s"],
              unequal["kernel"]["tokens_per_s"]]  # fmt: skip
    axes.bar(labels, values, color=["grey", "tab:blue", "tab:blue", "grey", "tab:blue"])
    axes.set(ylabel="output tokens/s", title="ReAct-shaped agents on two instances")
    save(figure, "agents_vs_direct")


def scaling(data: dict[str, Any]) -> None:
    rows = data["rows"]
    figure, left = plt.subplots(figsize=(6, 3.2))
    runs = [row["agents"] for row in rows]
    left.plot(runs, [row["throughput"] for row in rows], "o-", color="tab:blue")
    left.set(xlabel="concurrent runs", ylabel="output tokens/s", xscale="log")
    right = left.twinx()
    right.plot(runs, [row["kernel_added_p99_ms"] for row in rows], "s--", color="tab:red")
    right.set_ylabel("kernel-added p99 (ms)", color="tab:red")
    left.set_title("Scaling on a backend of fixed capacity")
    save(figure, "scaling")


def fairness(data: dict[str, Any]) -> None:
    figure, axes = plt.subplots(figsize=(6, 3.2))
    policies = list(data["policies"])
    for offset, tenant in ((-0.2, "heavy"), (0.2, "light")):
        means = [data["policies"][p]["turnaround"][tenant]["mean_s"] for p in policies]
        axes.bar([i + offset for i in range(len(policies))], means, width=0.4, label=tenant)
    axes.set_xticks(range(len(policies)), policies)
    axes.set(ylabel="mean turnaround (s)", title="Two tenants at 10:1")
    axes.legend()
    save(figure, "fairness")


def frameworks() -> None:
    """Per framework and number of simulated servers: kernos against the framework alone."""
    found = {name: data for name, file in FRAMEWORK_RESULTS.items() if (data := load(file))}
    if not found:
        return
    figure, panels = plt.subplots(1, 2, figsize=(9, 3.4))
    width = 0.8 / len(found)
    for index, (name, data) in enumerate(found.items()):
        settings = data["settings"]
        xs = [i + (index - (len(found) - 1) / 2) * width for i in range(len(settings))]
        ratios = {
            "tasks_per_s": [w["kernos"]["tasks_per_s"] / w["direct"]["tasks_per_s"]
                            for w in settings.values()],
            "p99_s": [w["kernos"]["p99_s"] / w["direct"]["p99_s"] for w in settings.values()],
        }  # fmt: skip
        for panel, key in zip(panels, ratios, strict=True):
            panel.bar(xs, ratios[key], width=width, label=name)
            panel.set_xticks(range(len(settings)), [f"{n} servers" for n in settings])
    panels[0].set(ylabel="kernos tasks/s ÷ direct", title="Throughput, of the framework alone")
    panels[1].set(ylabel="kernos p99 ÷ direct", title="p99 per task, of the framework alone")
    for panel in panels:
        panel.axhline(1.0, color="grey", linewidth=0.8)
    panels[0].legend(fontsize=7, loc="lower left")
    save(figure, "frameworks")


def main() -> None:
    frameworks()
    for name, plot in (("calibration", calibration), ("throughput", throughput),
                       ("agents_vs_direct", agents), ("scaling", scaling),
                       ("fairness", fairness)):  # fmt: skip
        data = load(name)
        if data is not None:
            plot(data)


if __name__ == "__main__":
    main()
