"""Render ``benchmarks/results/*.json`` as Markdown tables for ``docs/benchmarks.md``.

Writes ``docs/benchmarks_tables.md`` with one snippet section per results file,
``<!-- --8<-- [start:NAME] -->`` ... ``[end:NAME]``, that ``docs/benchmarks.md`` includes
with ``pymdownx.snippets`` (``--8<-- "benchmarks_tables.md:NAME"``). The sections
``solvers``, ``jax``, ``sensitivity`` and ``latency`` always exist (saying that the benchmark has not
been run yet when its JSON is missing); any other results file goes into ``others``.

Each results file is ``{"benchmark", "meta", "settings", "records": [...], "goals": [...]}``
as written by ``benchmarks/_common.py:write_json``. Records are rendered generically:
short text columns identify a row (problem, solver, ...); numeric columns that are the
same for every row of a problem (tolerances, sizes) go into a per-problem table, and the
others, the measurements, into the main table. ``solvers``, ``jax`` and ``latency`` have
a fixed column choice matching ``benchmarks/README.md``.

Run from anywhere (``mkdocs build`` runs it as a hook, before every build)::

    python docs/scripts/render_benchmarks.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1]
RESULTS = DOCS.parent / "benchmarks" / "results"
OUTPUT = DOCS / "benchmarks_tables.md"
KNOWN = ("solvers", "jax", "sensitivity", "latency")
MAX_TEXT = 40  # longer strings (messages, notes) are not table columns
MAX_MEASURED = 10  # numeric columns in a generic main table

# (column title, key path) for solvers.json, as in benchmarks/README.md
SOLVERS_COLUMNS = [
    ("problem", "problem"), ("solver", "solver"), ("time", "time_median_s"),
    ("min", "time.min_s"), ("runs", "time.n"), ("vs RK45", "speedup_vs_rk45"),
    ("nfev", "nfev"), ("steps", "naccept"), ("rej", "nreject"), ("max err", "max_abs_err"),
    ("f call", "f_call_s"), ("ovh/step (us)", "overhead_us_per_step"),
]  # fmt: skip

# (column title, key path) for latency.json (time to first result in a fresh process)
LATENCY_COLUMNS = [
    ("case", "case"), ("variant", "variant"), ("mode", "mode"), ("import", "import_s"),
    ("problems import", "import_problems_s"), ("first result", "first_result_s"), ("min", "first_result_min_s"), ("runs", "runs"),
    ("/hand", "vs_hand"), ("rel diff vs hand", "rel_diff_vs_hand"),
    ("diffrax import", "import_diffrax_s"), ("cache as expected", "cache_as_expected"),
    ("load (1 min)", "load_1min"),
]  # fmt: skip
# (column title, key path) for jax.json: per solve, per step and first call vs hand-written
JAX_COLUMNS = [
    ("problem", "problem"), ("solver", "solver"), ("time", "time_median_s"), ("min", "time.min_s"),
    ("runs", "time.n"), ("per step", "time_per_step_s"), ("/hand", "ratio_vs_handwritten"),
    ("per step /hand", "per_step_ratio_vs_handwritten"), ("1st call", "first_call_median_s"),
    ("1st call /hand", "first_call_ratio_vs_handwritten"), ("steps", "naccept"), ("rej", "nreject"),
    ("max diff vs hand", "max_abs_diff_vs_handwritten"),
]  # fmt: skip
FIXED_COLUMNS = {"solvers": SOLVERS_COLUMNS, "latency": LATENCY_COLUMNS, "jax": JAX_COLUMNS}


def fmt_seconds(x: float) -> str:
    """``1.23 ms`` style."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if abs(x) >= scale or unit == "ns":
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} s"


def fmt_value(value: Any, key: str = "") -> str:
    """A table cell: times with units, floats to 3-4 digits, booleans as yes/no."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if key.endswith("_s") or key.endswith(".s"):
            return fmt_seconds(value)
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.2e}"
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, int) for v in value):
            return "×".join(str(v) for v in value)  # a shape
        return str(value)
    return str(value).replace("|", "\\|")


def lookup(record: dict, path: str) -> Any:
    """``record["time"]["min_s"]`` for ``"time.min_s"``; None when absent."""
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def flatten(record: dict) -> dict:
    """Scalars of ``record`` and of its nested dicts (one level: ``"time.min_s"``)."""
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                if isinstance(inner, (int, float, str, bool)) or inner is None:
                    flat[f"{key}.{sub}"] = inner
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[key] = value
        elif isinstance(value, list) and len(value) <= 4 and all(
            isinstance(v, int) for v in value
        ):
            flat[key] = value  # a shape
    return flat


def table(header: list[str], rows: list[list[str]], numeric: list[bool]) -> str:
    align = ["--:" if right else ":--" for right in numeric]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_label(value: Any) -> bool:
    """Short text or a flag: a column that identifies or qualifies a row."""
    return isinstance(value, bool) or (isinstance(value, str) and len(value) <= MAX_TEXT)


def generic_tables(records: list[dict]) -> str:
    """Main table (identifiers + measurements) and a per-problem table (case constants).

    Numeric columns that hold one value per problem (sizes, tolerances) go into the
    per-problem table when problems have several rows; a nested ``time.median_s`` that
    repeats a top-level ``time_median_s`` is dropped.
    """
    flat = [flatten(r) for r in records]
    keys: list[str] = []
    for row in flat:
        keys += [k for k in row if k not in keys]
    present = lambda k: [r[k] for r in flat if r.get(k) is not None]  # noqa: E731
    labels = [k for k in keys if all(is_label(v) for v in present(k)) and present(k)
              and not all(is_number(v) for v in present(k))]
    numbers = [k for k in keys if k not in labels and present(k)
               and all(is_number(v) for v in present(k))]
    shapes = [k for k in keys if any(isinstance(r.get(k), list) for r in flat)]
    text = [k for k in labels if any(isinstance(v, str) for v in present(k))]
    group = "problem" if "problem" in text else (text[0] if text else None)
    groups = [r.get(group) for r in flat] if group else []
    split = bool(group) and len(set(map(str, groups))) < len(flat)

    def constant_per_group(key: str) -> bool:
        seen: dict[str, Any] = {}
        for g, r in zip(groups, flat):
            if str(g) in seen and seen[str(g)] != r.get(key):
                return False
            seen[str(g)] = r.get(key)
        return True

    per_case = [k for k in numbers + shapes if constant_per_group(k)] if split else []
    column = lambda k: [r.get(k) for r in flat]  # noqa: E731

    def repeats_another(key: str) -> bool:
        if "." not in key:
            return False
        tail = key.rsplit(".", 1)[1]
        return any(k != key and tail in k and column(k) == column(key) for k in numbers)

    measured = [k for k in numbers if k not in per_case and not repeats_another(k)]
    measured = measured[:MAX_MEASURED]
    if split:
        identifiers = [k for k in labels if k == group or not constant_per_group(k)]
    else:
        identifiers = labels + [k for k in shapes if k not in labels]
    out = []
    if per_case:
        cases: dict[str, dict] = {}
        for g, r in zip(groups, flat):
            cases.setdefault(str(g), r)
        out.append(table(
            [group] + per_case,
            [[fmt_value(g)] + [fmt_value(r.get(k), k) for k in per_case]
             for g, r in cases.items()],
            [False] + [True] * len(per_case),
        ))
    columns = identifiers + measured
    out.append(table(
        columns,
        [[fmt_value(r.get(k), k) for k in columns] for r in flat],
        [k in measured for k in columns],
    ))
    return "\n\n".join(out)


def fixed_table(records: list[dict], columns: list[tuple[str, str]]) -> str:
    """The ``(title, key path)`` columns of ``records`` that any record has."""
    columns = [(title, path) for title, path in columns
               if any(lookup(r, path) is not None for r in records)]
    rows = [[fmt_value(lookup(r, path), path) for _, path in columns] for r in records]
    numeric = [any(is_number(lookup(r, path)) for r in records) for _, path in columns]
    return table([title for title, _ in columns], rows, numeric)


def goals_table(goals: list[dict]) -> str:
    rows = [[fmt_value(g.get("goal")), fmt_value(g.get("value")),
             "**pass**" if g.get("pass") else "**FAIL**"] for g in goals]
    return table(["goal", "measured", "result"], rows, [False, False, False])


def describe_run(doc: dict) -> str:
    """One paragraph: when, where, versions, load and the main settings."""
    meta, settings = doc.get("meta") or {}, doc.get("settings") or {}
    parts = []
    if meta.get("date"):
        parts.append(f"Run {meta['date'].replace('T', ' ')[:16]} UTC")
    cpus = meta.get("cpu_count") and f"{meta['cpu_count']} CPUs"
    machine = ", ".join(str(x) for x in (meta.get("machine"), cpus) if x)
    if machine:
        parts.append(f"on {machine}")
    versions = dict(meta.get("versions") or {})
    if meta.get("python"):
        versions = {"Python": meta["python"], **versions}
    if versions:
        parts.append("with " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    sentence = " ".join(parts) + "." if parts else ""
    load = [doc.get("load_start"), doc.get("load_end")]
    if all(isinstance(x, list) and x for x in load):
        sentence += f" Load average (1 min) {load[0][0]} at the start, {load[1][0]} at the end."
    simple = {k: v for k, v in settings.items() if isinstance(v, (int, float, str, bool))}
    if simple:
        sentence += " Settings: " + ", ".join(f"`{k}={v}`" for k, v in simple.items()) + "."
    return sentence.strip()


STANDARD_KEYS = {"benchmark", "meta", "settings", "records", "goals", "load_start", "load_end"}
MAX_NOTE = 300  # longest string shown in a key/value table


def is_record_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def extra_tables(name: str, value: Any) -> str | None:
    """Markdown for a top-level entry besides the records (``problems``, ``crossover``...).

    A list of dicts becomes a generic table; a dict becomes a key/value table of its
    scalars (nested dicts flattened one level) followed by tables of its record lists.
    """
    if is_record_list(value):
        return f"**`{name}`**\n\n" + generic_tables(value)
    if not isinstance(value, dict):
        return None
    pairs, lists = [], []
    for key, item in value.items():
        if is_record_list(item):
            lists.append(f"**`{name}.{key}`**\n\n" + generic_tables(item))
        elif isinstance(item, dict):
            pairs += [(f"{key}.{sub}", inner) for sub, inner in item.items()
                      if isinstance(inner, (int, float, str, bool)) or inner is None]
        elif isinstance(item, (int, float, str, bool)):
            pairs.append((key, item))
    pairs = [(k, v) for k, v in pairs if not (isinstance(v, str) and len(v) > MAX_NOTE)]
    out = []
    if pairs:
        out.append(f"**`{name}`**\n\n" + table(
            ["entry", "value"], [[f"`{k}`", fmt_value(v, k)] for k, v in pairs], [False, True]))
    return "\n\n".join(out + lists) or None


def script_for(name: str) -> str | None:
    script = DOCS.parent / "benchmarks" / f"bench_{name}.py"
    return f"benchmarks/{script.name}" if script.exists() else None


def missing(name: str) -> str:
    script = script_for(name)
    how = f" Run `.venv/bin/python {script}` to produce it." if script else ""
    return (f"!!! note \"Not run yet\"\n    `benchmarks/results/{name}.json` does not exist: "
            f"this benchmark has not been run yet.{how}")


def render_file(path: Path) -> str:
    """The Markdown for one results file (a note instead if it cannot be read)."""
    try:
        doc = json.loads(path.read_text())
        records = doc["records"]
        if not isinstance(records, list):
            raise TypeError("'records' is not a list")
    except (OSError, ValueError, KeyError, TypeError) as err:
        return (f"!!! warning \"Unreadable results\"\n    `benchmarks/results/{path.name}` "
                f"could not be read ({type(err).__name__}: {err}).")
    name = path.stem
    out = [f"*Source: `benchmarks/results/{path.name}`.* {describe_run(doc)}".rstrip()]
    if not records:
        out.append("The file holds no records.")
    else:
        key = FIXED_COLUMNS.get(name) and FIXED_COLUMNS[name][1][1]  # the fixed columns' second key
        fixed = key is not None and all(key in r for r in records)
        out.append(fixed_table(records, FIXED_COLUMNS[name]) if fixed else generic_tables(records))
    scalars = {}
    for key, value in doc.items():
        if key in STANDARD_KEYS:
            continue
        if isinstance(value, (int, float, str, bool)):
            scalars[key] = value
        else:
            out.append(extra_tables(key, value) or "")
    if scalars:
        out.append(extra_tables("other entries", scalars) or "")
    out = [part for part in out if part]
    goals = doc.get("goals")
    if isinstance(goals, list) and goals and all(isinstance(g, dict) for g in goals):
        out.append("Goals, as checked by the script:\n\n" + goals_table(goals))
    return "\n\n".join(out)


def section(name: str, body: str) -> str:
    return f"<!-- --8<-- [start:{name}] -->\n{body}\n<!-- --8<-- [end:{name}] -->\n"


def render() -> str:
    files = {p.stem: p for p in sorted(RESULTS.glob("*.json"))} if RESULTS.is_dir() else {}
    parts = ["<!-- Generated by docs/scripts/render_benchmarks.py from benchmarks/results/*.json; "
             "do not edit. -->\n"]
    for name in KNOWN:
        parts.append(section(name, render_file(files[name]) if name in files else missing(name)))
    others = [f"### `{name}`\n\n{render_file(path)}"
              for name, path in files.items() if name not in KNOWN]
    parts.append(section("others", "\n\n".join(others) if others else "No other results files."))
    return "\n".join(parts)


def write(output: Path = OUTPUT) -> bool:
    """Write the tables; only when they changed (so ``mkdocs serve`` does not loop)."""
    text = render()
    if output.exists() and output.read_text() == text:
        return False
    output.write_text(text)
    return True


def on_pre_build(config) -> None:  # the mkdocs hook (mkdocs.yml: hooks)
    write()


if __name__ == "__main__":
    print(f"{'wrote' if write() else 'unchanged'} {OUTPUT}")
