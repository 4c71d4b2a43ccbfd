"""The text of a deploy plan (``swarmlet deploy --dry-run``), like a Terraform plan.

Owns only formatting: what to create (with a one-line summary), what to update
(each changed field, old -> new, an env value only as changed, and whether tasks
roll or only rescale), what to remove, what is unchanged, kept or skipped
(profiles), then the warnings (printed here only, so each appears once) and a
count line.
"""

from __future__ import annotations

from typing import List

from .plan import DeployPlan, ServiceChange, change_text, summary


def render_plan(plan: DeployPlan) -> str:
    lines: List[str] = [f"Stack {plan.stack!r}" + (f" from {plan.file}" if plan.file else "")]
    if plan.note:
        lines.append(f"({plan.note})")
    lines.append("")
    for change in plan.create:
        lines.append(f"  + create     {change.name}: " + "; ".join(summary(change.new).values()))
    for change in plan.update:
        how = "rolling update" if change.rollout else "settings only, no new containers"
        lines.append(f"  ~ update     {change.name} ({how})")
        lines.extend(_field_lines(change))
    for change in plan.remove:
        lines.append(f"  - remove     {change.name}")
    for change in plan.unchanged:
        lines.append(f"  = unchanged  {change.name}")
    for change in plan.kept:
        lines.append(f"  ! keep       {change.name} (not in the file; deploy with --prune to remove)")
    for name, profiles in plan.skipped:
        lines.append(f"  . skip       {name} (profile {', '.join(profiles)} not active; "
                     f"--profile {profiles[0]} deploys it)")
    if not (plan.create or plan.update or plan.remove or plan.unchanged or plan.kept or plan.skipped):
        lines.append("  (no services)")
    if plan.warnings:
        lines += ["", f"Warnings ({len(plan.warnings)}):"]
        lines.extend(f"  {w}" for w in plan.warnings)
    lines += ["", f"Plan: {len(plan.create)} to create, {len(plan.update)} to update, "
                  f"{len(plan.remove)} to remove, {len(plan.unchanged)} unchanged."]
    if not plan.has_changes:
        lines.append("Nothing to do.")
    return "\n".join(lines)


def _field_lines(change: ServiceChange) -> List[str]:
    return [f"      {change_text(c)}" for c in change.changes]   # env values never shown
