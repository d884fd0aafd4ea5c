"""Memory figures of one setup, one row per cell (placeholders for cells not ok, as fig_setup's).

On a GPU the peak is CUDA's peak allocated, split into weights, the KV the cache holds on the device, and the
rest; an offloaded cache's host-side KV gets a panel of its own and never counts as device memory. On a CPU the
only peak a row holds is the worker process's peak RSS over its life (`peak_mem_mib`, VmHWM): it grows with the
cells run before, so it is drawn apart, grey, as what it is, next to what the model holds (weights + KV, counted
from tensors); where rows carry a cell's own peak RSS (facts.CELL_RSS) that is drawn instead.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.report import facts, fmt
from bench.report.fig_setup import Drawn, col, finite_max, fit, frame, legend, not_ok, setup_figure, title


def memory(rows: pd.DataFrame, title_text: str, path: Path) -> Drawn:
    """GPU: device memory (weights + KV on the device + other = CUDA peak allocated) and, where some row keeps
    KV in host memory, a host panel: host-side KV never counts as device memory. CPU: `cpu_memory`."""
    if not (rows["device"] == "cuda").any():
        return cpu_memory(rows, title_text, path)
    host_any = (col(rows, "kv_host_mib") > 0) & (rows["status"] == "ok").to_numpy()
    width = 13.0 if host_any.any() else 11.0
    rows, fig, axes, y, ok, _ = setup_figure(rows, width, 2 if host_any.any() else 1, timing=False,
                                             **({"width_ratios": [2.4, 1]} if host_any.any() else {}))
    w, kv, host, th, peak = (np.where(ok, col(rows, c), np.nan) for c in
                             ("weights_mib", "kv_cache_mib", "kv_host_mib", "kv_theory_mib", "peak_mem_mib"))
    host = np.where(host > 0, host, np.nan)
    dev_kv = kv - np.nan_to_num(host)
    other = peak - np.nan_to_num(w) - np.nan_to_num(dev_kv)
    scale, unit = (1024.0, "GiB") if finite_max(np.concatenate([peak, kv]), 0.0) > 4096 else (1.0, "MiB")
    peak_name = "CUDA peak allocated"
    where = "device: weights + KV held on the device (kv_cache_mib − kv_host_mib)"
    head = title(fig, f"Memory at peak: {title_text}\n{where} + other = {peak_name}"
                 + ("; host: KV an offloaded cache keeps in host memory" if len(axes) > 1 else ""), width)
    ax, left = axes[0], np.zeros(len(rows))
    for v, name, color in ((w, "weights", "0.55"), (dev_kv, "KV cache in device memory", "tab:blue"), (other, "other (activations, workspace, allocator)", "tab:orange")):
        seg = np.clip(np.nan_to_num(v), 0, None) / scale
        ax.barh(y, seg, left=left, color=color, label=name)
        left += seg
    on_dev = ~np.isfinite(host) & np.isfinite(th)
    ax.plot(((np.nan_to_num(w) + th) / scale)[on_dev], y[on_dev], "kD", ms=5,
            label="predicted KV (kv_theory_mib), drawn after the weights")
    data = {"title": head, "unit": unit, "panels": ["device", "host"][:len(axes)],
            "rows": [t.get_text() for t in ax.get_yticklabels()], "device": [], "host": [], "placeholders": []}
    ends = []
    for i, (_, r) in enumerate(rows.iterrows()):
        if ok[i]:
            ends.append(max(left[i], (fmt.num(w[i]) + th[i]) / scale if on_dev[i] else 0.0))
            said = ("no peak figure: weights + KV only" if np.isnan(peak[i]) else  # e.g. left out by corrections.json
                    f"{fmt.sig(peak[i] / scale)} {unit}" + (" (< weights + KV)" if other[i] < 0 else ""))
            ax.annotate(said,
                        (ends[-1], y[i]), xytext=(5, 0), textcoords="offset points", va="center", fontsize=7)
            data["device"].append({"label": r["label"], "weights_mib": float(w[i]), "device_kv_mib": float(dev_kv[i]),
                                   "other_mib": float(other[i]), "peak_mem_mib": float(peak[i]),
                                   "kv_theory_mib": float(th[i]) if on_dev[i] else None})
    ax.set_xlabel(f"{peak_name} ({unit})")
    frame(ax, ends, room=1.22)
    if len(axes) > 1:
        host_panel(axes[1], rows, y, host, kv, th, scale, unit, data)
    legend(fig, axes, ncols=3)
    fit(fig, not_ok(rows, ok, axes, y, data))
    return Drawn(fmt.save(fig, path), data)


def host_panel(ax, rows, y, host, kv, th, scale, unit, data) -> None:
    ax.barh(y, np.nan_to_num(host) / scale, color="tab:purple", label="KV cache in host memory (kv_host_mib)")
    has = np.isfinite(host)
    ax.plot((th / scale)[has], y[has], "D", color="k", mfc="white", ms=5,
            label="predicted KV of the whole cache (kv_theory_mib)")
    ends = []
    for i, (_, r) in enumerate(rows.iterrows()):
        if has[i]:
            ends.append(finite_max([host[i], th[i]]) / scale)
            ax.annotate(f"{fmt.sig(host[i] / scale)} of {fmt.sig(kv[i] / scale)} {unit} KV", (ends[-1], y[i]),
                        xytext=(5, 0), textcoords="offset points", va="center", fontsize=7)
            data["host"].append({"label": r["label"], "kv_host_mib": float(host[i]), "kv_cache_mib": float(kv[i]),
                                 "kv_theory_mib": float(th[i])})
    ax.set_xlabel(f"host memory: offloaded KV ({unit})")
    frame(ax, ends, room=1.9)


def cpu_memory(rows: pd.DataFrame, title_text: str, path: Path) -> Drawn:
    """Left: what the model holds (weights + KV cache, counted from tensors; diamond: predicted KV). Right: the
    cell's own peak RSS where rows carry it, else the worker's peak RSS so far, numbered in run order."""
    cell = np.array([facts.cell_rss_mib(r) for r in rows.to_dict("records")], dtype=float)
    own = bool(np.isfinite(cell).any())
    rows, fig, axes, y, ok, _ = setup_figure(rows, 13.0, 2, timing=False, width_ratios=[1.5, 1])
    w, kv, th = (np.where(ok, col(rows, c), np.nan) for c in ("weights_mib", "kv_cache_mib", "kv_theory_mib"))
    cell = np.where(ok, [facts.cell_rss_mib(r) for r in rows.to_dict("records")], np.nan)
    rss = cell if own else np.where(ok, col(rows, "peak_mem_mib"), np.nan)
    rss_name = ("cell peak RSS (this cell's own)" if own else
                "worker's peak RSS so far (its whole life: grows with the cells run before; #k = run order)")
    head = title(fig, f"Memory: {title_text}\nleft: held by the model, weights + KV cache (counted from its "
                 f"tensors); right: {rss_name}; a CPU has no device memory", 13.0)
    ax, left = axes[0], np.zeros(len(rows))
    for v, name, color in ((w, "weights", "0.55"), (kv, "KV cache", "tab:blue")):
        seg = np.clip(np.nan_to_num(v), 0, None)
        ax.barh(y, seg, left=left, color=color, label=name)
        left += seg
    ax.plot((np.nan_to_num(w) + th)[np.isfinite(th)], y[np.isfinite(th)], "kD", ms=5,
            label="predicted KV (kv_theory_mib), drawn after the weights")
    order = run_order(rows)
    data = {"title": head, "unit": "MiB", "panels": ["held", "cell RSS" if own else "process RSS"],
            "rows": [t.get_text() for t in ax.get_yticklabels()], "held": [], "rss": [], "placeholders": []}
    ends, rss_ends = [], []
    for i, (_, r) in enumerate(rows.iterrows()):
        if not ok[i]:
            continue
        ends.append(finite_max([left[i], fmt.num(w[i]) + th[i]], left[i]))
        ax.annotate(f"{fmt.sig(w[i] + kv[i])} MiB (KV {fmt.sig(kv[i])})", (ends[-1], y[i]), xytext=(5, 0),
                    textcoords="offset points", va="center", fontsize=7)
        data["held"].append({"label": r["label"], "weights_mib": float(w[i]), "kv_cache_mib": float(kv[i])})
        if np.isfinite(rss[i]):
            rss_ends.append(rss[i])
            axes[1].annotate(f"{fmt.sig(rss[i])} MiB" + ("" if own else f"  #{order[i]}"), (rss[i], y[i]),
                             xytext=(5, 0), textcoords="offset points", va="center", fontsize=7)
            data["rss"].append({"label": r["label"], "mib": float(rss[i]), "own": own, "order": order[i]})
    axes[1].barh(y, np.nan_to_num(rss), color="tab:orange" if own else "0.75",
                 label="cell peak RSS" if own else "worker's peak RSS so far (not this cell's)")
    ax.set_xlabel("held by the model (MiB)")
    axes[1].set_xlabel(("cell peak RSS" if own else "worker process peak RSS so far") + " (MiB)")
    frame(ax, ends, room=1.45)
    frame(axes[1], rss_ends, room=1.45)
    legend(fig, axes, ncols=4)
    fit(fig, not_ok(rows, ok, axes, y, data))
    return Drawn(fmt.save(fig, path), data)


def run_order(rows: pd.DataFrame) -> list[int]:
    """Each row's place in its run's order of cells (by timestamp): the peak RSS of a later cell includes every
    earlier one's."""
    ts = [(fmt.text(r.get("run_id")), fmt.text(r.get("timestamp")), i) for i, r in enumerate(rows.to_dict("records"))]
    out = [0] * len(ts)
    for run in {t[0] for t in ts}:
        for k, (_, _, i) in enumerate(sorted(t for t in ts if t[0] == run), 1):
            out[i] = k
    return out
