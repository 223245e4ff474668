"""The copies generated from the option declarations: the docs reference and pyproject's table.

``./run.sh reference`` (``python -m fl_sim.reference``) rewrites both;
``tests/test_options.py`` fails when either is stale, so a new or changed option is
declared in one place and its copies follow.
"""

from __future__ import annotations

import re

from fl_core.federation import TASK_DEFAULTED
from fl_core.options import Spec, allowed_values
from fl_sim.options import PROJECT_ROOT, PYPROJECT, option_groups, toml_value
from strategies import registry as strategy_registry
from tasks import registry as task_registry

REFERENCE = PROJECT_ROOT / "docs" / "configuration.md"
TABLE_HEADER = "[tool.flwr.app.config]"


def _default_text(spec: Spec) -> str:
    if spec.key in TASK_DEFAULTED:
        return "task's: " + ", ".join(f"{name} {task_registry.DEFAULTS[name][spec.key]}"
                                      for name in task_registry.names())
    if spec.default == "":
        return "(empty)"
    return f"`{toml_value(spec.default)}`"


def _readers(kind: type) -> str:
    tasks = [name for name, groups in task_registry.GROUPS.items() if kind in groups]
    strategies = [name for name, groups in strategy_registry.GROUPS.items() if kind in groups]
    used = [f"--task {', '.join(tasks)}"] if tasks else []
    used += [f"--strategy {', '.join(strategies)}"] if strategies else []
    return f" Read by {'; '.join(used)}." if used else ""


def configuration_markdown() -> str:
    """``docs/configuration.md``: every option, grouped as declared."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from the option declarations by `./run.sh reference`; do not edit by hand.",
        "Every option is a CLI flag of `./run.sh run` and `./run.sh deploy`, and a kebab-case",
        "key of `[tool.flwr.app.config]` in `pyproject.toml` (what `flwr run .` reads; give",
        "`flwr run . --run-config 'key=value'` to change one there). Options whose default is",
        "the task's take the selected task's own value when left at 0.",
        "",
    ]
    for kind in option_groups():
        doc = (kind.__doc__ or "").strip().splitlines()[0]
        lines += [f"## {kind.title}", "", f"{doc}{_readers(kind)}", "",
                  "| flag | key | default | meaning |", "|---|---|---|---|"]
        for spec in kind.specs():
            flag = "(set by the CLI)" if spec.hidden else f"`{spec.flag}`"
            meaning = spec.help
            allowed = allowed_values(spec)
            if allowed:
                meaning += f"; one of {', '.join(f'`{a}`' for a in allowed)}"
            if spec.kind is bool and not spec.hidden:
                flag += f" / `--no-{spec.flag[2:]}`"
            lines.append(f"| {flag} | `{spec.key}` | {_default_text(spec)} | "
                         f"{meaning.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def pyproject_table() -> str:
    """The ``[tool.flwr.app.config]`` block: every key and its declared default."""
    lines = [TABLE_HEADER,
             "# Generated from the option declarations by `./run.sh reference`; the flags and",
             "# docs/configuration.md come from the same declarations. 0 for rounds, local",
             "# epochs, batch size and lr means the task's own default."]
    for kind in option_groups():
        lines.append(f"# --- {kind.title} ---")
        lines += [f"{spec.key} = {toml_value(spec.default)}" for spec in kind.specs()]
    return "\n".join(lines) + "\n"


def updated_pyproject(text: str) -> str:
    """``text`` (pyproject.toml) with its app-config table replaced by :func:`pyproject_table`."""
    pattern = re.compile(re.escape(TABLE_HEADER) + r"\n.*?\n(?=\n|\[|#{5,}|\Z)", re.S)
    if not pattern.search(text):
        raise ValueError(f"{PYPROJECT} has no {TABLE_HEADER} table")
    return pattern.sub(lambda _: pyproject_table(), text, count=1)


def main() -> None:
    """Rewrite docs/configuration.md and pyproject's app-config table."""
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(configuration_markdown(), encoding="utf-8")
    PYPROJECT.write_text(updated_pyproject(PYPROJECT.read_text()), encoding="utf-8")
    print(f"wrote {REFERENCE.relative_to(PROJECT_ROOT)} and the {TABLE_HEADER} table of "
          f"{PYPROJECT.name}")


if __name__ == "__main__":
    main()
